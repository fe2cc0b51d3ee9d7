"""Atomic writes: a file or folder is made under a temporary name beside its place, then renamed into it,
so a reader (or a re-run after a kill) sees the old version or the whole new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_path(path: str | Path, *, concurrent: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` (`.<name>.tmp`) to write a file or a folder at.

    When the block ends it is renamed onto `path` (a folder already there is removed first); on an error
    it is removed and the error raised. Parent folders are made. `concurrent`: several processes may
    write `path` at once, so each gets its own temporary name (`.<name>.<pid>.tmp`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" if concurrent else f".{path.name}.tmp")
    _remove(tmp)  # left by a writer that was killed
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the error raised is the write's own
            _remove(tmp)
        raise


@contextmanager
def atomic_write(
    path: str | Path, mode: str = "wb", *, fsync: bool = False, concurrent: bool = False
) -> Iterator[IO]:
    """Open a temporary file beside `path` in `mode` ("wb", or "w" for UTF-8 text); when the block ends
    it is closed (after an os.fsync if `fsync`) and renamed onto `path`. See `atomic_path`."""
    with (
        atomic_path(path, concurrent=concurrent) as tmp,
        open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f,
    ):
        yield f
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def _remove(path: Path) -> None:
    """Delete a file or a folder tree, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
