""" ``timm-posembed run SCRIPT.py ARGS...``: run a timm script (validate.py, benchmark.py, train.py, ...) with
this package's models registered, for scripts that have no ``--device-modules`` option. """
import runpy
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        'run', help='run a timm script (validate.py, benchmark.py, ...) with timm_posembed imported',
        description='Imports timm_posembed, then runs SCRIPT as __main__ with ARGS, e.g. '
                    '`timm-posembed run pytorch-image-models/validate.py --model vit_tiny_cope --data-dir DIR`.',
    )
    p.add_argument('script', help='path to the script, e.g. pytorch-image-models/validate.py')
    p.add_argument('script_args', nargs='*', help='arguments passed to the script unchanged')
    p.set_defaults(func=run, accepts_extra=True)


def run(args) -> int:
    script = Path(args.script)
    if not script.is_file():
        print(f'timm-posembed run: no script at {script}. timm\'s train.py / validate.py / benchmark.py are in '
              f'timm\'s git repository (not its pip package): clone pytorch-image-models and pass the path.',
              file=sys.stderr)
        return 2
    import timm_posembed  # noqa: F401  (registers the models in this process)
    argv = [str(script)] + list(args.script_args) + list(getattr(args, 'extra', []))
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = argv
    sys.path.insert(0, str(script.resolve().parent))
    try:
        runpy.run_path(str(script), run_name='__main__')
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, sys.path = old_argv, old_path
    return 0
