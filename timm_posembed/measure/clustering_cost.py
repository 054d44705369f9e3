""" The cost of clustering CoaT-Lite against timm's CoaT-Lite, both attention modes, 224 and 384 px.

For each case (a model + clustering settings + input size) it measures, in one process:
  * img/s for inference (eval, inference_mode) and for a training step (forward + backward);
  * memory: on CUDA the peak allocated memory of each; on CPU, which has no allocator statistics, the bytes of
    the tensors saved for backward by a training step (activation memory, deduplicated by storage);
  * GMACs per image: the model's matmuls / convs counted by torch's FlopCounterMode with the clustering modules
    left out, plus the clustering's own multiply-adds as the layer states them (``AdaptiveQueryClustering.macs``:
    the hash projections and key, and the nearest-prototype search under a capacity; sort and scatter are not
    multiply-adds);
  * the clusters per stage (mean over blocks, images, heads) and the tokens per stage, and the GMACs an ACT with
    data-dependent shapes would execute (prototype attention on exactly the clusters found instead of the static
    slots this implementation computes).

Cluster counts depend on the weights: without ``--pretrained`` (timm's CoaT-Lite ImageNet weights from the Hub)
they are those of a randomly initialised model, and only the timings and GMACs are representative.

Examples:
    OMP_NUM_THREADS=1 python benchmarks/bench_coat_clustering.py --device cpu --preset cpu     # ~9 min
    # GPU, every variant, one command per resolution (each under 10 minutes):
    python benchmarks/bench_coat_clustering.py --device cuda --preset full --sizes 224 --batch-size 64 \
        --json gpu224.json
    python benchmarks/bench_coat_clustering.py --device cuda --preset full --sizes 384 --batch-size 32 \
        --json gpu384.json
    python benchmarks/bench_coat_clustering.py --table-from gpu224.json     # reprint a saved table
"""
import argparse
import datetime
import json
import math
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
import timm
from torch.utils.flop_counter import FlopCounterMode

from .. import models  # noqa: F401  (registers the models)
from ..layers import ClusteredFactorAttnConvRelPosEnc
from .bench import autocast_context, synchronize, time_round_robin
from .environment import describe_device

SIZES = ('tiny', 'mini', 'small')

# (label, clustering kwargs); the label is what the tables show.
VARIANTS: Dict[str, Dict[str, Any]] = {
    'fact L16': dict(cluster_attn='factorized'),
    'fact L4': dict(cluster_attn='factorized', cluster_num_rounds=4),
    'fact L4 stage1': dict(cluster_attn='factorized', cluster_num_rounds=4, cluster_stages=(0,)),
    'fact L4 cap.1': dict(cluster_attn='factorized', cluster_num_rounds=4, cluster_capacity=0.1),
    'soft full': dict(cluster_attn='softmax', cluster_singleton=True),
    'soft L16': dict(cluster_attn='softmax'),
    'soft L4 cap.1': dict(cluster_attn='softmax', cluster_num_rounds=4, cluster_capacity=0.1),
    'soft L4 cap.1 stage1': dict(cluster_attn='softmax', cluster_num_rounds=4, cluster_capacity=0.1,
                                 cluster_stages=(0,)),
}

# Which (size, variant, img_size) cases each preset runs; 'timm' is timm's coat_lite_<size>.
PRESETS: Dict[str, List[Tuple[str, str, int]]] = {
    # ~9 min on one (shared) CPU core with the CPU defaults (batch 1, 3 rounds of 1 inference + 1 training step)
    'cpu': (
        [(s, v, 224) for s in SIZES for v in ('timm', 'fact L16', 'soft L16')]
        + [('tiny', v, 224) for v in ('fact L4', 'fact L4 stage1', 'soft full', 'soft L4 cap.1')]
        + [('tiny', v, 384) for v in ('timm', 'fact L16', 'fact L4 stage1', 'soft full', 'soft L4 cap.1')]
    ),
    'full': [(s, v, r) for r in (224, 384) for s in SIZES for v in ['timm'] + list(VARIANTS)],
}


def _input(batch: int, img_size: int, kind: str, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if kind == 'noise':
        x = torch.randn(batch, 3, img_size, img_size, generator=gen)
    else:
        # smooth random field: natural images are mostly low-frequency
        x = torch.randn(batch, 3, 8, 8, generator=gen)
        x = F.interpolate(x, size=(img_size, img_size), mode='bicubic', align_corners=False)
        x = x + 0.1 * torch.randn(batch, 3, img_size, img_size, generator=gen)
    return x.to(device)


def _clustered(model: torch.nn.Module) -> List[Tuple[int, ClusteredFactorAttnConvRelPosEnc]]:
    out = []
    for stage in range(4):
        for blk in getattr(model, f'serial_blocks{stage + 1}', None) or []:
            if isinstance(blk.factoratt_crpe, ClusteredFactorAttnConvRelPosEnc):
                out.append((stage, blk.factoratt_crpe))
    return out


def _stage_tokens(model: torch.nn.Module) -> List[int]:
    return [1 + math.prod(getattr(model, f'patch_embed{s + 1}').grid_size) for s in range(4)]


def count_gmacs(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, float]:
    """GMACs per image: model without clustering (FlopCounterMode), clustering by hand, ACT-ideal."""
    fused = {}
    for _, attn in _clustered(model):
        fused[attn] = attn.fused_attn
        attn.fused_attn = False  # FlopCounterMode has no formula for the CPU flash kernel; count the matmuls
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x[:1])
    for attn, f in fused.items():
        attn.fused_attn = f
    counts = counter.get_flop_counts()
    total = sum(counts.get('Global', {}).values())
    in_clustering = sum(
        sum(ops.values()) for name, ops in counts.items() if name.endswith('.clustering'))
    model_macs = (total - in_clustering) / 2

    tokens = _stage_tokens(model)
    hash_macs = 0.0
    ideal_saving = 0.0
    cluster_counts = model.cluster_counts() if hasattr(model, 'cluster_counts') else {}
    per_stage_idx = {s: 0 for s in range(4)}
    for stage, attn in _clustered(model):
        c = attn.clustering
        n = tokens[stage]
        heads, ch = attn.num_heads, c.head_dim
        slots = c.num_slots(n)
        hash_macs += heads * c.macs(n)
        if stage in cluster_counts:
            clusters = cluster_counts[stage][per_stage_idx[stage]].float().mean().item()
            per_stage_idx[stage] += 1
            per_row = n * ch * 2 if attn.softmax_attn else ch * ch  # MACs of one prototype row, per head
            ideal_saving += heads * max(slots - clusters, 0.0) * per_row
    return dict(
        gmacs_model=model_macs / 1e9,
        gmacs_clustering=hash_macs / 1e9,
        gmacs_total=(model_macs + hash_macs) / 1e9,
        gmacs_act_ideal=(model_macs + hash_macs - ideal_saving) / 1e9,
    )


def saved_activation_mib(model: torch.nn.Module, x: torch.Tensor) -> float:
    """MiB of the tensors a training step saves for backward (one count per storage)."""
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values()) / 2 ** 20


class Case:
    """One benchmark case: its model, input and the step functions that are timed."""

    def __init__(self, size: str, variant: str, img_size: int, args: argparse.Namespace, device: torch.device):
        if variant == 'timm':
            name, kwargs = f'coat_lite_{size}', {}
        else:
            name, kwargs = f'coat_lite_clustering_{size}', dict(VARIANTS[variant])
        self.device = device
        self.model = timm.create_model(name, pretrained=args.pretrained, img_size=img_size, **kwargs).to(device)
        self.x = _input(args.batch_size, img_size, args.input, device)
        self.precision = {'bfloat16': 'bf16', 'float16': 'fp16'}.get(args.amp, 'fp32')
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-6)
        self.row: Dict[str, Any] = dict(
            model=name, variant=variant, img_size=img_size, batch=args.batch_size,
            params_m=sum(p.numel() for p in self.model.parameters()) / 1e6)

    def _amp(self):
        return autocast_context(self.device, self.precision)

    def infer(self) -> None:
        self.model.eval()
        with torch.inference_mode(), self._amp():
            self.model(self.x)

    def train(self) -> None:
        self.model.train()
        with self._amp():
            loss = self.model(self.x).float().logsumexp(-1).mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def measure_static(self) -> None:
        """Cluster counts, GMACs and memory: everything but the timings (also warms the case up)."""
        row, model, cuda = self.row, self.model, self.device.type == 'cuda'
        self.infer()  # records the cluster counts of this input
        clusters = model.cluster_counts() if hasattr(model, 'cluster_counts') else {}
        row['tokens'] = _stage_tokens(model)
        row['clusters'] = [round(clusters[s].float().mean().item(), 1) if s in clusters else None for s in range(4)]
        model.eval()
        row.update(count_gmacs(model, self.x))
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.infer()
        if cuda:
            synchronize(self.device)
            row['infer_peak_mib'] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
            torch.cuda.reset_peak_memory_stats(self.device)
        self.train()
        if cuda:
            synchronize(self.device)
            row['train_peak_mib'] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:
            model.train()
            with self._amp():
                row['train_saved_mib'] = saved_activation_mib(model, self.x)

    def finish(self, infer_s: float, train_s: float) -> Dict[str, Any]:
        row = self.row
        row['infer_s'], row['train_s'] = infer_s, train_s
        row['infer_img_s'] = row['batch'] / infer_s
        row['train_img_s'] = row['batch'] / train_s
        return row


def _fmt(rows: List[Dict[str, Any]], device: torch.device) -> str:
    mem_cols = ['infer_peak_mib', 'train_peak_mib'] if device.type == 'cuda' else ['train_saved_mib']
    mem_names = {'infer_peak_mib': 'infer peak MiB', 'train_peak_mib': 'train peak MiB',
                 'train_saved_mib': 'train saved MiB'}
    head = ['model', 'variant', 'px', 'GMACs model', 'GMACs clustering', 'GMACs ACT-ideal', 'infer img/s',
            'train img/s'] + [mem_names[c] for c in mem_cols] + ['clusters / tokens per stage']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    base: Dict[Tuple[str, int], Dict[str, Any]] = {
        (r['model'].replace('coat_lite_', ''), r['img_size']): r for r in rows if r.get('variant') == 'timm'}
    for r in rows:
        if 'error' in r:
            lines.append(f"| {r['model']} | {r['variant']} | {r['img_size']} | failed: {r['error']} |")
            continue
        size = r['model'].replace('coat_lite_clustering_', '').replace('coat_lite_', '')
        b = base.get((size, r['img_size']))

        def rel(key: str) -> str:
            v = r[key]
            if b is None or r is b:
                return f'{v:.3g}'
            return f'{v:.3g} ({v / b[key]:.2f}x)'

        cl = ' · '.join(f'{c:g}/{t}' if c is not None else f'-/{t}' for c, t in zip(r['clusters'], r['tokens']))
        cells = [r['model'], r['variant'], str(r['img_size']), f"{r['gmacs_model']:.3f}",
                 f"{r['gmacs_clustering']:.4f}", f"{r['gmacs_act_ideal']:.3f}", rel('infer_img_s'), rel('train_img_s')]
        cells += [f'{r[c]:.0f}' for c in mem_cols]
        cells.append(cl if r['variant'] != 'timm' else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--preset', default='cpu', choices=sorted(PRESETS))
    parser.add_argument('--sizes', nargs='*', type=int, default=None, help='only these input sizes')
    parser.add_argument('--models', nargs='*', default=None, choices=SIZES, help='only these model sizes')
    parser.add_argument('--variants', nargs='*', default=None, help="only these variants ('timm' + VARIANTS keys)")
    parser.add_argument('--batch-size', type=int, default=None, help='default: 1 on CPU, 32 on CUDA')
    parser.add_argument('--rounds', type=int, default=3, help='timing rounds over all cases (median reported)')
    parser.add_argument('--iters', type=int, default=None,
                        help='inference iterations per round (default: 1 CPU, 10 CUDA)')
    parser.add_argument('--train-iters', type=int, default=None,
                        help='training steps per round (default: 1 CPU, 5 CUDA)')
    parser.add_argument('--amp', default=None, choices=['bfloat16', 'float16'], help='autocast dtype')
    parser.add_argument('--input', default='smooth', choices=['smooth', 'noise'])
    parser.add_argument('--pretrained', action='store_true', help="timm's CoaT-Lite weights (needs the Hub)")
    parser.add_argument('--json', default=None, help='also write the rows to this file')
    parser.add_argument('--table-from', default=None, help='only print the table of a --json file of an earlier run')
    args = parser.parse_args(argv)
    if args.table_from:
        with open(args.table_from) as f:
            saved = json.load(f)
        print(f"# {saved['device']}  {saved['date']}  {saved.get('command', '')}")
        print(_fmt(saved['rows'], torch.device(saved['args']['device'])))
        return
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    args.batch_size = args.batch_size or (32 if cuda else 1)
    args.iters = args.iters or (10 if cuda else 1)
    args.train_iters = args.train_iters or (5 if cuda else 1)
    if args.amp in ('bfloat16', 'float16') and not cuda:
        print('note: autocast on CPU', file=sys.stderr)
    if cuda:
        torch.backends.cudnn.benchmark = True

    cases = [c for c in PRESETS[args.preset]
             if (args.sizes is None or c[2] in args.sizes) and (args.models is None or c[0] in args.models)
             and (args.variants is None or c[1] in args.variants)]
    machine = describe_device(device)
    print(f'# bench_coat_clustering  {datetime.date.today()}  device={machine}  torch {torch.__version__}  '
          f'timm {timm.__version__}  batch={args.batch_size} rounds={args.rounds} '
          f'iters={args.iters}/{args.train_iters} '
          f'amp={args.amp} input={args.input} pretrained={args.pretrained}')
    print('# command: python ' + shlex.join(sys.argv))
    start = time.perf_counter()
    built: List[Case] = []
    rows: List[Dict[str, Any]] = []
    for size, variant, img_size in cases:
        t0 = time.perf_counter()
        try:
            case = Case(size, variant, img_size, args, device)
            case.measure_static()
            built.append(case)
        except (RuntimeError, torch.OutOfMemoryError) as e:  # e.g. full softmax at 384 out of memory
            rows.append(dict(model=f'coat_lite_{size}', variant=variant, img_size=img_size,
                             error=str(e).split('\n')[0][:80]))
        if cuda:
            torch.cuda.empty_cache()
        print(f'#   setup {size} {variant} {img_size}px: {time.perf_counter() - t0:.1f}s', file=sys.stderr, flush=True)
    # Timed round-robin (timm_posembed.measure.bench), median round: load from other work on a shared machine hits every
    # case alike. measure_static above was the warm-up.
    t0 = time.perf_counter()
    infer_s = time_round_robin({str(i): c.infer for i, c in enumerate(built)}, device, 0, args.iters, args.rounds)
    train_s = time_round_robin({str(i): c.train for i, c in enumerate(built)}, device, 0, args.train_iters,
                               args.rounds)
    print(f'#   {args.rounds} rounds: {time.perf_counter() - t0:.1f}s', file=sys.stderr, flush=True)
    rows = [c.finish(infer_s[str(i)], train_s[str(i)]) for i, c in enumerate(built)] + rows
    print(_fmt(rows, device))
    print(f'# total {time.perf_counter() - start:.0f}s')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=machine, date=str(datetime.date.today()), command='python ' + shlex.join(sys.argv),
                           args=vars(args), rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
