"""Writing files so that nothing written is lost or half-written: atomic replacement, and a folder check before
long work."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


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
