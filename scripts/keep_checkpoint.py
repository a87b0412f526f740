#!/usr/bin/env python
"""Keep a trained model under ``results/checkpoints/``: its weights and config only, with where it came from.

    python scripts/keep_checkpoint.py runs/omniglot_5w1s_cpu --name omniglot_5w1s
    python scripts/keep_checkpoint.py runs/time_to_accuracy/egnn --snapshot 30 --name omniglot_5w1s \\
        --tests results/time_to_accuracy_cpu.json:egnn/30
    python scripts/keep_checkpoint.py runs/sweep/sweep_omniglot_cpu/20w1s_trans --name omniglot_cpu_20w1s_trans \\
        --sweep results/omniglot_cpu.json:20w1s_trans

Copies the run's ``best.pt`` (or ``snapshots/<m>min.pt``), which hold the config, the weights and the input shape
and nothing to resume from (no optimiser, no RNG state), to ``results/checkpoints/NAME.pt``, and writes
``NAME.json``: the run's ``results.json`` (the exact command, git revision, device, wall time and its tests), and
with ``--tests FILE:PREFIX`` the test results a results file holds for it (keys starting with PREFIX). A run trained
by ``egnn sweep`` has no ``results.json``: ``--sweep FILE:RUN`` takes its facts from the sweep's results file (the
report's command and revision, the run's config, training time, revisions trained at and tests).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the run directory")
    p.add_argument("--name", required=True)
    p.add_argument("--snapshot", type=float, default=None, help="minutes of a snapshot instead of best.pt")
    p.add_argument("--tests", default=None, help="FILE:PREFIX of test results to include")
    p.add_argument("--sweep", default=None, help="FILE:RUN: the sweep results file and run name of a sweep's run")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "checkpoints")
    args = p.parse_args()
    from egnn.checkpoint import load_checkpoint
    from egnn.data.paths import atomic_save, atomic_write_text

    source = args.run / ("best.pt" if args.snapshot is None else f"snapshots/{args.snapshot:g}min.pt")
    blob = load_checkpoint(source)  # refuses anything but an egnn checkpoint
    extra = sorted(set(blob) - {"format", "version", "config", "model", "in_channels", "image_size", "iteration",
                                "val_acc", "minutes", "backbone_arch"})
    if extra:
        sys.exit(f"{source} holds more than weights and config ({', '.join(extra)}): keep best.pt or a snapshot")
    facts = json.loads((args.run / "results.json").read_text()) if args.sweep is None else sweep_facts(args.sweep)
    facts = {"source": str(source), "iteration": blob.get("iteration"), "minutes": blob.get("minutes"), **facts}
    if args.tests:
        file, prefix = args.tests.rsplit(":", 1)
        tests = json.loads(Path(file).read_text())["tests"]
        facts["tests_from"] = file
        facts["tests"] = {k: {m: v for m, v in t.items() if m != "per_episode_accuracy"}
                          for k, t in tests.items() if k.startswith(prefix)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_save(source, args.out / f"{args.name}.pt", write=shutil.copyfile)
    atomic_write_text(args.out / f"{args.name}.json", json.dumps(facts, indent=1) + "\n")
    print(f"kept {source} as {args.out / args.name}.pt (+ .json)")


def sweep_facts(spec: str) -> dict:
    """Where a sweep's run came from, from the sweep's results file ``FILE:RUN`` (per-episode accuracies left out)."""
    file, name = spec.rsplit(":", 1)
    made = json.loads(Path(file).read_text())
    if name not in made["runs"]:
        sys.exit(f"{file} has no run {name}: it has {', '.join(made['runs'])}")
    row = made["runs"][name]
    tests = {q: {m: v for m, v in t.items() if m != "per_episode_accuracy"} for q, t in row.get("test", {}).items()}
    # a row merged into the report (egnn sweep --merge) names the call that made it; others, the report's
    return {"sweep_results": file, "run": name,
            **{k: made[k] for k in ("command", "git_revision", "uncommitted_changes", "device") if k in made},
            **row.get("made", {}), **{k: v for k, v in row.items() if k not in ("test", "made")}, "tests": tests}


if __name__ == "__main__":
    main()
