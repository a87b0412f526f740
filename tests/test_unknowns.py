""""None of these": open-set episodes, EGNN's known-score read off its edges, the calibrated threshold, and
``egnn predict --unknown`` on real Omniglot characters absent from the supports."""
import json

import pytest
import torch

from egnn import FewShotClassifier
from egnn.data import load_dataset
from egnn.errors import UserError
from egnn.unknowns import (Calibration, auroc, calibrate, calibration_file, find_calibration, open_set_episodes,
                           save_calibration)
from tests.conftest import REPO, assert_user_error, cli, read_rows, test_characters, user_folders

CHECKPOINT = REPO / "results" / "checkpoints" / "omniglot_5w1s.pt"


@pytest.fixture(scope="module")
def glyphs():
    return load_dataset("glyphs")


def test_auroc_by_hand():
    # unknown (0.1, 0.2) against known (0.3, 0.15): of 4 pairs, the unknown is lower in 3
    assert auroc(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.15])) == pytest.approx(0.75)
    # ties count half: 0.2 vs 0.2 is one half pair, 0.1 < 0.2 a whole one
    assert auroc(torch.tensor([0.1, 0.2]), torch.tensor([0.2])) == pytest.approx(0.75)
    assert auroc(torch.tensor([0.9]), torch.tensor([0.1, 0.2])) == 0.0


def test_open_set_episodes_withhold_the_absent_classes(glyphs):
    split = glyphs["val"]
    eps = list(open_set_episodes(split, way=3, shot=2, query=4, unknown=2, episodes=3, seed=5))
    for ep in eps:
        assert ep.support.shape[0] == 6 and sorted(ep.support_labels.tolist()) == [0, 0, 1, 1, 2, 2]
        assert ep.query.shape[0] == 20 and (ep.query_labels == -1).sum() == 8
        # each support image is one of its class's images; each query one of its class's, or of an absent class's
        def images_of(c):
            start = int(split.class_offsets[ep.classes[c]])
            return split.images[start:start + int(split.class_counts[ep.classes[c]])]

        def owner(img):
            return next(c for c in range(5) if (images_of(c) == img).flatten(1).all(1).any())

        assert [owner(im) for im in ep.support] == ep.support_labels.tolist()
        assert [owner(im) if owner(im) < 3 else -1 for im in ep.query] == ep.query_labels.tolist()
    again = next(open_set_episodes(split, 3, 2, 4, 2, 1, seed=5))
    assert torch.equal(again.query, eps[0].query)  # a pure function of (seed, index)


def test_egnn_known_score_is_the_mean_edge_similarity_to_the_best_class(glyphs):
    """Read by hand off the final layer's edges: a query's mean similarity to each class's labeled examples (uneven
    shots), the best of these."""
    from torch_geometric.data import Batch

    from egnn.graph import support_query_graph

    clf = FewShotClassifier.load(CHECKPOINT, device="cpu")
    test = glyphs["test"]
    images = test.images[test.labels < 3].view(3, 20, 1, 28, 28)
    support = torch.cat([images[0, :3], images[1, :1], images[2, :2]])
    queries = torch.cat([images[0, 5:7], images[1, 5:7], images[2, 5:7]])
    clf.fit(support, ["a", "a", "a", "b", "c", "c"])
    got = clf.score(queries)
    x = torch.cat([support, queries])
    y = torch.tensor([0, 0, 0, 1, 2, 2] + [-1] * 6)
    graph = support_query_graph(x, y, 6, torch.arange(12) < 6, 3)
    with torch.inference_mode():
        out = clf.method(Batch.from_data_list([graph]), transductive=True)
    sim = out.extras["edges"][-1, 0, 6:, :6, 0]  # (queries, supports)
    per_class = torch.stack([sim[:, :3].mean(1), sim[:, 3:4].mean(1), sim[:, 4:6].mean(1)], 1)
    torch.testing.assert_close(got.known, per_class.max(1).values, rtol=1e-5, atol=1e-6)
    # and the class probabilities are these means normalised (not the vote's sums: 3 examples would outvote 1)
    torch.testing.assert_close(got.probabilities, per_class / per_class.sum(1, keepdim=True), rtol=1e-5, atol=1e-6)
    assert got.affinity.shape == (6, 6)
    torch.testing.assert_close(got.affinity, (out.extras["edges"][-1, 0, 6:, 6:, 0] +
                                              out.extras["edges"][-1, 0, 6:, 6:, 0].T) / 2, rtol=1e-5, atol=1e-6)


def test_calibration_reaches_its_rate_on_the_episodes_it_saw(glyphs):
    """The threshold is the rate-quantile of the known queries' scores: re-scoring the same episodes, 10% of the
    known queries fall under it (to one query); the absent classes' queries are left out of the count."""
    clf = FewShotClassifier.load(CHECKPOINT, device="cpu")
    val = glyphs["val"]
    cal = calibrate(clf, val, way=3, shot=1, rate=0.1, query=3, unknown=2, episodes=10, seed=3)
    assert cal.known_queries == 10 * 3 * 3 and cal.split == val.name and cal.transductive
    known, absent = [], []
    for ep in open_set_episodes(val, 3, 1, 3, 2, 10, seed=3):
        clf.fit(ep.support, ep.support_labels.tolist())
        s = clf.score(ep.query).known
        known.append(s[ep.query_labels >= 0])
        absent.append(s[ep.query_labels < 0])
    known = torch.cat(known)
    below = int((known < cal.threshold).sum())
    assert abs(below - 0.1 * known.numel()) <= 1
    # a threshold from these known queries alone: where the absent ones fell does not move it
    assert cal.threshold == pytest.approx(float(torch.quantile(known.double(), 0.1)), abs=1e-6)


def test_calibrations_are_saved_beside_the_checkpoint_and_found_by_shape(tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"")
    base = dict(rate=0.05, query=5, unknown_classes=2, episodes=10, transductive=True, split="x/val", seed=0,
                known_queries=50)
    save_calibration(ckpt, Calibration(threshold=0.4, way=5, shot=1, **base))
    save_calibration(ckpt, Calibration(threshold=0.3, way=20, shot=1, **base))
    assert find_calibration(ckpt, 5, 1, True).threshold == 0.4
    assert find_calibration(ckpt, 18, 1, True).threshold == 0.3  # the nearest shape
    assert find_calibration(ckpt, 5, 1, False) is None  # another mode is another calibration
    assert find_calibration(ckpt, 5, 1, True, rate=0.1) is None
    calibration_file(ckpt).write_text("{not json")
    with pytest.raises(UserError, match="not a calibration file"):
        find_calibration(ckpt, 5, 1, True)


def test_predict_answers_unknown_for_characters_absent_from_the_supports(omniglot_root, tmp_path):
    """Real Omniglot test characters: 5 with one example each, queries of those and of 3 absent characters; with
    a threshold calibrated on the validation characters (here, saved beside a copy of the checkpoint), most absent
    queries are called unknown and most known ones keep their class."""
    import shutil

    ckpt = tmp_path / "model" / "best.pt"
    ckpt.parent.mkdir()
    shutil.copy(CHECKPOINT, ckpt)
    chars = test_characters(omniglot_root, 8, seed=11)
    support, query = user_folders(tmp_path / "user", chars, [1] * 5 + [0] * 3, queries=6)
    for absent in chars[5:]:  # absent characters: no support folder at all
        shutil.rmtree(support / f"{absent.parent.name}_{absent.name}", ignore_errors=True)
    out = tmp_path / "labels.csv"
    proc = cli("predict", "--checkpoint", ckpt, "--support", support, "--query", query, "--out", out, "--unknown",
               "--suggest", 4, "--data-root", omniglot_root, "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(calibration_file(ckpt).read_text())["calibrations"]
    assert list(saved) == ["5-way 1-shot transductive rate 0.05"]
    rows = read_rows(out)
    absent_names = {f"{c.parent.name}_{c.name}" for c in chars[5:]}
    truth = [r["path"].split("/")[-2] for r in rows]
    called = [r["predicted"] == "unknown" for r in rows]
    absent_hit = sum(c for c, t in zip(called, truth) if t in absent_names) / (3 * 6)
    known_right = sum(r["predicted"] == t for r, t in zip(rows, truth) if t not in absent_names) / (5 * 6)
    assert absent_hit >= 0.5 and known_right >= 0.8, (absent_hit, known_right)
    assert sorted(int(r["suggested"]) for r in rows if r["suggested"]) == [1, 2, 3, 4]
    assert all(r["nearest"] != "unknown" for r in rows)
    # a given threshold wins over the calibration: above every known-score, every image is unknown
    proc = cli("predict", "--checkpoint", ckpt, "--support", support, "--query", query, "--out", out,
               "--unknown-threshold", 1.01, "--device", "cpu", "--quiet")
    assert proc.returncode == 0 and all(r["predicted"] == "unknown" for r in read_rows(out))


def test_unknown_without_a_calibration_or_the_data_is_one_line(tmp_path, omniglot_root):
    import shutil

    ckpt = tmp_path / "best.pt"
    shutil.copy(CHECKPOINT, ckpt)
    chars = test_characters(omniglot_root, 2, seed=1)
    support, query = user_folders(tmp_path / "user", chars, [1, 1], queries=2)
    proc = cli("predict", "--checkpoint", ckpt, "--support", support, "--query", query, "--out", tmp_path / "x.csv",
               "--unknown", "--data-root", tmp_path / "nowhere", "--quiet")
    assert_user_error(proc, "no unknown threshold saved", "--unknown-threshold")
    assert not (tmp_path / "x.csv").exists() and not calibration_file(ckpt).exists()
    assert_user_error(cli("predict", "--checkpoint", ckpt, "--support", support, "--query", query,
                          "--unknown-rate", 1.5), "--unknown-rate")


def test_more_shots_than_a_class_allows_calibrate_with_what_it_has_under_the_shot_asked(glyphs, tmp_path):
    """A glyph class has 20 images: 25 examples with 3 queries are calibrated with 17, and saved under 25 shots, so
    that the next predict with 25 examples per class finds it instead of calibrating again."""
    from egnn.predict import unknown_threshold

    clf = FewShotClassifier.load(CHECKPOINT, device="cpu")
    val = glyphs["val"]
    cal = calibrate(clf, val, way=3, shot=25, rate=0.2, query=3, unknown=1, episodes=2, seed=1)
    assert (cal.shot, cal.shot_used) == (25, 17) and "3-way 25-shot" in cal.key()
    known = []
    for ep in open_set_episodes(val, 3, 17, 3, 1, 2, seed=1):
        assert ep.support.shape[0] == 3 * 17
        clf.fit(ep.support, ep.support_labels.tolist())
        s = clf.score(ep.query).known
        known.append(s[ep.query_labels >= 0])
    assert cal.threshold == pytest.approx(float(torch.quantile(torch.cat(known).double(), 0.2)), abs=1e-6)
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"")
    save_calibration(ckpt, cal)
    threshold, how = unknown_threshold(clf, ckpt, [25, 25, 25], 0.2, None, None, calibrate_now=False)
    assert threshold == cal.threshold and "3-way 25-shot (calibrated with 17" in how
