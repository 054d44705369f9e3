#!/usr/bin/env bash
# Short GPU checks of the benchmark tooling, each under 8 minutes on one H100-class GPU; results go to OUT.
#
#   benchmarks/gpu_quickcheck.sh throughput OUT
#       `timm-posembed bench` for every model beside its timm baseline: bf16 autocast + channels_last, then the same
#       with torch.compile for the super-token and clustering models (compiling takes most of the time), then fp32.
#       Each table is rewritten after every model, so a run stopped early keeps what it measured.
#   benchmarks/gpu_quickcheck.sh fashion-mnist OUT
#       The Fashion-MNIST sanity run, longer than on CPU: all 70k images, 64 px, 5 epochs, bf16, for the seed
#       papers' models and their baselines, through timm's train.py. Needs TIMM_REPO (a folder with timm's
#       train.py) and FASHION_MNIST_IDX (the folder of the four idx .gz files; default: Debian's).
#
# Markdown and JSON results, and each run's summary.csv / args.yaml, are written under OUT.
set -euo pipefail

what=${1:?usage: $0 throughput|fashion-mnist OUT}
out=${2:?usage: $0 throughput|fashion-mnist OUT}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" || true

# One model per seed paper at its paper size, and its baseline (added by the tools).
paper_models=(vit_tiny_cope vit_small_supertoken_conv vit_small_conv_embed coat_lite_clustering)

case "$what" in
  throughput)
    timm-posembed bench --device cuda -b 256 --precision bf16 --channels-last \
      --json "$out/bench_bf16_cl.json" --markdown "$out/bench_bf16_cl.md" || true
    timm-posembed bench --device cuda -b 256 --precision bf16 --channels-last --compile \
      --models vit_small_supertoken_conv coat_lite_clustering \
      --json "$out/bench_bf16_cl_compile.json" --markdown "$out/bench_bf16_cl_compile.md" || true
    timm-posembed bench --device cuda -b 256 --precision fp32 \
      --json "$out/bench_fp32.json" --markdown "$out/bench_fp32.md"
    ;;
  fashion-mnist)
    data=${TMPDIR:-/tmp}/fashion_mnist
    runs=${TMPDIR:-/tmp}/fashion_mnist_runs
    timm-posembed prepare fashion-mnist "$data" --src "${FASHION_MNIST_IDX:-/usr/share/datasets/fashion-mnist}"
    python "$here/fashion_mnist_sanity.py" --data-dir "$data" --output "$runs" --img-size 64 --epochs 5 \
      --models "${paper_models[@]}" vit_tiny_supertoken_conv \
      -- --device cuda --amp --amp-dtype bfloat16 --batch-size 256 --workers 8 --pin-mem --checkpoint-hist 1 \
      | tee "$out/fashion_mnist_gpu.log" | grep '^|' > "$out/fashion_mnist_gpu.md"
    for run in "$runs"/*/; do  # the curves and arguments, not the checkpoints
      mkdir -p "$out/runs/$(basename "$run")"
      cp "$run/summary.csv" "$run/args.yaml" "$out/runs/$(basename "$run")/"
    done
    ;;
  *)
    echo "unknown check $what; use throughput or fashion-mnist" >&2
    exit 2
    ;;
esac
