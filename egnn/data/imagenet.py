"""miniImageNet and tieredImageNet, from the EGNN reference code's compacted pickles or an image folder.

* miniImageNet: ``<root>/mini-imagenet/compacted_datasets/mini_imagenet_{train,val,test}.pickle`` (a dict of
  class -> list of 84x84x3 uint8 arrays), else ``<root>/mini-imagenet/images/<file>`` with the Ravi & Larochelle
  split CSVs shipped in ``egnn/data/splits/miniimagenet`` (MIT, Twitter, Inc.; see the README there).
* tieredImageNet: ``<root>/tiered-imagenet/compacted_datasets/tiered_imagenet_{split}_{k}.pickle`` chunks,
  each such a dict; 351 / 97 / 160 classes.
"""
from __future__ import annotations

from pathlib import Path

from egnn.data.base import FewShotSplit
from egnn.data.images import SPLITS, cached, decode, load_folder, read_pickle, split_from_arrays
from egnn.data.paths import data_root, stamp
from egnn.data.registry import DatasetInfo, register_dataset
from egnn.errors import DataError

MINI_SPLITS = Path(__file__).parent / "splits" / "miniimagenet"


def load_mini_imagenet(root=None, image_size: int = 84) -> dict[str, FewShotSplit]:
    base = data_root(root) / "mini-imagenet"
    pickles = {s: base / "compacted_datasets" / f"mini_imagenet_{s}.pickle" for s in SPLITS}
    if all(p.is_file() for p in pickles.values()):
        return cached(f"mini:{base.resolve()}:{stamp(pickles.values())}:{image_size}", lambda: {
            s: split_from_arrays(read_pickle(p), image_size, f"mini-imagenet/{s}", p) for s, p in pickles.items()})
    if (base / "images").is_dir():
        return load_folder(base, image_size, 3, "mini-imagenet", {s: MINI_SPLITS / f"{s}.csv" for s in SPLITS})
    raise DataError(f"miniImageNet not found: expected {pickles['train'].parent}/mini_imagenet_{{train,val,test}}"
                    f".pickle or {base}/images/ (ImageNet files named as in the Ravi & Larochelle CSVs); pass "
                    f"--data-root or set EGNN_DATA")


def load_tiered_imagenet(root=None, image_size: int = 84) -> dict[str, FewShotSplit]:
    base = data_root(root) / "tiered-imagenet" / "compacted_datasets"
    chunks = {s: sorted(base.glob(f"tiered_imagenet_{s}_*.pickle")) for s in SPLITS}
    empty = [s for s, c in chunks.items() if not c]
    if empty:
        raise DataError(f"tieredImageNet not found: no {base}/tiered_imagenet_{empty[0]}_<k>.pickle; pass "
                        f"--data-root or set EGNN_DATA")

    def build():
        out = {}
        for s, files in chunks.items():
            merged: dict = {}
            for f in files:
                for c, imgs in read_pickle(f).items():
                    merged.setdefault(c, []).extend(imgs)
            out[s] = split_from_arrays(merged, image_size, f"tiered-imagenet/{s}", files[0].parent)
        return out

    return cached(f"tiered:{base.resolve()}:{stamp(sum(chunks.values(), []))}:{image_size}", build)


register_dataset(DatasetInfo(
    "mini-imagenet", load_mini_imagenet, native_size=84, channels=3, natural=True, location="mini-imagenet",
    decode=decode, description="miniImageNet, <root>/mini-imagenet/compacted_datasets/mini_imagenet_{split}.pickle "
                               "or <root>/mini-imagenet/images/ with the Ravi & Larochelle CSVs; 64/16/20 classes, 3x84x84"))
register_dataset(DatasetInfo(
    "tiered-imagenet", load_tiered_imagenet, native_size=84, channels=3, natural=True, location="tiered-imagenet",
    decode=decode, description="tieredImageNet, <root>/tiered-imagenet/compacted_datasets/"
                               "tiered_imagenet_{split}_{k}.pickle; 351/97/160 classes, 3x84x84"))
