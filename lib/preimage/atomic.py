"""Atomic file writes: a failed or interrupted write never leaves a half-written file over a good one."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (creating its folder), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return path


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


@contextlib.contextmanager
def atomic_folder(path: str | Path):
    """Yield a new temporary folder beside ``path``; on success it takes the place of ``path`` as
    a unit (swapped in one step where the system can, the old folder kept until then), so that a
    reader sees the old folder or the new one, never a mix. On failure nothing is left behind and
    the old folder stays. Leftovers of earlier runs that were killed are removed first; those of
    runs still going are not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.preimage-"
    for stale in path.parent.glob(f"{glob.escape(prefix)}*.partial"):
        pid = stale.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}-", suffix=".partial"))
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder the usual permissions
        if not (path.is_dir() and not path.is_symlink() and _exchange(tmp, path)):
            aside = None
            if path.exists() or path.is_symlink():
                aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}-", suffix=".partial"))
                os.replace(path, aside / "old")
            try:
                os.replace(tmp, path)
            except OSError:
                if aside is not None:
                    os.replace(aside / "old", path)  # the old folder back in place
                raise
            finally:
                if aside is not None:
                    shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the new folder on failure, the old one after the swap


def _alive(pid: int) -> bool:
    """Whether a process with this PID runs (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
