"""MTL stage 1: classification pretraining of a backbone."""
import torch

import egnn.pretrain as P
from egnn.checkpoint import load_checkpoint
from egnn.config import make_config
from tests.test_cli import egnn
from tests.test_trainer import SPLITS


def cfg(out, **kw):
    return make_config(**{**dict(backbone="resnet12", widths="8,8,12,12", way=3, shot=1, eval_query=2, iterations=6,
                                 val_every=3, val_episodes=6, eval_batch=3, lr=0.05, weight_decay=5e-4, out=str(out)),
                          **kw})


def test_pretraining_resumes_bitwise(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "load_dataset", lambda *a, **k: SPLITS)
    whole = P.pretrain(cfg(tmp_path / "whole"), batch_size=16, log=lambda _: None)
    P.pretrain(cfg(tmp_path / "split"), batch_size=16, log=lambda _: None, stop_at=3)  # "killed" at 3
    P.pretrain(cfg(tmp_path / "split"), batch_size=16, resume=True, log=lambda _: None)
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    # best.pt holds the best validation accuracy the run reports
    best = load_checkpoint(tmp_path / "whole" / "best.pt")
    assert best["val_acc"] == whole["best_val_acc"] > 1 / 3  # above 3-way chance after 6 iterations




def test_mtl_stages_through_the_cli(tmp_path):
    pre = egnn("pretrain", "--widths", "8,8,8,8", "--iterations", 2, "--val-every", 2, "--val-episodes", 4,
               "--batch-size", 16, "--out", tmp_path / "p")
    assert pre.returncode == 0, pre.stderr
    assert "pretrained resnet12" in pre.stdout and (tmp_path / "p" / "best.pt").exists()
    mt = egnn("meta-transfer", "--pretrained", tmp_path / "p" / "best.pt", "--iterations", 2, "--tasks-per-batch", 2,
              "--val-every", 2, "--val-episodes", 4, "--test-episodes", 4, "--inner-steps", 2, "--out", tmp_path / "m",
              "--quiet")
    assert mt.returncode == 0, mt.stderr
    assert "test: glyphs/test 5-way 1-shot" in mt.stdout
    tr = egnn("train", "--backbone", "resnet12-mtl", "--backbone-checkpoint", tmp_path / "m" / "best.pt", "--freeze-ss",
              "--iterations", 2, "--tasks-per-batch", 2, "--val-every", 2, "--val-episodes", 4, "--test-episodes", 4,
              "--out", tmp_path / "e", "--quiet")
    assert tr.returncode == 0, tr.stderr
    assert "test: glyphs/test" in tr.stdout
