"""Few-shot splits from image files: a class-per-folder tree, split CSVs, or pickled arrays.

Shared by ``--dataset folder`` (the user's own images), miniImageNet and tieredImageNet.
"""
from __future__ import annotations

import csv
import hashlib
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from egnn.data.base import FewShotSplit
from egnn.data.paths import atomic_save, cache_dir, stamp
from egnn.data.registry import DatasetInfo, register_dataset
from egnn.errors import DataError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def decode(path: str, size: int, channels: int) -> np.ndarray:
    """One image file as ``(channels, size, size)`` uint8; a broken file is a :class:`DataError` naming it."""
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path} ({type(exc).__name__}): remove or replace the file") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def decode_ink(path: str, size: int, channels: int = 1) -> np.ndarray:
    """A character drawn in dark ink on paper (Omniglot's files, a user's scans) as the character datasets hold
    it: grayscale, ink bright on a dark background."""
    return 255 - decode(path, size, 1).repeat(channels, 0)


def read_images(paths: list, decode_file=decode, size: int = 84, channels: int = 3, progress=None,
                workers: int = 2) -> torch.Tensor:
    """``(len(paths), channels, size, size)`` uint8 from image files, decoded by ``decode_file(path, size,
    channels)`` with ``workers`` processes (in this one for 256 files or fewer); an unreadable file is a
    :class:`DataError` naming it. ``progress(done)`` is called after every 256 files."""
    out: list[np.ndarray] = []
    pool = ProcessPoolExecutor(max_workers=workers) if len(paths) > 256 and workers > 1 else None
    try:
        for first in range(0, len(paths), 256):
            chunk = [str(p) for p in paths[first:first + 256]]
            args = (chunk, [size] * len(chunk), [channels] * len(chunk))
            out.extend(pool.map(decode_file, *args, chunksize=32) if pool else map(decode_file, *args))
            if progress is not None:
                progress(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return torch.from_numpy(np.stack(out))


def split_from_files(files: dict[str, list[Path]], size: int, channels: int, name: str) -> FewShotSplit:
    """Decode ``class name -> image paths`` (with two processes) into one in-memory split."""
    classes = sorted(files)
    paths = [p for c in classes for p in files[c]]
    if not paths:
        raise DataError(f"{name}: no images found")
    labels = torch.arange(len(classes)).repeat_interleave(torch.tensor([len(files[c]) for c in classes]))
    return FewShotSplit(read_images(paths, decode, size, channels), labels, classes, name=name)


def image_files(folder: Path, skip_hidden: bool = False) -> list[Path]:
    """The image files directly in ``folder``, sorted; ``skip_hidden`` leaves out dot-files (e.g. macOS's
    ``._name.png`` companions)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                  and not (skip_hidden and (p.name.startswith(".") or not p.is_file())))


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["filename", "label"]:
        raise DataError(f"split file {path} must start with the header 'filename,label'")
    return [(r[0], r[1]) for r in rows[1:] if r]


def folder_files(root: Path, csvs: dict[str, Path] | None = None) -> dict[str, dict[str, list[Path]]]:
    """``split -> class -> files`` for one of two layouts:

    * ``root/{train,val,test}/<class>/<image>``, or
    * ``root/<class>/<image>`` (or ``root/images/<image>``) with ``{train,val,test}.csv`` split files of
      ``filename,label`` rows, as Ravi & Larochelle's miniImageNet splits.
    """
    if all((root / s).is_dir() for s in SPLITS):
        return {s: {c.name: image_files(c) for c in sorted((root / s).iterdir()) if c.is_dir()} for s in SPLITS}
    if csvs is None and not any((root / f"{s}.csv").is_file() for s in SPLITS):
        classes = {c.name: image_files(c) for c in sorted(root.iterdir()) if c.is_dir() and not c.name.startswith(".")}
        classes = {c: files for c, files in classes.items() if files}
        if classes:
            return split_classes(classes, root)
    csvs = csvs or {s: root / f"{s}.csv" for s in SPLITS}
    missing = [str(p) for p in csvs.values() if not Path(p).is_file()]
    if missing:
        raise DataError(f"{root}: expected train/ val/ test/ class folders, class folders of images, or split "
                        f"files {', '.join(missing)}")
    out: dict[str, dict[str, list[Path]]] = {}
    for split, path in csvs.items():
        classes: dict[str, list[Path]] = {}
        for filename, label in _read_csv(Path(path)):
            candidates = [root / label / filename, root / "images" / filename, root / filename]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise DataError(f"{path}: image {filename} of class {label} not found under {root} "
                                f"(looked in {label}/, images/ and the root)")
            classes.setdefault(label, []).append(found)
        out[split] = classes
    return out


FOLDER_SPLIT_SEED = 0  # fixed, so a folder's classes always split the same way (runs record them in classes.json)


def split_classes(classes: dict[str, list[Path]], root: Path) -> dict[str, dict[str, list[Path]]]:
    """A folder of class folders without a split: classes shuffled with :data:`FOLDER_SPLIT_SEED` and split
    64 / 16 / 20% (miniImageNet's proportions) into train / val / test, at least 2 classes in each."""
    names = sorted(classes)
    if len(names) < 6:
        raise DataError(f"{root} has {len(names)} class folders: splitting classes into train / val / test needs at "
                        f"least 6 (2 each), or give the split as train/ val/ test/ folders")
    order = [names[i] for i in torch.randperm(len(names), generator=torch.Generator().manual_seed(FOLDER_SPLIT_SEED))]
    test, val = max(2, round(0.2 * len(names))), max(2, round(0.16 * len(names)))
    parts = {"train": order[:len(names) - val - test], "val": order[len(names) - val - test:len(names) - test],
             "test": order[len(names) - test:]}
    return {s: {c: classes[c] for c in sorted(parts[s])} for s in SPLITS}


def cached(key: str, build) -> dict[str, FewShotSplit]:
    """Build splits once per key (e.g. a root and an image size) and keep them as one tensor file."""
    path = cache_dir() / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    try:
        blob = torch.load(path, weights_only=True)
        return {s: FewShotSplit(b["images"], b["labels"], b["names"], name=b["name"]) for s, b in blob.items()}
    except Exception:
        splits = build()
        atomic_save({s: {"images": v.images, "labels": v.labels, "names": v.class_names, "name": v.name}
                     for s, v in splits.items()}, path)
        return splits


def load_folder(root=None, image_size: int = 84, channels: int = 3, name: str = "folder",
                csvs: dict[str, Path] | None = None) -> dict[str, FewShotSplit]:
    if root is None or not Path(root).is_dir():
        raise DataError(f"{name}: image folder {root} not found: pass --data-root PATH (one sub-folder per class, "
                        f"optionally split into train/ val/ test/ or listed in train.csv, val.csv, test.csv)")
    root = Path(root)

    def build():
        files = folder_files(root, csvs)
        return {s: split_from_files(files[s], image_size, channels, f"{name}/{s}") for s in SPLITS}

    key = f"{root.resolve()}:{stamp(root.iterdir())}:{image_size}:{channels}:{sorted((csvs or {}).items())}"
    return cached(f"folder:{key}", build)


register_dataset(DatasetInfo(
    "folder", load_folder, native_size=84, channels=3, natural=True, location=None, decode=decode,
    description="your images: --data-root PATH with train/ val/ test/ class folders, class folders and "
                "train.csv / val.csv / test.csv (filename,label), or class folders alone (classes split 64/16/20% "
                "with a fixed seed); 3x84x84 by default"))


def split_from_arrays(per_class: dict, size: int, name: str, source: Path) -> FewShotSplit:
    """``class -> list of HxWx3 uint8 arrays`` (the EGNN reference's compacted pickles) as a split."""
    classes, images = sorted(per_class, key=str), []
    for c in classes:
        for i, arr in enumerate(per_class[c]):
            arr = np.asarray(arr)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise DataError(f"{source}: image {i} of class {c} has shape {arr.shape} {arr.dtype}, "
                                f"expected (H, W, 3) uint8: regenerate the pickle")
            if arr.shape[:2] != (size, size):
                arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
            images.append(arr.transpose(2, 0, 1))
    labels = torch.arange(len(classes)).repeat_interleave(torch.tensor([len(per_class[c]) for c in classes]))
    return FewShotSplit(torch.from_numpy(np.stack(images)), labels, [str(c) for c in classes], name=name)


def read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"{path} not found: put the compacted pickles there or pass --data-root") from None
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise DataError(f"{path} is not a readable pickle ({type(exc).__name__}): re-download it") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of class -> images, got {type(data).__name__}")
    return data
