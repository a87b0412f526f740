"""Where datasets and caches live: ``--data-root``, else ``$EGNN_DATA``, else a per-user default."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("EGNN_DATA"):
        return Path(os.environ["EGNN_DATA"]).expanduser()
    return Path.home() / ".local" / "share" / "egnn" / "data"


def cache_dir() -> Path:
    """Decoded-image caches; ``$EGNN_CACHE`` or ``~/.cache/egnn``. Kept out of the data root, which may be read-only."""
    return Path(os.environ.get("EGNN_CACHE", Path.home() / ".cache" / "egnn")).expanduser()


def stamp(paths) -> int:
    """The newest mtime among ``paths``: part of a cache key, so a replaced or re-extracted source is re-read."""
    return max((Path(p).stat().st_mtime_ns for p in paths), default=0)


def atomic_save(obj, path: str | os.PathLike, write=torch.save) -> None:
    """``write(obj, file)`` (default ``torch.save``) to a temporary file of this process in the same folder, then
    rename: a crash never leaves half a file, and processes writing the same file never mix their bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_save` of a text file (reports, results, logs): readers see the old file or the new one."""
    atomic_save(text, path, write=lambda s, f: Path(f).write_text(s))
