"""scripts/gpu_plan.sh, the whole GPU session as one command, tried end to end on the CPU with tiny budgets: every
stage runs, a failing stage does not stop the next, and what each stage makes is under $OUT within the device
tool's limits on returned files (at most 8, names of letters, digits, '.', '_' and '-')."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
REF_DIR = REPO.parent / "shared" / "reference" / "fewshot-egnn"


@pytest.mark.skipif(not REF_DIR.is_dir(), reason="the original code (../shared/reference) is not beside the checkout")
def test_the_gpu_plan_runs_every_stage_on_the_cpu_and_keeps_what_each_made(tmp_path):
    base = {"dataset": "glyphs", "way": 3, "shot": 1, "query_max": 0, "iterations": 2, "tasks_per_batch": 2,
            "val_every": 1, "val_episodes": 2, "embedding": 16, "node_features": 8, "edge_features": 8, "threads": 1}
    spec = {"base": base, "runs": {"a": {}, "b": {"query": 2}}, "grid": {"transductive": [True, False]},
            "test": {"queries": [1], "episodes": 4}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "NO_INSTALL": "1", "OUT": str(out), "BUDGET": "300",
           "PYTHON": sys.executable, "SPEC": str(tmp_path / "tiny.yaml"), "RUNS": str(tmp_path / "runs"),
           "REF_DIR": str(REF_DIR), "TEST_SECONDS": "60", "BENCH_SECONDS": "120",
           "BENCH_KINDS": "ours_eval,ref_eval", "BENCH_ARGS": "--settings 5w1s --modes transductive"}  # training rows at 84 px: minutes
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_plan.sh")], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr
    log = (out / "plan.log").read_text()
    for stage in ("plan on cpu", "cuda tests exit", "bench exit 0", "trainings: 4 in parallel", "trainings exit 0",
                  "plan done"):
        assert stage in log, (stage, log[-3000:])
    assert "skipped" in log  # the CUDA tests ran (and skipped, on the CPU) with their outcomes in the log
    rows = json.loads((out / "bench_gpu.json").read_text())["rows"]
    assert {r["kind"] for r in rows} == {"ours_eval", "ref_eval"}
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench_gpu.json", "plan.log", "tiny.log", "tiny_a_transductive_True.tar",
                     "tiny_b_transductive_True.tar", "tiny_report.tar"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)
