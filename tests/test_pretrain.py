"""MTL stage 1: classification pretraining of a backbone."""
import json

import pytest
import torch

import egnn.pretrain as P
from egnn.checkpoint import load_checkpoint
from egnn.errors import ConfigError
from egnn.methods import PretrainClassifier
from egnn.evaluation import evaluate_config
from egnn.models import load_trained
from egnn.trainer import Trainer
from tests.conftest import cli
from tests.conftest import SPLITS


def cfg(out, **kw):
    return P.pretrain_config(**{**dict(widths="8,8,12,12", way=3, shot=1, eval_query=2, iterations=6, val_every=3,
                                       val_episodes=6, eval_batch=3, test_episodes=6, lr=0.05, tasks_per_batch=16,
                                       out=str(out)), **kw})


def test_pretraining_runs_on_the_one_trainer_and_resumes_bitwise(tmp_path):
    whole = Trainer(cfg(tmp_path / "whole"), SPLITS)
    assert isinstance(whole.method, PretrainClassifier) and isinstance(whole.optimizer, torch.optim.SGD)
    assert whole.method.head.out_features == SPLITS["train"].num_classes
    whole.fit(progress=False)
    broken = Trainer(cfg(tmp_path / "split"), SPLITS)  # "killed" right after its checkpoint at iteration 3
    broken.out.mkdir(parents=True)
    while broken.iteration < 3:
        broken.step()
    broken.end_period([0.0], [0.0])
    resumed = Trainer(cfg(tmp_path / "split"), SPLITS)
    resumed.fit(resume=True, progress=False)
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["iteration"] == b["iteration"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.01)  # ÷10 at 50% and 75% of the run
    # best.pt holds the weights of the best validation in metrics.jsonl: evaluated afresh on the validation
    # episodes, they score what the log says
    best = load_checkpoint(tmp_path / "whole" / "best.pt")
    logged = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    top = max(logged, key=lambda r: r["val_acc"])
    assert (best["val_acc"], best["iteration"]) == (top["val_acc"], top["iteration"])
    method, saved = load_trained(tmp_path / "whole" / "best.pt")
    assert evaluate_config(method, SPLITS["val"], saved, saved.val_episodes).accuracy == pytest.approx(top["val_acc"])


def test_pretraining_defaults_are_the_same_for_the_api_and_the_cli():
    api = P.pretrain_config()
    assert (api.model, api.backbone, api.lr, api.weight_decay, api.tasks_per_batch, api.iterations) == (
        "classifier", "resnet12", 0.1, 5e-4, 128, 2000)
    with pytest.raises(ConfigError, match="takes no --knn"):
        P.pretrain_config(hard_tasks=True)


def test_mtl_stages_through_the_cli(tmp_path):
    pre = cli("pretrain", "--widths", "8,8,8,8", "--iterations", 2, "--val-every", 2, "--val-episodes", 4,
               "--batch-size", 16, "--out", tmp_path / "p")
    assert pre.returncode == 0, pre.stderr
    assert "pretrained resnet12" in pre.stdout and (tmp_path / "p" / "best.pt").exists()
    assert "test (nearest prototypes of the features): glyphs/test 5-way 1-shot" in pre.stdout
    mt = cli("meta-transfer", "--pretrained", tmp_path / "p" / "best.pt", "--iterations", 2, "--tasks-per-batch", 2,
              "--val-every", 2, "--val-episodes", 4, "--test-episodes", 4, "--inner-steps", 2, "--out", tmp_path / "m",
              "--quiet")
    assert mt.returncode == 0, mt.stderr
    assert "test: glyphs/test 5-way 1-shot" in mt.stdout
    tr = cli("train", "--backbone", "resnet12-mtl", "--backbone-checkpoint", tmp_path / "m" / "best.pt", "--freeze-ss",
              "--iterations", 2, "--tasks-per-batch", 2, "--val-every", 2, "--val-episodes", 4, "--test-episodes", 4,
              "--out", tmp_path / "e", "--quiet")
    assert tr.returncode == 0, tr.stderr
    assert "test: glyphs/test" in tr.stdout
