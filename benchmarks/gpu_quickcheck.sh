#!/usr/bin/env bash
# Short GPU checks of the benchmark tooling, each under 8 minutes on one H100-class GPU; results go to OUT.
#
#   benchmarks/gpu_quickcheck.sh throughput OUT
#       `timm-posembed bench` for every model beside its timm baseline: bf16 autocast + channels_last, then the same
#       with torch.compile for the super-token and clustering models (compiling takes most of the time), then fp32.
#       Each table is rewritten after every model, so a run stopped early keeps what it measured.
#   benchmarks/gpu_quickcheck.sh fashion-mnist OUT
#       The Fashion-MNIST sanity run, longer than on CPU: all 70k images, 64 px, 4 epochs, bf16, for the
#       papers' models and their baselines, through timm's train.py. Needs TIMM_REPO (a folder with timm's
#       train.py) and FASHION_MNIST_IDX (the folder of the four idx .gz files; default: Debian's).
#
# timm_posembed must be importable (installed, or PYTHONPATH=<this checkout>); it is called as a module so that
# no console script is needed.
#
# Markdown and JSON results, and each run's summary.csv / args.yaml, are written under OUT.
set -euo pipefail

what=${1:?usage: $0 throughput|fashion-mnist OUT}
out=${2:?usage: $0 throughput|fashion-mnist OUT}
here=$(cd "$(dirname "$0")" && pwd)
timm_posembed="python -m timm_posembed.cli"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" || true

# One model per paper at its paper size, and its baseline (added by the tools).
paper_models=(vit_tiny_cope vit_small_supertoken_conv vit_small_conv_embed coat_lite_clustering)

case "$what" in
  throughput)
    $timm_posembed bench --device cuda -b 256 --precision bf16 --channels-last \
      --json "$out/bench_bf16_cl.json" --markdown "$out/bench_bf16_cl.md" || true
    $timm_posembed bench --device cuda -b 256 --precision bf16 --channels-last --compile \
      --models vit_small_supertoken_conv coat_lite_clustering \
      --json "$out/bench_bf16_cl_compile.json" --markdown "$out/bench_bf16_cl_compile.md" || true
    $timm_posembed bench --device cuda -b 256 --precision fp32 \
      --json "$out/bench_fp32.json" --markdown "$out/bench_fp32.md"
    ;;
  fashion-mnist)
    data=${TMPDIR:-/tmp}/fashion_mnist
    runs=${TMPDIR:-/tmp}/fashion_mnist_runs
    $timm_posembed prepare fashion-mnist "$data" --src "${FASHION_MNIST_IDX:-/usr/share/datasets/fashion-mnist}"
    for model in "${paper_models[@]}"; do  # one model (and its baseline) at a time, results copied after each
      python "$here/fashion_mnist_sanity.py" --data-dir "$data" --output "$runs" --img-size 64 --epochs 4 \
        --models "$model" -- --device cuda --amp --amp-dtype bfloat16 --batch-size 256 --workers 8 --pin-mem \
        --checkpoint-hist 1 2>&1 | tee -a "$out/fashion_mnist_gpu.log" | grep '^|' >> "$out/fashion_mnist_gpu.md" || true
      for run in "$runs"/*/; do  # the curves and arguments, not the checkpoints
        mkdir -p "$out/runs/$(basename "$run")"
        cp "$run/summary.csv" "$run/args.yaml" "$out/runs/$(basename "$run")/" 2>/dev/null || true
      done
    done
    $timm_posembed report "$out/runs" > "$out/fashion_mnist_gpu_all.md"
    ;;
  *)
    echo "unknown check $what; use throughput or fashion-mnist" >&2
    exit 2
    ;;
esac
