"""kill -9 in the middle of training, then --resume: the same final model and evaluation as an unbroken run."""
import json
import sys

import torch
import yaml

from tests.conftest import egnn, kill_after_checkpoint

CONFIG = {"dataset": "glyphs", "way": 3, "shot": 1, "query": 1, "query_max": 0, "iterations": 300, "tasks_per_batch": 2,
          "val_every": 5, "val_episodes": 2, "test_episodes": 6, "embedding": 16, "node_features": 8,
          "edge_features": 8, "threads": 1, "seed": 7}


def test_killed_run_resumes_bitwise(tmp_path):
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    args = ["train", "--config", tmp_path / "cfg.yaml", "--quiet"]
    assert egnn(*args, "--out", tmp_path / "whole").returncode == 0

    cmd = [sys.executable, "-m", "egnn.cli", *map(str, args), "--out", str(tmp_path / "broken")]
    last = tmp_path / "broken" / "last.pt"
    killed_at = kill_after_checkpoint(cmd, last, 0.3)
    assert 0 < killed_at < CONFIG["iterations"]  # it really was interrupted

    assert egnn(*args, "--out", tmp_path / "broken", "--resume").returncode == 0
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert a["iteration"] == b["iteration"] == CONFIG["iterations"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    tests = [json.loads((tmp_path / run / "results.json").read_text())["test"] for run in ("whole", "broken")]
    assert tests[0][0]["accuracy"] == tests[1][0]["accuracy"]
    metrics = [json.loads(x)["iteration"] for x in (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(5, CONFIG["iterations"] + 1, 5))  # no gap, no duplicate
    # which code trained which stretch: the start, and the resume from the checkpoint the kill left
    from egnn.provenance import git_revision

    sessions = [json.loads(x) for x in (tmp_path / "broken" / "sessions.jsonl").read_text().splitlines()]
    assert [s["from_iteration"] for s in sessions] == [0, killed_at]
    assert {s["git_revision"] for s in sessions} == {git_revision()}
