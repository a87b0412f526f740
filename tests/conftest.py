import copy
import functools
import os
from pathlib import Path

import pytest
import torch

from egnn.backbones import create_backbone
from egnn.episodes import Episode
from egnn.config import make_config
from egnn.methods import EGNNMethod, method_class

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """The CPU suite stays a CPU suite on a GPU machine (``--device auto`` would otherwise pick the GPU); the
    GPU suite runs with ``pytest -m cuda tests/gpu``. Set before anything initialises CUDA."""
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (run with -m cuda)")
    if "cuda" not in (config.getoption("markexpr", "") or ""):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("EGNN_DATA", str(REPO.parent / "shared" / "data"))


def make_episode(way=3, shot=2, query=2, labeled_shots=None, seed=0, size=28) -> Episode:
    """A hand-built episode of random images: supports first, grouped by label, then queries."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.arange(way).repeat_interleave(shot), torch.arange(way).repeat_interleave(query)])
    images = torch.randint(0, 256, (labels.numel(), 1, size, size), generator=g, dtype=torch.uint8)
    k = shot if labeled_shots is None else labeled_shots
    labeled = (torch.arange(shot) < k).repeat(way)
    return Episode(images, labels, labeled, torch.arange(way), way, shot, query)


def make_method(seed=0, layers=3, model="egnn"):
    return copy.deepcopy(_calibrated_method(seed, layers, model))


@functools.lru_cache(maxsize=None)
def _calibrated_method(seed: int, layers: int, model: str):
    """A small EGNN in eval mode whose BatchNorm statistics were calibrated on random episodes, so its
    similarities are not saturated and every node's output depends only on the graph, not on batch statistics."""
    from egnn.graph import collate

    torch.manual_seed(seed)
    backbone = create_backbone("conv4", in_channels=1, image_size=28, out_features=32)
    method = (EGNNMethod(backbone, num_layers=layers, node_features=16, edge_features=16) if model == "egnn"
              else method_class(model).from_config(backbone, make_config(model=model, layers=layers, node_features=16)))
    with torch.no_grad():
        for i in range(8):
            method(collate([make_episode(seed=100 + 4 * i + j) for j in range(4)]), transductive=True)
    return method.eval()


@pytest.fixture(scope="session")
def omniglot_root():
    root = Path(os.environ["EGNN_DATA"])
    if not (root / "omniglot-py" / "images_background").is_dir():
        pytest.skip(f"real Omniglot not found under {root}")
    return root
