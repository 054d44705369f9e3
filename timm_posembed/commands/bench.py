""" ``timm-posembed bench``: img/s (inference and training step), peak memory, params and GMACs of every model of
the package beside its timm baseline, in one run. The work is done by ``timm_posembed.bench``. """
import argparse
import json
import sys
from pathlib import Path

from ..measure.bench_config import PRECISIONS, BenchConfig
from ._errors import FAILED, fail
from ._model_kwargs import ModelKwargsAction


def register(subparsers) -> None:
    defaults = BenchConfig()
    p = subparsers.add_parser(
        'bench', help='throughput / memory / params / GMACs of each model beside its timm baseline',
        description='Benchmarks the package\'s models (default: all) and their timm baselines with random inputs. '
                    'Prints a markdown table; --json writes the records with the machine and settings.',
    )
    p.add_argument('--models', nargs='+', default=None, metavar='NAME',
                   help='models of this package (wildcards allowed) or other timm models; default: all of ours')
    p.add_argument('--no-baselines', action='store_true', help='do not add each model\'s timm baseline')
    p.add_argument('--device', default=None, help='cpu or cuda[:N] (default: cuda when a GPU is visible, else cpu)')
    p.add_argument('--precision', choices=list(PRECISIONS), default=defaults.precision,
                   help='fp32, or bf16 / fp16 autocast (default: %(default)s)')
    p.add_argument('--channels-last', action='store_true', help='channels_last model and input')
    p.add_argument('--compile', nargs='?', const='default', default=None, metavar='MODE',
                   help='torch.compile the models (optional mode, e.g. max-autotune)')
    p.add_argument('-b', '--batch-size', type=_at_least(1), default=defaults.batch_size)
    p.add_argument('--img-size', type=_at_least(1), default=None, help='square input size for every model '
                   '(default: each model\'s pretrained-cfg size)')
    p.add_argument('--num-classes', type=_at_least(0), default=defaults.num_classes,
                   help='classifier size (0: no head, inference only)')
    p.add_argument('--warmup', type=_at_least(0), default=defaults.num_warmup,
                   help='untimed iterations per measurement')
    p.add_argument('--iters', type=_at_least(1), default=defaults.num_iters, help='timed iterations per measurement')
    p.add_argument('--rounds', type=_at_least(1), default=defaults.num_rounds,
                   help='round-robin rounds: each baseline and its models take turns, median round reported')
    p.add_argument('--no-train', action='store_true', help='inference only')
    p.add_argument('--skip-memory-check', action='store_true',
                   help='build and run a model even when its estimated memory (inputs, weights, gradients, stored '
                        'activations) exceeds the device\'s available memory; the input batch alone is always checked')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=ModelKwargsAction,
                   help='kwargs for the package\'s models (not the baselines), e.g. stoken_num_iters=1')
    p.add_argument('--json', type=Path, default=None, help='write {environment, results} as JSON here')
    p.add_argument('--markdown', type=Path, default=None, help='also write the markdown table here')
    p.set_defaults(func=run)


def _at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (argparse's message then names the option)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer >= {minimum}, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'expected an integer >= {minimum}, got {value}')
        return value
    parse.__name__ = f'integer >= {minimum}'
    return parse


def run(args) -> int:
    import torch

    from .._output_files import output_path_problem
    from ..measure import bench
    problems = [output_path_problem('--json', args.json, 'bench.json'),
                output_path_problem('--markdown', args.markdown, 'bench.md')]
    if args.num_classes == 0 and not args.no_train:
        problems.append('--num-classes 0 (no classifier) measures inference only: add --no-train, or give '
                        '--num-classes >= 1 for the training step')
    problems = [p for p in problems if p]
    if problems:
        for problem in problems[:-1]:
            fail('bench', problem)
        return fail('bench', problems[-1])
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    cfg = BenchConfig(
        device=device, precision=args.precision, channels_last=args.channels_last, compile_mode=args.compile,
        batch_size=args.batch_size, img_size=args.img_size, num_classes=args.num_classes, num_warmup=args.warmup,
        num_iters=args.iters, num_rounds=args.rounds, train=not args.no_train,
        check_memory=not args.skip_memory_check,
    )
    done = []

    def progress(result) -> None:
        status = result.error or f'{result.infer_img_s:,.0f} img/s inference' + (
            f', {result.train_img_s:,.0f} img/s training' if result.train_img_s else '')
        print(f'{result.model}: {status}', file=sys.stderr, flush=True)
        done.append(result)
        _write_outputs(args, cfg, done)  # after every model, so a run cut short still leaves its numbers

    try:
        results = bench.run_bench(cfg, args.models, not args.no_baselines, args.model_kwargs, progress=progress)
        text = _write_outputs(args, cfg, results)
    except _OutputError as e:
        return fail('bench', str(e), FAILED)
    except (ValueError, RuntimeError) as e:
        return fail('bench', str(e))
    print(text)
    return FAILED if any(r.error for r in results) else 0


class _OutputError(Exception):
    """Writing --json / --markdown failed (disk full, read-only file system); the message names the option and path."""


def _write_outputs(args, cfg: BenchConfig, results) -> str:
    """Write --json / --markdown for ``results``; returns the markdown (settings line + table)."""
    from dataclasses import asdict

    from .._output_files import write_atomically, write_error_message
    from ..measure.bench import format_markdown
    from ..measure.environment import environment

    env = environment(cfg.device, asdict(cfg))
    header = (f'{env["device"]}, torch {env["torch"]}, timm {env["timm"]}, {env["date"]}; batch {cfg.batch_size}, '
              f'{cfg.precision}{", channels_last" if cfg.channels_last else ""}'
              f'{", torch.compile " + cfg.compile_mode if cfg.compile_mode else ""}')
    text = header + '\n\n' + format_markdown(results, cfg)
    outputs = []
    if args.markdown:
        outputs.append(('--markdown', args.markdown, text + '\n'))
    if args.json:
        outputs.append(('--json', args.json, json.dumps({'environment': env, 'results': [vars(r) for r in results]},
                                                         indent=2)))
    for option, path, content in outputs:
        try:
            write_atomically(path, lambda tmp: tmp.write_text(content))
        except OSError as e:
            raise _OutputError(write_error_message(option, path, e)) from None
    return text
