"""`egnn import-reference`: models trained by the original EGNN code become egnn runs that predict what the
original predicts."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from egnn.episodes import EpisodeSampler
from egnn.graph import collate
from egnn.trainer import load_trained
from tests.test_cli import assert_user_error, egnn
from tests.test_reference_golden import batch, fixture, weights

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference" / "fewshot-egnn"


def original_checkpoint(path: Path) -> Path:
    """The fixture's weights in the original's checkpoint layout (what its ModelTrainer.save_checkpoint writes)."""
    f = fixture()
    enc, gnn = weights(f["enc_weights"]), weights(f["gnn_weights"])
    for state in (enc, gnn):
        for k in [k for k in state if k.endswith("running_var")]:
            state[k.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    torch.save({"iteration": 7, "enc_module_state_dict": enc, "gnn_module_state_dict": gnn, "val_acc": 0.5,
                "optimizer": {}}, path)
    return path


@pytest.mark.parametrize("mode, transductive", [("transductive", True), ("non_transductive", False)])
def test_import_round_trip_reproduces_the_originals_scores(tmp_path, mode, transductive):
    """Imported through the CLI, the fixture's original-layout checkpoint scores the fixture's episodes as the
    original's eval() did (mini-imagenet inputs: the original's own normalisation, no inversion)."""
    ckpt = original_checkpoint(tmp_path / "checkpoint.pth.tar")
    proc = egnn("import-reference", ckpt, "--out", tmp_path / "run", "--dataset", "mini-imagenet", "--way", 3,
                "--shot", 2)
    assert proc.returncode == 0, proc.stderr
    assert "egnn eval --checkpoint" in proc.stdout
    method, cfg = load_trained(tmp_path / "run" / "best.pt")
    assert (cfg.embedding, cfg.node_features, cfg.edge_features, cfg.layers) == (16, 8, 8, 3)
    with torch.no_grad():
        out = method(batch(), transductive=transductive)
    golden = torch.from_numpy(fixture()[mode]["eval"]["scores"])
    assert torch.allclose(out.logits, golden, atol=1e-5)
    assert (tmp_path / "run" / "imported.json").exists() and (tmp_path / "run" / "config.yaml").exists()


def test_bad_reference_checkpoints_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    assert_user_error(egnn("import-reference", junk, "--out", tmp_path / "a"), "not a readable PyTorch checkpoint")
    other = tmp_path / "other.pth"
    torch.save({"model": {}}, other)
    assert_user_error(egnn("import-reference", other, "--out", tmp_path / "b"), "not a checkpoint of the original")
    wide = tmp_path / "wide.pth"
    blob = torch.load(original_checkpoint(tmp_path / "c.pth"))
    blob["enc_module_state_dict"]["conv_2.0.weight"] = torch.zeros(128, 64, 3, 3)
    torch.save(blob, wide)
    assert_user_error(egnn("import-reference", wide, "--out", tmp_path / "c"), "widths")
    for name in ("a", "b", "c"):
        assert not (tmp_path / name).exists()  # nothing half-written


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the original code is not beside the checkout")
def test_a_checkpoint_written_by_the_original_code_predicts_the_same(tmp_path, omniglot_root):
    """The original trains 3 iterations and saves with its own save_checkpoint; imported, egnn predicts every
    query of the same 50 Omniglot test episodes as the original's eval() does."""
    env = {**os.environ, "EGNN_DATA": str(omniglot_root)}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "reference_roundtrip.py"), "--ref-dir",
                           str(REFERENCE), "--work", str(tmp_path / "ref"), "--episodes", "50", "--tasks", "4"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = torch.load(tmp_path / "ref" / "reference_predictions.pt")
    imported = egnn("import-reference", ref["checkpoint"], "--out", tmp_path / "run", "--dataset", "omniglot")
    assert imported.returncode == 0, imported.stderr
    method, cfg = load_trained(tmp_path / "run" / "best.pt")
    from egnn.data import load_dataset

    test = EpisodeSampler(load_dataset("omniglot", str(omniglot_root), 84)["test"], 5, 1, 1, seed=ref["seed"])
    scores = []
    with torch.no_grad():
        for start in range(0, ref["episodes"], 10):
            scores.append(method(collate(test.batch(start, 10)), transductive=True).logits)
    scores = torch.cat(scores)
    assert torch.allclose(scores, ref["scores"], atol=1e-4)
    assert torch.equal(scores.argmax(-1), ref["predictions"])
