"""``egnn predict`` on the user's own folders: real Omniglot characters laid out as a user would, with the
committed Omniglot checkpoint."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from egnn.data import FewShotSplit, load_dataset
from egnn.episodes import EpisodeSampler
from egnn.graph import collate
from egnn.predict import contact_sheet, predict
from egnn.evaluation import evaluate
from egnn.models import load_trained

from tests.conftest import REPO, assert_user_error, cli, read_rows, test_characters, user_folders

CHECKPOINT = REPO / "results" / "checkpoints" / "omniglot_5w1s.pt"


def accuracy(rows: list[dict[str, str]]) -> float:
    return float(np.mean([Path(r["path"]).parent.name == r["predicted"] for r in rows]))


def write_episode(episode, root: Path) -> tuple[Path, Path]:
    """An Omniglot episode as user folders: ``c07/s00.png`` supports, ``q/c07_q03.png`` queries, in dark ink on
    white as Omniglot's files are; sorted names keep the episode's node order."""
    s = episode.way * episode.shot
    for i, (img, label) in enumerate(zip(episode.images, episode.labels)):
        folder = root / "support" / f"c{int(label):02d}" if i < s else root / "query"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"s{i:03d}.png" if i < s else f"q{i:03d}.png"
        Image.fromarray(255 - img[0].numpy()).save(folder / name)
    return root / "support", root / "query"


@pytest.fixture(scope="module")
def test_split(omniglot_root):
    return load_dataset("omniglot", omniglot_root)["test"]


@pytest.mark.parametrize("transductive, knn, query_batch", [(True, 0, 256), (True, 6, 256), (False, 0, 7)])
def test_predict_equals_the_method_on_the_same_episode(test_split, tmp_path, transductive, knn, query_batch):
    """Folders written from an evaluation episode get exactly the scores the method gives that episode: images
    are read back bit for bit (ink inverted, no resize at 28 px), supports and queries keep their order, query
    labels never reach the model, and chunking the non-transductive queries changes nothing."""
    episode = EpisodeSampler(test_split, 5, 2, 5, seed=3).episode(11)
    support, query = write_episode(episode, tmp_path)
    got = predict(CHECKPOINT, support, query, transductive=transductive, knn=knn, query_batch=query_batch, device="cpu")
    method, _ = load_trained(CHECKPOINT)
    method.knn = knn
    with torch.inference_mode():
        out = method(collate([episode], full_edges=not method.builds_own_edges(transductive)), transductive=transductive)
    want = method.class_probabilities(out.logits[0], torch.full((5,), 2))
    assert got.classes == [f"c{c:02d}" for c in range(5)]
    torch.testing.assert_close(got.probabilities, want, rtol=1e-5, atol=1e-6)
    # with 2 shots for every class, EGNN's probabilities are its vote over the labeled supports, normalised
    torch.testing.assert_close(got.probabilities, out.logits[0] / out.logits[0].sum(-1, keepdim=True), rtol=1e-5,
                               atol=1e-6)


def test_predict_labels_user_folders_at_the_accuracy_egnn_eval_reports(omniglot_root, test_split, tmp_path):
    """20 characters x 1 support and 19 queries, laid out as user folders, twice with other characters: the
    accuracy of the CSVs agrees with ``egnn eval``'s 20-way 1-shot, 19-query protocol on the same (upright)
    test classes, within the spread of single episodes (one arrangement is one episode; the bound is 2.58
    sigma of the difference of the two means)."""
    accs = []
    for k in range(2):
        support, query = user_folders(tmp_path / f"user{k}", test_characters(omniglot_root, 20, seed=k), [1] * 20)
        out = tmp_path / f"user{k}.csv"
        proc = cli("predict", "--checkpoint", CHECKPOINT, "--support", support, "--query", query, "--out", out,
                    "--device", "cpu", *(["--report", tmp_path / "report"] if k == 0 else []))
        assert proc.returncode == 0, proc.stderr
        assert "labeled 380 images into 20 classes (1 supports each), transductive" in proc.stdout
        rows = read_rows(out)
        assert len(rows) == 380 and list(rows[0]) == ["path", "predicted", "confidence", "runner_up",
                                                       "runner_up_confidence", "nearest", "known_score", "suggested"]
        for r in rows:
            assert 0 <= float(r["runner_up_confidence"]) <= float(r["confidence"]) <= 1
            assert r["predicted"] != r["runner_up"] and r["predicted"] == r["nearest"]  # without --unknown
            assert 0 <= float(r["known_score"]) <= 1 and r["suggested"] == ""
        accs.append(accuracy(rows))
    sheet = Image.open(tmp_path / "report" / "contact_sheet.png")
    assert sheet.width > 500 and sheet.height > 20 * 64  # a row of tiles per class at least
    method, _ = load_trained(CHECKPOINT)
    keep = test_split.labels % 4 == 0  # the folders hold upright characters: evaluate on the rotation-0 classes
    upright = FewShotSplit(test_split.images[keep], test_split.labels[keep] // 4, test_split.class_names[::4])
    ref = evaluate(method, upright, way=20, shot=1, query=19, episodes=24, transductive=True, batch_size=8,
                   device="cpu")
    spread = np.std(ref.per_episode, ddof=1)
    bound = 2.58 * spread * np.sqrt(1 / len(accs) + 1 / len(ref.per_episode))
    assert abs(np.mean(accs) - ref.accuracy) <= bound, (accs, ref.accuracy, bound)
    assert np.mean(accs) > 0.5  # and it is a real model: chance is 0.05


def test_uneven_shots_and_the_other_modes(omniglot_root, tmp_path):
    """Classes with 1, 2, 3 and 5 examples; transductive on a sparse kNN graph and non-transductive: each labels the
    24 images at twice chance or better (the committed model, trained transductively on dense 5-way graphs, gets
    all 24 right on the dense graph, 23 at --knn 8, 16 at --knn 4 and 16 non-transductive)."""
    support, query = user_folders(tmp_path, test_characters(omniglot_root, 4, seed=7), [1, 2, 3, 5], queries=6)
    for flags, mode in ((["--knn", 4], "transductive (knn4 graph)"), (["--no-transductive"], "non-transductive")):
        out = tmp_path / "p.csv"
        proc = cli("predict", "--checkpoint", CHECKPOINT, "--support", support, "--query", query, "--out", out,
                    "--device", "cpu", *flags)
        assert proc.returncode == 0, proc.stderr
        assert f"(1-5 supports each), {mode}" in proc.stdout
        rows = read_rows(out)
        assert len(rows) == 24 and accuracy(rows) >= 0.5


def test_egnn_vote_is_a_per_class_mean_with_uneven_shots():
    """Two classes, one with 3 supports of similarity 0.5, one with 1 of 0.9: the vote sums 1.5 against 0.9,
    the probabilities compare the means, 0.5 against 0.9."""
    from conftest import make_method

    votes = torch.tensor([[1.5, 0.9]])
    p = make_method().class_probabilities(votes, torch.tensor([3, 1]))
    torch.testing.assert_close(p, torch.tensor([[0.5 / 1.4, 0.9 / 1.4]]))
    even = make_method().class_probabilities(torch.tensor([[1.0, 3.0]]), torch.tensor([2, 2]))
    torch.testing.assert_close(even, torch.tensor([[0.25, 0.75]]))


def test_contact_sheet_flags_the_least_confident(tmp_path):
    from egnn.predict import Predictions

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
    paths = []
    for i in range(6):
        p = tmp_path / ("a" if i < 3 else "b") / f"{i}.png"
        Image.fromarray(np.full((30, 20), 40 * i, np.uint8)).save(p)
        paths.append(p)
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.3, 0.7]])
    pred = Predictions(["a", "b"], {"a": [paths[0]], "b": [paths[3]]}, [paths[i] for i in (1, 2, 4, 5, 0)], probs,
                       "transductive", "ckpt", "cpu", 0.0)
    drawn = contact_sheet(pred, tmp_path / "sheet.png", flag_fraction=0.4)
    assert drawn["flagged"] == [str(paths[i]) for i in (2, 5)]  # confidences 0.6 and 0.55, the two lowest
    assert drawn["flag_threshold"] == pytest.approx(0.6)
    assert Image.open(tmp_path / "sheet.png").format == "PNG"


@pytest.mark.parametrize("case, needles", [
    ("missing support", ["support folder", "not found", "--support"]),
    ("no classes", ["has no class subfolders"]),
    ("empty class", ["holds no image", "b"]),
    ("one class", ["has one class"]),
    ("empty query", ["query folder", "holds no image"]),
    ("unreadable image", ["cannot read image", "broken.png"]),
    ("not a checkpoint", ["not an egnn checkpoint"]),
    ("too large for a dense graph", ["one dense transductive graph", "--knn 20"]),
])
def test_bad_input_is_one_line_and_leaves_no_csv(tmp_path, case, needles):
    support, query, ckpt, env = tmp_path / "s", tmp_path / "q", CHECKPOINT, {}
    for c in ("a", "b"):
        (support / c).mkdir(parents=True)
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(support / c / "x.png")
    query.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(query / "y.png")
    if case == "missing support":
        support = tmp_path / "nowhere"
    elif case == "no classes":
        shutil.rmtree(support / "a"), shutil.rmtree(support / "b")
    elif case == "empty class":
        (support / "b" / "x.png").unlink()
    elif case == "one class":
        shutil.rmtree(support / "b")
    elif case == "empty query":
        (query / "y.png").unlink()
    elif case == "unreadable image":
        (query / "broken.png").write_bytes(b"not a png")
    elif case == "not a checkpoint":
        ckpt = tmp_path / "junk.pt"
        torch.save({"weights": torch.zeros(3)}, ckpt)
    elif case == "too large for a dense graph":
        env = {"EGNN_MEMORY_GB": "0.000001"}
    out = tmp_path / "out.csv"
    proc = cli("predict", "--checkpoint", ckpt, "--support", support, "--query", query, "--out", out,
                "--device", "cpu", env=env)
    assert_user_error(proc, *needles)
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))
