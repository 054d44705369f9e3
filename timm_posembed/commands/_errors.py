""" How every command reports a failure: ``timm-posembed COMMAND: error: MESSAGE`` on stderr (argparse's own form),
and the exit status. The message names the file or argument, what was wrong and what would be right. """
import sys

__all__ = ['USAGE', 'FAILED', 'fail']

USAGE = 2  # the input or the arguments are wrong (argparse exits with 2 too)
FAILED = 1  # the work was attempted and did not succeed (a model failed to benchmark, a card is malformed)


def fail(command: str, message: str, status: int = USAGE) -> int:
    """Print the error for ``command`` and return ``status`` for its ``run`` to return."""
    print(f'timm-posembed {command}: error: {message}', file=sys.stderr, flush=True)
    return status
