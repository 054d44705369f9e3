""" Running timm's repository scripts (train.py, validate.py, inference.py, benchmark.py, onnx_export.py) in tests,
with the commands README.md gives.

README.md's block after ``<!-- timm-script-commands -->`` is the single source of those commands: the tests parse it,
put their own paths and model in place of the README's example ones (``fill``), and append options that only make
the run small (CPU, 64 px, a few iterations). A README edit that breaks a command therefore breaks a test.

An interpreter start costs ~15 s here (importing timm), so the tests run every command in two long-lived processes
(``python tests/timm_scripts.py STEPS.json ERRORS.json``, one per core): train.py is loaded once per process and its
``main()`` called per command; a ``timm-posembed run ...`` command calls the console script's function,
``timm_posembed.cli.main``, with the same arguments.
"""
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping

README = Path(__file__).resolve().parents[2] / 'README.md'
COMMANDS_MARKER = '<!-- timm-script-commands -->'
# The README's example values that the tests replace.
README_REPO = 'pytorch-image-models'
README_MODEL = 'vit_tiny_cope'
README_NUM_CLASSES = '10'
README_PLACEHOLDERS = ('DATA', 'OUT', 'RUN')


def readme_commands(readme: Path = README) -> Dict[str, List[str]]:
    """{step: argv} of the README's timm-script block. A step is the script's name (``validate.py``), with
    ``+dynamo`` for the onnx_export.py line that passes ``--dynamo``. argv starts with the script's path for
    train.py (run as ``python train.py``) and with ``run`` for the ``timm-posembed run`` lines."""
    lines = readme.read_text(encoding='utf-8').splitlines()
    try:
        start = lines.index(COMMANDS_MARKER)
    except ValueError:
        raise AssertionError(f'{readme}: no {COMMANDS_MARKER} line') from None
    if not lines[start + 1].startswith('```'):
        raise AssertionError(f'{readme}: {COMMANDS_MARKER} must be followed by a ``` block')
    commands = {}
    for line in lines[start + 2:]:
        if line.startswith('```'):
            break
        line = line.split(' #')[0].strip()
        if not line or line.startswith(('#', 'git ')):
            continue
        tokens = shlex.split(line)
        if tokens[:3] == ['PYTHONSAFEPATH=1', 'python', f'{README_REPO}/train.py']:
            argv = tokens[2:]
        elif tokens[:2] == ['timm-posembed', 'run']:
            argv = tokens[1:]
        else:
            raise AssertionError(f'{readme}: unexpected command in the {COMMANDS_MARKER} block: {line}')
        script = Path(argv[0] if argv[0] != 'run' else argv[1]).name
        step = script + ('+dynamo' if '--dynamo' in argv else '')
        assert step not in commands, f'{readme}: two commands for {step}'
        commands[step] = argv
    return commands


def fill(argv: List[str], repo: Path, model: str, num_classes: int, values: Mapping[str, str]) -> List[str]:
    """argv with the README's example repository, model and class count replaced, and each placeholder in
    ``README_PLACEHOLDERS`` (whole path components, e.g. ``OUT/RUN/model_best.pth.tar``) replaced by ``values``."""
    filled = []
    for i, token in enumerate(argv):
        if token.startswith(f'{README_REPO}/'):
            token = str(repo / token[len(README_REPO) + 1:])
        elif i > 0 and argv[i - 1] == '--num-classes':
            assert token == README_NUM_CLASSES, token
            token = str(num_classes)
        else:
            token = token.replace(README_MODEL, model)
            parts = token.split('/')
            token = '/'.join(values[p] if p in README_PLACEHOLDERS else p for p in parts)
        filled.append(token)
    return filled


def run_steps(steps_json: str, errors_json: str) -> None:
    """Run each step of ``steps_json`` ([[name, kind, argv], ...], kind 'train' or 'cli') in order; write
    {name: error} for the steps that failed. A step after a failed one still runs (and fails on its own)."""
    import runpy
    import traceback
    steps = json.loads(Path(steps_json).read_text())
    train_globals = None
    errors = {}
    for name, kind, argv in steps:
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            if kind == 'train':
                sys.argv = argv
                if train_globals is None:  # not as __main__: nothing runs on load, its directory is not on sys.path
                    train_globals = runpy.run_path(argv[0], run_name='timm_train_script')
                train_globals['main']()
            else:
                from timm_posembed.cli import main as cli_main
                rc = cli_main(argv)
                if rc:
                    errors[name] = f'exit status {rc}'
        except BaseException as e:  # noqa: B036 (SystemExit from argparse included)
            errors[name] = f'{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}'
        print(f'HARNESS {name}: {time.perf_counter() - start:.1f} s, {time.process_time() - start_cpu:.1f} s CPU',
              file=sys.stderr, flush=True)
    Path(errors_json).write_text(json.dumps(errors))


if __name__ == '__main__':
    run_steps(*sys.argv[1:3])
