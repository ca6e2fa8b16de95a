"""Writing files so that nothing written is lost or half-written: atomic replacement, a folder check before long
work, and one run per output folder."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: The lock file of an output folder, taken by ``run_all.sh --out`` (flock(1)) and ``hold_folder`` alike.
LOCK_NAME = ".rhvae.lock"


class WriteError(OSError):
    """A file could not be written (a full disk, a read-only or vanished folder): one line naming the file."""


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path``: a reader never sees half a file. A
    failed write (a full disk: ``OSError``, or torch's "unexpected pos" ``RuntimeError`` from its zip writer) leaves
    nothing behind and raises ``WriteError`` naming ``path``."""
    return atomic_write_set({path: write})[0]


def atomic_write_set(writers: dict) -> list[Path]:
    """Write several files so that all of them are there or none is: each ``write(tmp_path)`` goes to a temporary
    file beside its target, and only when every one succeeded are they moved onto their targets (renames, which a
    full disk cannot fail). ``WriteError`` naming the file whose write failed otherwise; no temporary is left."""
    done: list[tuple[str, Path]] = []
    try:
        for target, write in writers.items():
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            done.append((tmp, path))
            try:
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file is as readable as any other
                write(tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            except (OSError, RuntimeError) as err:
                raise write_error(path, err) from None
        for tmp, path in done:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in done:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    return [path for _, path in done]


def write_error(path: str | Path, err: OSError | RuntimeError) -> WriteError:
    """The one-line ``WriteError`` for a failed write of ``path``: "cannot write PATH: REASON", a full disk (errno
    ENOSPC, or torch's "unexpected pos" from its zip writer) named as such."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else "the write failed"
    if "unexpected pos" in str(err) or getattr(err, "errno", None) == errno.ENOSPC:
        reason = "no space left on the device"
    return WriteError(f"cannot write {path}: {reason}")


def as_path(value, name: str) -> Path:
    """``value`` (a string or an ``os.PathLike``) as a ``Path``; a ``TypeError`` naming ``name`` for anything else."""
    if not isinstance(value, (str, os.PathLike)) or value == "":
        raise TypeError(f"{name} must be a path (a non-empty string or a Path), got {value!r} ({type(value).__name__})")
    return Path(value)


def writable_folder(path: str | Path, name: str) -> Path:
    """Create the folder ``path`` (and its parents) and check that a file can be written in it; ``ValueError``
    naming the parameter ``name`` otherwise (an existing file, no permission, a path that cannot exist). Called
    before long work, so that its result is not lost at the end."""
    path = as_path(path, name)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {path} is an existing file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{name} {path} cannot be written: {err.strerror or err}") from None
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def text_writer(text: str):
    """A ``write(tmp_path)`` for ``atomic_write`` and ``atomic_write_set`` that writes ``text`` (UTF-8)."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, text_writer(text))


class FolderInUse(ValueError):
    """Another live run holds the output folder: one line naming it and the holder."""


@contextlib.contextmanager
def hold_folder(folder: str | Path, name: str, holder: str) -> Iterator[Path]:
    """One run per output folder: hold the lock ``folder/.rhvae.lock`` for the block, or raise ``FolderInUse``
    naming ``name`` (the option, e.g. ``--out``) and the run that holds it. The lock is flock(2)'s, which the kernel
    releases when the process that holds it ends in any way (a killed run leaves a lock file but no lock), and which
    ``run_all.sh`` takes on the same file. ``holder`` (e.g. "python -m rhvae train") is written into the file for
    the message a second run gets."""
    path = Path(folder) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by child processes
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = path.read_text(errors="replace").strip().splitlines()
            raise FolderInUse(
                f"{name} {folder} is in use by {who[0] if who else 'another run'}: wait for it to end or choose "
                f"another {name}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder} (pid {os.getpid()}, since {time.strftime('%H:%M:%S')})\n".encode())
        yield path
    finally:
        os.close(fd)
