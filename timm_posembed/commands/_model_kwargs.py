""" ``--model-kwargs KEY=VALUE ...``, read as timm's scripts read theirs (values are Python literals, else strings),
so one command line works for train.py and for this package's commands. Here rather than timm's ``ParseKwargs``:
importing timm imports torch, and ``--help`` must answer without it. """
import argparse
import ast
from typing import Any, Dict, Sequence

__all__ = ['ModelKwargsAction', 'parse_model_kwargs']


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_model_kwargs(items: Sequence[str], option: str = '--model-kwargs') -> Dict[str, Any]:
    """``['img_size=64', 'num_classes=100']`` -> ``{'img_size': 64, 'num_classes': 100}``; a ``ValueError`` naming
    ``option`` for an item that is not ``KEY=VALUE``."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.isidentifier():
            raise ValueError(f'{option} {item!r}: expected KEY=VALUE, e.g. img_size=64')
        out[key] = _literal(value)
    return out


class ModelKwargsAction(argparse.Action):
    """argparse action for ``nargs='*'`` options of ``KEY=VALUE`` items; a malformed item is a usage error."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            setattr(namespace, self.dest, parse_model_kwargs(values or [], option_string or self.dest))
        except ValueError as e:
            parser.error(str(e))
