import json

import pytest
import torch
import yaml

from egnn.data import load_dataset
from egnn.losses import mean_ci95
from egnn.evaluation import evaluate
from egnn.models import load_trained

from tests.conftest import assert_user_error, cli


def test_compare_trains_and_evaluates_all_models_on_identical_episodes(tmp_path):
    spec = {
        "base": {"dataset": "glyphs", "way": 3, "shot": 1, "query": 2, "iterations": 4, "tasks_per_batch": 4,
                 "val_every": 4, "val_episodes": 4, "embedding": 16, "node_features": 16, "edge_features": 16,
                 "eval_batch": 10},
        "models": {name: {"model": name, "out": str(tmp_path / name)} for name in ("egnn", "gnn", "protonet")},
        "evaluation": {"episodes": 20, "query": 2, "transductive": True},
        "reference": "egnn",
        "output": str(tmp_path / "cmp"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    proc = cli("compare", "--config", tmp_path / "spec.yaml", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "cmp.json").read_text())
    rows = summary["models"]
    assert set(rows) == {"egnn", "gnn", "protonet"}
    # paired over identical episodes: re-evaluating each trained model on the 20 fixed episodes, the per-episode
    # differences give the reported mean and CI (a comparison on different episodes would not)
    split = load_dataset("glyphs")["test"]
    per = {n: torch.tensor(evaluate(load_trained(tmp_path / n / "best.pt")[0], split, way=3, shot=1, query=2,
                                    episodes=20, transductive=True, batch_size=10).per_episode) for n in rows}
    for name in ("gnn", "protonet"):
        mean, ci = mean_ci95(per["egnn"] - per[name])
        assert rows[name]["paired_difference_egnn_minus_this"] == pytest.approx(mean, abs=1e-6)
        assert rows[name]["paired_difference_ci95"] == pytest.approx(ci, abs=1e-6)
    assert summary["protocol"]["episodes"] == 20 and summary["command"].startswith("egnn compare")
    assert (tmp_path / "cmp.png").stat().st_size > 0 and "| egnn |" in (tmp_path / "cmp.md").read_text()

    # a second call loads the finished runs instead of training again, and reproduces the numbers
    spec["models"]["egnn"] = {"checkpoint": str(tmp_path / "egnn" / "best.pt"), "out": str(tmp_path / "loaded")}
    spec["output"] = str(tmp_path / "again")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert cli("compare", "--config", tmp_path / "spec.yaml", "--quiet").returncode == 0
    again = json.loads((tmp_path / "again.json").read_text())["models"]
    assert {k: v["accuracy"] for k, v in again.items()} == {k: v["accuracy"] for k, v in rows.items()}


def test_compare_rejects_bad_specs(tmp_path):
    (tmp_path / "bad.yaml").write_text("modelz: {}\n")
    assert_user_error(cli("compare", "--config", tmp_path / "bad.yaml"), "unknown modelz", "missing models")
