"""Dataset registry: ``load_dataset(name, root)`` returns ``{"train", "val", "test"}`` few-shot splits."""
from __future__ import annotations

from typing import Callable

from egnn.data.base import FewShotSplit
from egnn.data.cifar import load_cifar_fs, load_fc100
from egnn.data.glyphs import load_glyphs
from egnn.data.imagenet import load_mini_imagenet, load_tiered_imagenet
from egnn.data.images import load_folder
from egnn.data.omniglot import load_omniglot
from egnn.data.paths import data_root
from egnn.errors import DataError

DATASETS: dict[str, Callable[..., dict[str, FewShotSplit]]] = {
    "glyphs": load_glyphs,
    "omniglot": load_omniglot,
    "mini-imagenet": load_mini_imagenet,
    "tiered-imagenet": load_tiered_imagenet,
    "cifar-fs": load_cifar_fs,
    "fc100": load_fc100,
    "folder": load_folder,
}
NATIVE_SIZE = {"glyphs": 28, "omniglot": 28, "mini-imagenet": 84, "tiered-imagenet": 84, "cifar-fs": 32,
               "fc100": 32, "folder": 84}
DESCRIPTIONS = {
    "glyphs": "procedural glyphs, embedded (no download); 1000/100/400 classes x 20 images, 1x28x28",
    "omniglot": "Omniglot, torchvision folder layout under <root>/omniglot-py; 4400/400/1692 classes "
                "(1200/423 characters x 4 rotations), 1x28x28",
    "mini-imagenet": "miniImageNet, <root>/mini-imagenet/compacted_datasets/mini_imagenet_{split}.pickle or "
                     "<root>/mini-imagenet/images/ with the Ravi & Larochelle CSVs; 64/16/20 classes, 3x84x84",
    "tiered-imagenet": "tieredImageNet, <root>/tiered-imagenet/compacted_datasets/tiered_imagenet_{split}_{k}.pickle; "
                       "351/97/160 classes, 3x84x84",
    "cifar-fs": "CIFAR-FS, <root>/cifar-100-python (torchvision CIFAR100); 64/16/20 classes, 3x32x32",
    "fc100": "FC100, <root>/cifar-100-python (torchvision CIFAR100); 60/20/20 classes by superclass, 3x32x32",
    "folder": "your images: --data-root PATH with train/ val/ test/ class folders, or class folders and "
              "train.csv / val.csv / test.csv (filename,label); 3x84x84 by default",
}


def load_dataset(name: str, root=None, image_size: int = 0) -> dict[str, FewShotSplit]:
    """Train / val / test splits of a registered dataset; ``image_size=0`` keeps its native size."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}': choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root, image_size=image_size or NATIVE_SIZE[name])


__all__ = ["DATASETS", "DESCRIPTIONS", "NATIVE_SIZE", "FewShotSplit", "data_root", "load_dataset"]
