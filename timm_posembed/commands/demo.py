""" ``timm-posembed demo``: the package's main job on its embedded defaults, on the CPU, in a few minutes. """
import time

from ._table import format_table


def register(subparsers) -> None:
    p = subparsers.add_parser(
        'demo', help='build every model beside its timm baseline, then train a few of them briefly (CPU, ~3 min)',
        description='Part 1 builds every timm_posembed model and its timm baseline and prints params, GMACs and '
                    'CPU inference img/s at the default input size. Part 2 trains new models and their '
                    'baselines from scratch on a generated task (which quadrant holds a bright square) and '
                    'prints held-out accuracy.',
    )
    p.add_argument('--steps', type=int, default=40,
                   help='training steps per model and seed (default 40, so two seeds of every row fit in a few '
                        'minutes; tests/test_cli.py checks that 40 steps separate COPE from no position embedding)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1], metavar='SEED',
                   help='train every row once per seed (default: 0 1); rows are compared as mean ± std')
    p.add_argument('--img-size', type=int, default=32, help='training image size (default 32)')
    p.add_argument('--skip-table', action='store_true', help='skip part 1 (the model table)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    p.set_defaults(func=run)


def _log(message: str) -> None:
    print(message, flush=True)


def run(args) -> int:
    import torch

    from ..measure.bench import bench_model
    from ..measure.bench_config import BenchConfig
    from ..measure.demo import train_and_evaluate, training_rows
    from ..models import list_model_info

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    infos = list_model_info()
    if not args.skip_table:
        names = []
        for info in infos:
            names += [n for n in (info.name, info.baseline) if n not in names]
        _log(f'[1/2] Building {len(names)} models (ours and their timm baselines) at their default input size')
        baseline_of = {i.name: i.baseline for i in infos}
        config = BenchConfig(device='cpu', batch_size=2, num_warmup=1, num_iters=2, train=False)
        table = []
        for name in names:
            start_model = time.perf_counter()
            r = bench_model(name, config)
            ips = f'{r.infer_img_s:.1f}' if r.error is None else f'failed: {r.error}'
            table.append((name, baseline_of.get(name, '(timm baseline)'), f'{r.params / 1e6:.2f}',
                          f'{r.gmacs:.2f}', r.input_size[1], ips))
            _log(f'  measured {name} ({time.perf_counter() - start_model:.1f}s)')
        _log('')
        _log(format_table(('model', 'compared with', 'params (M, 1000 classes)', 'GMACs', 'img',
                           'CPU img/s (batch 2)'), table))
        _log('')

    seeds = list(dict.fromkeys(args.seeds))
    rows = training_rows()
    total = len(rows) * len(seeds)
    _log(f'[2/2] Training {len(rows)} models from scratch, seeds {" ".join(map(str, seeds))}, {args.steps} steps '
         f'each, on generated {args.img_size}px images: the label is the quadrant holding a bright square '
         f'(chance = 25%)')
    done = 0
    for seed in seeds:  # seeds outer: an interrupted demo has every row at the same number of seeds
        for row in rows:
            done += 1

            def progress(step: int, loss: float, label=f'{row.label} seed {seed}', i=done) -> None:
                if step % 10 == 0 or step == args.steps:
                    print(f'\r  [{i}/{total}] {label}: step {step}/{args.steps} loss {loss:.3f}', end='', flush=True)

            row.runs.append(train_and_evaluate(row.model, row.model_kwargs, img_size=args.img_size,
                                               steps=args.steps, seed=seed, progress=progress))
            print(flush=True)
    _log('')
    _log(format_table(
        ('model', 'compared with', 'params (M)', 'train s / run', 'held-out accuracy per seed', 'mean ± std',
         'difference to what it is compared with'),
        [_training_cells(row, rows) for row in rows]))
    _log('')
    _log('A difference is outside the spread when the two rows\' mean ± std intervals do not overlap (the rule of '
         '`timm-posembed report`); inside it, these seeds cannot tell the two rows apart.')
    _log('Without position information a ViT cannot tell the quadrants apart. timm\'s learned position embedding '
         'starts near zero (std 0.02) and needs more steps than this; COPE\'s rotation gives every token its '
         'position from the first step. Convolutional embeddings (super-token, CoaT) see position through padding.')
    _log(f'done in {time.perf_counter() - start:.0f}s')
    return 0


def _training_cells(row, rows) -> tuple:
    from ..measure.seed_spread import spread_verdict

    by_key = {r.key: r for r in rows}
    mean, std = row.mean_std()
    spread = f'{mean:.1%}' + ('' if std is None else f' ± {std:.1%}')
    compared, difference = '(timm baseline)', ''
    if row.compared_with is not None:
        other = by_key[row.compared_with]
        compared = other.label
        delta = mean - other.mean_std()[0]
        verdict = spread_verdict(row.accuracies(), other.accuracies())
        verdict = {'inside': 'inside the spread', 'outside': 'outside the spread', None: 'one seed: no spread'}[verdict]
        difference = f'{delta * 100:+.1f} points ({verdict})'
    return (row.label, compared, f'{row.runs[0].params / 1e6:.2f}',
            f'{sum(r.train_seconds for r in row.runs) / len(row.runs):.1f}',
            ', '.join(f'{a:.1%}' for a in row.accuracies()), spread, difference)
