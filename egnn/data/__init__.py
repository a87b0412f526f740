"""Dataset registry: ``load_dataset(name, root)`` returns ``{"train", "val", "test"}`` few-shot splits.

Each dataset registers itself once (:func:`~egnn.data.registry.register_dataset`) in the module that loads it;
importing this package imports them all, in the order ``egnn datasets`` lists them.
"""
from __future__ import annotations

from egnn.data import glyphs, omniglot, imagenet, cifar, images  # noqa: F401  (each registers its datasets)
from egnn.data.base import FewShotSplit
from egnn.data.paths import data_root
from egnn.data.registry import DATASETS, DatasetInfo, dataset_info, register_dataset


def load_dataset(name: str, root=None, image_size: int = 0) -> dict[str, FewShotSplit]:
    """Train / val / test splits of a registered dataset; ``image_size=0`` keeps its native size."""
    info = dataset_info(name)
    return info.load(root, image_size=image_size or info.native_size)


__all__ = ["DATASETS", "DatasetInfo", "FewShotSplit", "data_root", "dataset_info", "load_dataset", "register_dataset"]
