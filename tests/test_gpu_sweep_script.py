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


def test_gpu_sweep_script_brings_back_the_report_and_the_checkpoints(tmp_path):
    spec = {"base": BASE, "runs": {"a": {}, "b": {"query": 2}}, "grid": {"transductive": [True, False]},
            "test": {"queries": [1], "episodes": 4}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec))
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = {**os.environ, "NO_INSTALL": "1", "OUT": str(out), "RUNS": str(runs), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "tiny.yaml"), "--only", "*/transductive=True",
                           "--set", "device=cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
    report = json.loads((out / "tiny.json").read_text())
    assert sorted(report["runs"]) == ["a/transductive=True", "b/transductive=True"]  # only the chosen part
    assert (out / "tiny.md").exists() and (out / "tiny.png").exists()
    assert "in parallel" in (out / "tiny.log").read_text()
    parts = sorted(out.glob("tiny_checkpoints.tar.part-*"))
    (tmp_path / "all.tar").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "all.tar") as tar:
        assert sorted(tar.getnames()) == ["a_transductive=True/best.pt", "b_transductive=True/best.pt"]
    assert Path(report["runs"]["a/transductive=True"]["checkpoint"]).parent.parent == runs
