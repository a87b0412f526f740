"""scripts/gpu_sweep.sh, the device machine's sweep driver, on the CPU: its runs train as parallel processes,
the report and the best checkpoints come back under $OUT within the device tool's limits on returned files
(at most 8, 16 MB each, names of letters, digits, '.', '_' and '-')."""
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_sweep.sh"
BASE = {"dataset": "glyphs", "way": 3, "shot": 1, "query_max": 0, "iterations": 2, "tasks_per_batch": 2,
        "val_every": 1, "val_episodes": 2, "embedding": 16, "node_features": 8, "edge_features": 8, "threads": 1}


def test_gpu_sweep_script_trains_each_chosen_run_once_and_keeps_each_as_it_ends(tmp_path):
    """--only picks the runs once: each run's process is given its own name alone (the caller's pattern too would
    make every process train every chosen run, one after another behind the run locks), and each finished run is
    one file under $OUT, with its log, cached tests and best checkpoint."""
    spec = {"base": BASE, "runs": {"a": {}, "b": {"query": 2}}, "grid": {"transductive": [True, False]},
            "test": {"queries": [1], "episodes": 4}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec))
    out, runs = tmp_path / "out", tmp_path / "runs"
    calls = tmp_path / "calls.txt"
    shim = tmp_path / "python"  # the interpreter, recording every egnn call the script makes
    shim.write_text(f'#!/usr/bin/env bash\necho "$@" >> {calls}\nexec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "NO_INSTALL": "1", "OUT": str(out), "RUNS": str(runs), "PYTHON": str(shim)}
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "tiny.yaml"), "--only", "*/transductive=True",
                           "--set", "device=cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trainings = [c for c in calls.read_text().splitlines() if "--runs" in c and "--report" not in c]
    assert len(trainings) == 2
    for call in trainings:
        assert call.count("--only") == 1 and "--set device=cpu" in call, call
    assert sorted(c.split("--only ")[1].split()[0] for c in trainings) == ["a/transductive=True", "b/transductive=True"]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["tiny.log", "tiny_a_transductive_True.tar", "tiny_b_transductive_True.tar", "tiny_report.tar"]
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
    with tarfile.open(out / "tiny_report.tar") as tar:
        assert sorted(tar.getnames()) == [".", "./tiny.json", "./tiny.md", "./tiny.png"]
        report = json.load(tar.extractfile("./tiny.json"))
    assert sorted(report["runs"]) == ["a/transductive=True", "b/transductive=True"]  # only the chosen part
    log = (out / "tiny.log").read_text()
    assert "a/transductive=True: exit 0" in log and "in parallel" in log
    with tarfile.open(out / "tiny_a_transductive_True.tar") as tar:
        names = sorted(tar.getnames())
        assert names == ["a_transductive=True.log", "a_transductive=True/best.pt", "a_transductive=True/metrics.jsonl",
                         "a_transductive=True/sweep_tests.json"]
        cached = json.load(tar.extractfile("a_transductive=True/sweep_tests.json"))
    # the tar's cached tests are the report's numbers for that run
    assert [v["per_episode_accuracy"] for v in cached.values()] == [
        report["runs"]["a/transductive=True"]["test"]["1"]["per_episode_accuracy"]]
    assert Path(report["runs"]["a/transductive=True"]["checkpoint"]).parent.parent == runs
