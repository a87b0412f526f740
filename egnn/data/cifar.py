"""CIFAR-FS (Bertinetto et al., ICLR 2019) and FC100 (Oreshkin et al., NeurIPS 2018) from torchvision's CIFAR-100.

Both pool CIFAR-100's train and test images (600 per class) and split the 100 classes: CIFAR-FS into
64 / 16 / 20 classes, FC100 by superclass, 12 / 4 / 4 superclasses (60 / 20 / 20 classes), so that test
classes share no superclass with training classes. Reads ``<root>/cifar-100-python/{train,test,meta}``;
torchvision downloads them where a network exists.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from egnn.data.base import FewShotSplit
from egnn.data.images import decode
from egnn.data.paths import data_root
from egnn.data.registry import DatasetInfo, register_dataset
from egnn.errors import DataError

CIFAR_FS = {
    "val": ["beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly", "sea", "camel",
            "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor"],
    "test": ["whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe", "leopard", "plain",
             "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman", "bicycle", "pickup_truck", "rocket"],
}
FC100 = {
    "val": ["large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates", "small_mammals"],
    "test": ["aquatic_mammals", "insects", "medium_mammals", "people"],
}
FILES = ("train", "test", "meta")


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path} is not a readable CIFAR-100 pickle ({type(exc).__name__}): re-download it") from None


def load_cifar100(root=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """All 60,000 images ``(N, 3, 32, 32)`` uint8 with fine and coarse labels and their names."""
    root = data_root(root)
    folder = root / "cifar-100-python"
    if not all((folder / f).is_file() for f in FILES):
        try:
            from torchvision.datasets import CIFAR100

            CIFAR100(str(root), train=True, download=True)
        except Exception as exc:
            raise DataError(f"CIFAR-100 not found at {folder}/{{train,test,meta}} and the download failed "
                            f"({type(exc).__name__}): put cifar-100-python there, or pass --data-root") from None
    parts = [_read(folder / f) for f in ("train", "test")]
    meta = _read(folder / "meta")
    images, fine, coarse = [], [], []
    for part, name in zip(parts, ("train", "test")):
        data = np.asarray(part.get("data"))
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{folder / name}: 'data' has shape {data.shape}, expected (N, 3072)")
        images.append(data.reshape(-1, 3, 32, 32).astype(np.uint8))
        fine.append(np.asarray(part["fine_labels"]))
        coarse.append(np.asarray(part["coarse_labels"]))
    return (np.concatenate(images), np.concatenate(fine), np.concatenate(coarse), list(meta["fine_label_names"]),
            list(meta["coarse_label_names"]))


def _splits(images, fine, names, split_classes: dict[str, list[int]], dataset: str, size: int):
    out = {}
    for split, classes in split_classes.items():
        idx = np.concatenate([np.flatnonzero(fine == c) for c in classes])
        x = torch.from_numpy(images[idx])
        if size != 32:
            x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear",
                                                antialias=True).round().clamp(0, 255).to(torch.uint8)
        labels = torch.arange(len(classes)).repeat_interleave(torch.tensor([(fine == c).sum() for c in classes]))
        out[split] = FewShotSplit(x, labels, [names[c] for c in classes], name=f"{dataset}/{split}")
    return out


def load_cifar_fs(root=None, image_size: int = 32) -> dict[str, FewShotSplit]:
    images, fine, _, names, _ = load_cifar100(root)
    held = {s: [names.index(n) for n in CIFAR_FS[s]] for s in ("val", "test")}
    train = [c for c in range(len(names)) if c not in held["val"] + held["test"]]
    return _splits(images, fine, names, {"train": train, **held}, "cifar-fs", image_size)


def load_fc100(root=None, image_size: int = 32) -> dict[str, FewShotSplit]:
    images, fine, coarse, names, supers = load_cifar100(root)
    super_of = {f: int(coarse[np.flatnonzero(fine == f)[0]]) for f in range(len(names))}
    held = {s: {supers.index(n) for n in FC100[s]} for s in ("val", "test")}
    split_classes = {
        "train": [f for f in range(len(names)) if super_of[f] not in held["val"] | held["test"]],
        "val": [f for f in range(len(names)) if super_of[f] in held["val"]],
        "test": [f for f in range(len(names)) if super_of[f] in held["test"]],
    }
    return _splits(images, fine, names, split_classes, "fc100", image_size)


register_dataset(DatasetInfo(
    "cifar-fs", load_cifar_fs, native_size=32, channels=3, natural=True, location="cifar-100-python", decode=decode,
    description="CIFAR-FS, <root>/cifar-100-python (torchvision CIFAR100); 64/16/20 classes, 3x32x32"))
register_dataset(DatasetInfo(
    "fc100", load_fc100, native_size=32, channels=3, natural=True, location="cifar-100-python", decode=decode,
    description="FC100, <root>/cifar-100-python (torchvision CIFAR100); 60/20/20 classes by superclass, 3x32x32"))
