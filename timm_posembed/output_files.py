""" Writing a result file so that a reader never sees it half-written.

``bench --json`` rewrites its file after every model and ``report --plot`` writes a PNG; a run stopped midway
(Ctrl-C, SIGTERM from ``timeout`` or SLURM) must leave either the previous file or the new one, never a truncated
one. The new content goes to a hidden file in the same folder (same file system, so the final ``os.replace`` is
atomic) and replaces the destination only once it is complete.
"""
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

__all__ = ['write_atomically']


def write_atomically(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path``; on any error (or interrupt)
    ``path`` is left as it was and the temporary file is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.partial', dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
