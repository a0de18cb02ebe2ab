"""Atomic file writes: a temporary file in the same folder, flushed and fsynced, then renamed over
the final name, so a crash leaves either the old file or the complete new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from factgpt.errors import FactgptError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either the old file or the complete new one."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FactgptError("the folder does not exist", path=folder, hint="create it first")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise FactgptError(f"cannot write here: {e.strerror}", path=folder) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise FactgptError(f"cannot write: {e.strerror}", path=path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_folder(path: str | Path) -> Path:
    """Create the output folder `path` (and its parents) if missing; a file in its place, or a folder
    that cannot be made, is one clear error, not a traceback."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FactgptError("a file is in the way of the output folder", path=path,
                           hint="give another folder, or move the file") from None
    except OSError as e:
        raise FactgptError(f"cannot make the output folder: {e.strerror}", path=path) from None
    return path
