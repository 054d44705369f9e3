""" ``timm-posembed run SCRIPT.py ARGS...``: run a timm script (validate.py, benchmark.py, train.py, ...) with
this package's models registered, for scripts that have no ``--device-modules`` option.

``timm-posembed run SCRIPT ARGS`` behaves as ``python SCRIPT ARGS``: every argument after SCRIPT is the script's
(``--help`` too), and the script's exit status and ``SystemExit`` message are its own. The one exception is the
wrapper convention ``run SCRIPT -- ARGS``: the first ``--`` after SCRIPT ends ``run``'s part of the command line
and is not passed on, so that a user who adds it (wherever) gets what the same command without it would give; a
script's own ``--`` is then written as a second one. """
import argparse
import runpy
import sys
from pathlib import Path
from typing import List, Tuple

from ._errors import fail

SEPARATOR = '--'


def register(subparsers) -> None:
    p = subparsers.add_parser(
        'run', help='run a timm script (validate.py, benchmark.py, ...) with timm_posembed imported',
        description='Imports timm_posembed, then runs SCRIPT as __main__ with ARGS, as `python SCRIPT ARGS` would, '
                    'e.g. `timm-posembed run pytorch-image-models/validate.py --model vit_tiny_cope --data-dir DIR`. '
                    'Every argument after SCRIPT is the script\'s (`run SCRIPT --help` prints the script\'s help); '
                    'the first `--` after SCRIPT is optional and not passed on.',
    )
    # One REMAINDER positional: argparse then stops at SCRIPT and hands everything after it over unparsed.
    p.add_argument('command', nargs=argparse.REMAINDER, metavar='SCRIPT [ARGS ...]',
                   help='path to the script (e.g. pytorch-image-models/validate.py), then its arguments')
    p.set_defaults(func=run)


def split_command(command: List[str]) -> Tuple[str, List[str]]:
    """(script, script arguments) of ``run``'s command line, dropping ``run``'s own ``--``: one before SCRIPT, or
    else the first one after it."""
    command = list(command)
    if command[:1] == [SEPARATOR]:
        command = command[1:]
        if not command:
            raise ValueError('SCRIPT is missing')
        return command[0], command[1:]
    if not command:
        raise ValueError('SCRIPT is missing')
    script, args = command[0], command[1:]
    if SEPARATOR in args:
        args.remove(SEPARATOR)  # removes the first only
    return script, args


def run(args) -> int:
    try:
        script_name, script_args = split_command(args.command)
    except ValueError as e:
        return fail('run', f'{e}; usage: timm-posembed run SCRIPT [ARGS ...]')
    script = Path(script_name)
    if not script.is_file():
        return fail('run', f'no script at {script}. timm\'s train.py / validate.py / benchmark.py are in timm\'s git '
                           f'repository (not its pip package): clone pytorch-image-models and pass the path.')
    # registers the models in this process (the console script's own import of the package does not; see
    # timm_posembed/__init__.py), so the script's `import timm_posembed` or --device-modules finds them registered
    from .. import models  # noqa: F401
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(script)] + script_args
    sys.path.insert(0, str(script.resolve().parent))
    try:
        runpy.run_path(str(script), run_name='__main__')
    except SystemExit as e:
        return exit_status(e)
    finally:
        sys.argv, sys.path = old_argv, old_path
    return 0


def exit_status(exit: SystemExit) -> int:
    """The status ``python SCRIPT`` exits with for ``exit``: ``None`` is 0, an integer is itself, anything else
    (``sys.exit('message')``) is printed to stderr and is 1."""
    code = exit.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr, flush=True)
    return 1
