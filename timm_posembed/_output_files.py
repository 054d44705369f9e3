""" Writing a result file so that a reader never sees it half-written.

``bench --json`` rewrites its file after every model and ``report --plot`` writes a PNG; a run stopped midway
(Ctrl-C, SIGTERM from ``timeout`` or SLURM) must leave either the previous file or the new one, never a truncated
one. The new content goes to a hidden file in the same folder (same file system, so the final ``os.replace`` is
atomic) and replaces the destination only once it is complete.

The two helpers below serve every writer that stages its output (this one, ``publish``'s folder, ``prepare``'s
tree): ``interrupts_raise`` makes SIGTERM and SIGHUP unwind like Ctrl-C so that clean-up runs, and
``process_alive`` tells a staging folder of a killed run from one a concurrent run is still writing.
"""
import contextlib
import errno
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Union

__all__ = ['write_atomically', 'interrupts_raise', 'process_alive', 'output_path_problem', 'write_error_message']


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Make SIGTERM and SIGHUP (sent by ``timeout``, SLURM, ``docker stop``, a closed terminal) raise
    ``SystemExit(128 + signal)`` like SIGINT raises ``KeyboardInterrupt``, so that clean-up code runs. Handlers a
    program installed itself are kept; signals can only be handled in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    previous: Dict[int, object] = {}
    for sig in (signal.SIGTERM, getattr(signal, 'SIGHUP', None)):
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (this one included; one of another user counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def write_atomically(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path``; on any error (or interrupt)
    ``path`` is left as it was and the temporary file is removed."""
    path = Path(path)
    with interrupts_raise():
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


def output_path_problem(option: str, path: Optional[Path], example_name: str) -> Optional[str]:
    """Why ``option``'s file ``path`` cannot be written, checked before long work (measuring, plotting), or None.
    The folder must exist: a tool creates no folders beyond the file it was asked for."""
    if path is None:
        return None
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        what = 'is a file, not a folder' if parent.exists() else 'does not exist'
        return f'{option} {path}: the folder {parent} {what}; create the folder or give another path'
    if path.is_dir():
        return f'{option} {path} is a folder; give a file path, e.g. {path / example_name}'
    if path.exists() and not path.is_file():  # a device or FIFO would be replaced by a regular file
        return f'{option} {path} is not a regular file (a device, FIFO or socket); give a file path'
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f'{option} {path} is not writable; give a path in a folder you can write to'
    return None


def write_error_message(option: str, path: Union[str, Path], error: OSError) -> str:
    """One line for ``error`` met while ``write_atomically`` wrote ``option``'s ``path`` (disk full, read-only file
    system, the folder removed meanwhile): what failed, and that the previous file, if any, is unchanged."""
    reason = error.strerror or str(error)
    code = errno.errorcode.get(error.errno or 0)
    return (f'{option} {path}: cannot write it: {reason}' + (f' ({code})' if code else '')
            + '; nothing was written (a previous file there is unchanged)')
