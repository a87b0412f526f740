"""Omniglot at 28x28 with the split of Vinyals et al. and Garcia & Bruna (ICLR 2018).

The 1,623 characters are ordered by their global id (the ``XXXX`` in ``XXXX_YY.png``: 0001-0964 in
``images_background``, 0965-1623 in ``images_evaluation``). The first 1,200 are for meta-training, of which
the last 100 (ids 1101-1200) are held out for validation; the remaining 423 (ids 1201-1623) are the test
characters. Every character becomes 4 classes, rotated by 0, 90, 180 and 270 degrees, so the splits hold
4,400 / 400 / 1,692 classes of 20 images each.

The folders are read directly (torchvision's ``Omniglot`` only checks its zips' checksums); where they are
missing, torchvision downloads and extracts them. Decoded images are cached as one uint8 tensor file per source
folder, so the cache never hides a missing or replaced copy.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from egnn.data.base import FewShotSplit
from egnn.data.images import decode_ink, read_images
from egnn.data.registry import DatasetInfo, register_dataset
from egnn.data.paths import atomic_save, cache_dir, data_root, stamp
from egnn.errors import DataError

SUBSETS = ("images_background", "images_evaluation")
NUM_CHARACTERS = 1623
SPLIT_CHARACTERS = {"train": range(0, 1100), "val": range(1100, 1200), "test": range(1200, 1623)}
ROTATIONS = (0, 1, 2, 3)  # multiples of 90 degrees
FILE_RE = re.compile(r"^(\d{4})_(\d{2})\.png$")


def _find_or_download(root: Path) -> Path:
    folder = root / "omniglot-py"
    missing = [s for s in SUBSETS if not (folder / s).is_dir()]
    if not missing:
        return folder
    try:
        from torchvision.datasets import Omniglot

        for subset in missing:
            Omniglot(str(root), background=subset == "images_background", download=True)
    except Exception as exc:  # URLError, OSError, RuntimeError: all mean "could not fetch"
        raise DataError(
            f"Omniglot not found at {folder}/{{{','.join(SUBSETS)}}} and the download failed "
            f"({type(exc).__name__}): put the omniglot-py folder there, or pass --data-root / set EGNN_DATA") from None
    return folder


def _scan(folder: Path) -> dict[int, tuple[str, list[Path]]]:
    """Global character id -> (``Alphabet/characterNN``, its 20 files sorted by drawer)."""
    chars: dict[int, tuple[str, list[Path]]] = {}
    for subset in SUBSETS:
        for char_dir in sorted((folder / subset).glob("*/*")):
            files = sorted(p for p in char_dir.iterdir() if FILE_RE.match(p.name))
            if not files:
                continue
            char_id = int(FILE_RE.match(files[0].name).group(1))
            chars[char_id] = (f"{char_dir.parent.name}/{char_dir.name}", files)
    return chars


def _cache_path(folder: Path, image_size: int) -> Path:
    """One cache per source folder and its state: a cache decoded elsewhere never stands in for a missing or
    replaced copy (the alphabet folders' mtimes change when alphabets are added, removed or re-extracted)."""
    key = f"{folder.resolve()}@{stamp(folder / s for s in SUBSETS)}"
    return cache_dir() / f"omniglot_{image_size}_{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"


def load_characters(root: str | Path | None = None, image_size: int = 28) -> tuple[torch.Tensor, list[str]]:
    """All characters as ``(1623, 20, size, size)`` uint8 in global-id order, and their names. Cached."""
    folder = _find_or_download(data_root(root))
    cache = _cache_path(folder, image_size)
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            return blob["images"], blob["names"]
        except Exception:
            cache.unlink(missing_ok=True)  # a stale or broken cache is rebuilt, never trusted
    chars = _scan(folder)
    if len(chars) != NUM_CHARACTERS or any(len(f) != 20 for _, f in chars.values()):
        bad = next((n for n, f in chars.values() if len(f) != 20), f"{len(chars)} characters")
        raise DataError(f"Omniglot under {data_root(root)} is incomplete ({bad}): expected {NUM_CHARACTERS} "
                        f"characters of 20 PNGs each; re-extract omniglot-py")
    ids = sorted(chars)
    paths = [p for i in ids for p in chars[i][1]]
    images = read_images(paths, decode_ink, image_size, 1).view(len(ids), 20, image_size, image_size)
    names = [chars[i][0] for i in ids]
    atomic_save({"images": images, "names": names}, cache)
    return images, names


def load_omniglot(root: str | Path | None = None, image_size: int = 28) -> dict[str, FewShotSplit]:
    images, names = load_characters(root, image_size)
    splits = {}
    for split, chars in SPLIT_CHARACTERS.items():
        chars = list(chars)
        per_rot = [torch.rot90(images[chars], k, dims=(-2, -1)) for k in ROTATIONS]  # each (C, 20, H, W)
        stacked = torch.stack(per_rot, 1).reshape(-1, 1, image_size, image_size)  # class = (char, rot)
        labels = torch.arange(len(chars) * len(ROTATIONS)).repeat_interleave(20)
        class_names = [f"{names[c]}@rot{90 * k}" for c in chars for k in ROTATIONS]
        splits[split] = FewShotSplit(stacked.contiguous(), labels, class_names, name=f"omniglot/{split}")
    return splits


register_dataset(DatasetInfo(
    "omniglot", load_omniglot, native_size=28, channels=1, natural=False, location="omniglot-py", decode=decode_ink,
    description="Omniglot, torchvision folder layout under <root>/omniglot-py; 4400/400/1692 classes "
                "(1200/423 characters x 4 rotations), 1x28x28"))
