import copy
import csv
import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from egnn.backbones import create_backbone
from egnn.episodes import Episode
from egnn.config import make_config
from egnn.data import FewShotSplit
from egnn.data.glyphs import make_glyphs
from egnn.methods import EGNNMethod, method_class
from egnn.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent


def selects_gpu_tests(markexpr: str) -> bool:
    """Whether ``-m markexpr`` selects the tests marked ``cuda`` (``cuda``, ``cuda and not slow``), rather than
    merely naming the marker (``not cuda``). Evaluated as pytest evaluates it, for a test marked cuda alone."""
    from _pytest.mark.expression import Expression

    return bool(markexpr) and Expression.compile(markexpr).evaluate(lambda name: name == "cuda")


def pytest_configure(config):
    """The CPU suite stays a CPU suite on a GPU machine (``--device auto`` would otherwise pick the GPU); the
    GPU suite runs with ``pytest -m cuda tests/gpu``. Set before anything initialises CUDA."""
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (run with -m cuda)")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: a second thread each would oversubscribe the
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # cores, and OpenMP's spinning then slows a test tenfold
        torch.set_num_threads(1)
    if not selects_gpu_tests(config.getoption("markexpr", "") or ""):
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


# -- helpers shared by the test modules (imported from here, never from one another) ----------------------------
def egnn(*args, env=None, timeout=600):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "egnn.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def cli(*args, env=None):
    """``egnn ARGS`` in this process (the same ``main`` as the console script, without ~5 s of importing torch in a
    new process): a ``CompletedProcess`` with the exit code and what it printed. A crash is raised, not returned."""
    import contextlib
    import io
    from unittest import mock

    from egnn.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = ["egnn", *map(str, args)]
    with mock.patch.object(sys, "argv", argv), mock.patch.dict(os.environ, env or {}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def assert_user_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


NO_NETWORK = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def small_splits():
    out = {}
    for i, (name, n) in enumerate({"train": 12, "val": 6, "test": 6}.items()):
        imgs = make_glyphs(n, seed=50 + i)
        out[name] = FewShotSplit(imgs.flatten(0, 1), torch.arange(n).repeat_interleave(20),
                                 [f"{name}{c}" for c in range(n)], name=f"tiny/{name}")
    return out


SPLITS = small_splits()


def tiny_config(out, **kw):
    base = dict(way=3, shot=1, query=2, eval_query=2, iterations=6, tasks_per_batch=4, val_every=3, val_episodes=4,
                test_episodes=6, eval_batch=3, embedding=16, node_features=8, edge_features=8, out=str(out), seed=3,
                query_max=0)
    base.update(kw)
    return make_config(**base)


def fit(cfg, resume=False):
    trainer = Trainer(cfg, SPLITS)
    trainer.fit(resume=resume, progress=False)
    return trainer


def kill_after_checkpoint(cmd, last, grace: float) -> int:
    """Start ``cmd``, kill -9 it ``grace`` seconds after it writes ``last``; the iteration ``last`` then holds."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(grace)  # let it train past the checkpoint
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return torch.load(last, weights_only=False)["iteration"]


# -- user folders of real Omniglot characters (egnn predict, the unknowns, the app) ----------------------------
def user_folders(root: Path, characters: list[Path], shots: list[int], queries: int | None = None) -> tuple[Path, Path]:
    """``support/<character>/`` with the first ``shot`` drawings of each character, ``query/<character>/`` with
    (up to ``queries`` of) the rest: the original 105x105 PNGs, as a user would have them."""
    for char, shot in zip(characters, shots):
        files = sorted(char.glob("*.png"))
        name = f"{char.parent.name}_{char.name}"
        for sub, chosen in (("support", files[:shot]), ("query", files[shot:][:queries])):
            (root / sub / name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, root / sub / name / f.name)
    return root / "support", root / "query"


def test_characters(omniglot_root, count, seed):
    """Test-split characters of Omniglot (ids 1201-1623, all in images_evaluation), drawn with ``seed``."""
    chars = sorted(Path(omniglot_root, "omniglot-py", "images_evaluation").glob("*/*"))
    chars = [c for c in chars if int(next(c.glob("*.png")).name[:4]) > 1200]
    return random.Random(seed).sample(chars, count)


test_characters.__test__ = False  # a helper, not a test


@pytest.fixture
def labeling_folders(omniglot_root, tmp_path):
    """What a person labeling a folder has (egnn app, LabelingSession): a copy of the committed checkpoint, one
    example each of 4 test characters, and their 20 other drawings to label."""
    ckpt = tmp_path / "model" / "best.pt"
    ckpt.parent.mkdir()
    shutil.copy(REPO / "results" / "checkpoints" / "omniglot_5w1s.pt", ckpt)
    support, query = user_folders(tmp_path / "user", test_characters(omniglot_root, 4, seed=21), [1] * 4, queries=5)
    return ckpt, support, sorted(query.rglob("*.png"))


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
