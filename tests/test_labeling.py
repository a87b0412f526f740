"""The labeling loop behind ``egnn app``: the model proposes, the person accepts or corrects, the rest relabels;
real Omniglot characters laid out as a user's folders, the committed checkpoint."""
import shutil

import pytest
import torch

from egnn import FewShotClassifier
from egnn.errors import UserError
from egnn.labeling import UNKNOWN, LabelingSession
from egnn.unknowns import Calibration, save_calibration
from tests.conftest import read_rows



def tree(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def test_label_moves_the_image_to_the_examples_and_relabels_the_rest(labeling_folders, tmp_path):
    ckpt, support, images = labeling_folders
    before = tree(tmp_path)
    session = LabelingSession(ckpt, support, images, suggestions=3, unknown=False)
    assert len(session.proposals) == 20 and sorted(p.suggested for p in session.proposals if p.suggested) == [1, 2, 3]
    groups = session.groups()
    assert list(groups)[-1] == UNKNOWN and not groups[UNKNOWN]
    for items in groups.values():  # most confident first
        assert [p.confidence for p in items] == sorted((p.confidence for p in items), reverse=True)
    # correct the least confident image to a class the model did not propose (the person knows better), accept
    # another as proposed
    worst = min(session.proposals, key=lambda p: p.confidence)
    truth = next(c for c in session.classes if c != worst.nearest)
    session.label(worst.path, truth)
    assert worst.path not in session.examples[worst.nearest]
    accepted = next(p for p in session.proposals if p.path != worst.path)
    session.label(accepted.path)
    assert len(session.pending) == 18 and worst.path in session.examples[truth]
    assert accepted.path in session.examples[accepted.nearest]
    # the rest is relabeled with the examples as they now stand: what a fresh classifier says on them
    clf = FewShotClassifier.load(ckpt, device="cpu")
    clf.fit([p for c in session.classes for p in session.examples[c]],
            [c for c in session.classes for _ in session.examples[c]])
    want = clf.predict_proba(session.pending)
    got = torch.tensor([p.confidence for p in session.proposals])
    torch.testing.assert_close(got, want.max(-1).values, rtol=1e-5, atol=1e-6)
    assert [p.nearest for p in session.proposals] == [clf.classes_[i] for i in want.argmax(-1).tolist()]
    # the CSV: every image once, the person's two labels as given
    out = session.write_csv(tmp_path / "out" / "labels.csv")
    rows = {r["path"]: r for r in read_rows(out)}
    assert len(rows) == 20 and rows[str(worst.path)]["label"] == truth and rows[str(worst.path)]["by"] == "person"
    assert sum(r["by"] == "person" for r in rows.values()) == 2
    # nothing but the CSV was written
    after = tree(tmp_path)
    assert {p for p in after if p not in before or after[p] != before[p]} == {out.parent, out}


def test_unknowns_need_a_saved_calibration_and_go_apart(labeling_folders):
    ckpt, support, images = labeling_folders
    session = LabelingSession(ckpt, support, images, suggestions=0)
    assert session.notice.startswith("no unknowns") and "egnn calibrate" in session.notice
    assert all(p.label != UNKNOWN for p in session.proposals)
    base = dict(rate=0.05, query=5, unknown_classes=2, episodes=1, split="omniglot/val", seed=0, known_queries=1)
    save_calibration(ckpt, Calibration(threshold=1.01, way=4, shot=1, transductive=True, **base))  # above all
    session.relabel()
    assert all(p.label == UNKNOWN for p in session.proposals) and len(session.groups()[UNKNOWN]) == 20
    session.label(session.proposals[0].path)  # accepting an unknown gives it its nearest class
    assert session.proposals and len(session.pending) == 19


def test_bad_input_is_a_one_line_error(labeling_folders, tmp_path):
    ckpt, support, images = labeling_folders
    with pytest.raises(UserError, match="checkpoint .* not found"):
        LabelingSession(tmp_path / "none.pt", support, images)
    with pytest.raises(UserError, match="no images to label"):
        LabelingSession(ckpt, support, [])
    with pytest.raises(UserError, match="one class"):
        one = tmp_path / "one"
        shutil.copytree(next(support.iterdir()), one / "only")
        LabelingSession(ckpt, one, images)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(UserError, match="bad.png"):
        LabelingSession(ckpt, support, images + [bad])
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="truncated or corrupt"):
        LabelingSession(foreign, support, images)
    session = LabelingSession(ckpt, support, images, unknown=False)
    with pytest.raises(UserError, match="not a class here"):
        session.label(images[0], "no-such-class")
    with pytest.raises(UserError, match="not among the images still to label"):
        session.label(tmp_path / "elsewhere.png")
