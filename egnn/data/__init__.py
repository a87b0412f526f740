"""Dataset registry: ``load_dataset(name, root)`` returns ``{"train", "val", "test"}`` few-shot splits."""
from __future__ import annotations

from typing import Callable

from egnn.data.base import FewShotSplit
from egnn.data.glyphs import load_glyphs
from egnn.data.omniglot import load_omniglot
from egnn.data.paths import data_root
from egnn.errors import DataError

DATASETS: dict[str, Callable[..., dict[str, FewShotSplit]]] = {
    "glyphs": load_glyphs,
    "omniglot": load_omniglot,
}
DESCRIPTIONS = {
    "glyphs": "procedural glyphs, embedded (no download); 1000/100/400 classes x 20 images, 1x28x28",
    "omniglot": "Omniglot, torchvision folder layout under <root>/omniglot-py; 4400/400/1692 classes "
                "(1200/423 characters x 4 rotations), 1x28x28",
}


def load_dataset(name: str, root=None, image_size: int = 28) -> dict[str, FewShotSplit]:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}': choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root, image_size=image_size)


__all__ = ["DATASETS", "DESCRIPTIONS", "FewShotSplit", "data_root", "load_dataset"]
