"""Time README's quick start as a new user meets it: a fresh clone, README's first command line, the clock on.

    python scripts/quickstart_time.py            # -> results/quickstart_cpu.json

Clones this checkout's HEAD into a temporary folder, makes a virtual environment that sees the machine's installed
packages (dependencies already installed, as README states; egnn itself is installed by the command), and runs
README's first quick-start line there exactly as written, with bash. Records the command, the revision, the CPU,
the wall time (install included) and the accuracy the command printed. A timed run: nothing else should run
beside it.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from egnn.devices import describe  # noqa: E402


def readme_line() -> str:
    """The first command of README's quick start."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return block.strip().splitlines()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "results" / "quickstart_cpu.json"))
    args = p.parse_args()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        sys.exit("commit first: the clone takes HEAD, and the result names it")
    line = readme_line()
    with tempfile.TemporaryDirectory() as work:
        clone, venv = Path(work) / "egnn", Path(work) / "venv"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        revision = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  check=True).stdout.strip()
        start = time.perf_counter()
        proc = subprocess.run(["bash", "-c", f"source {venv}/bin/activate && {line}"], cwd=clone,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    found = re.search(r"accuracy ([\d.]+) ± ([\d.]+)% on (\S+)", proc.stdout)
    if proc.returncode != 0 or not found:
        sys.exit(f"the quick start failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = {"command": line, "git_revision": revision, "device": describe("cpu"),
              "setup": "fresh git clone; a venv with --system-site-packages (dependencies installed, egnn not)",
              "wall_seconds": round(wall, 1), "accuracy": float(found[1]), "ci95": float(found[2]),
              "printed": [ln for ln in proc.stdout.splitlines() if "accuracy" in ln][-1],
              "made_by": "python scripts/quickstart_time.py"}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{line}: {result['printed']} in {int(wall // 60)} min {wall % 60:.0f} s ({revision[:7]})")


if __name__ == "__main__":
    main()
