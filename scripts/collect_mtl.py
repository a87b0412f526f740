"""Gather the MTL study (scripts/mtl_omniglot.sh) into results/mtl_omniglot.json and print its README table:
for each way, EGNN with Conv-4, EGNN on the MTL backbone and MTL's own classifier, each with and without
hard tasks (HT), tested on the same episodes (eval seed 0), with the wall-clock time of every stage.

Usage: python scripts/collect_mtl.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

R = Path("runs/mtl")
MODELS = [("egnn_conv4", "EGNN, Conv-4"), ("egnn_mtl", "EGNN, MTL ResNet-12 (SS meta-trained)"),
          ("mt", "MTL classifier (ResNet-12 + SS, base learner)")]


def run_record(path: Path) -> dict | None:
    file = path / "results.json"
    if not file.exists():
        print(f"skip {path}: no results.json yet", file=sys.stderr)
        return None
    r = json.loads(file.read_text())
    t = r["test"][0]
    cfg = r["config"]
    return {"run": str(path), "command": r["command"], "git_revision": r["git_revision"],
            "accuracy": t["accuracy"], "accuracy_ci95": t["accuracy_ci95"], "protocol": t["protocol"],
            "train_seconds": r["train_seconds"], "test_seconds": t.get("seconds"), "best_iteration": r["best_iteration"],
            "train": {k: cfg[k] for k in ("iterations", "tasks_per_batch", "query", "query_max", "hard_tasks",
                                          "transductive", "backbone", "backbone_checkpoint", "train_ss", "seed")}}


def main() -> None:
    metrics = [json.loads(x) for x in (R / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    cfg = json.loads(json.dumps(__import__("torch").load(R / "pretrain" / "last.pt", weights_only=False)["config"]))
    pretrain = {"run": str(R / "pretrain"), "train_seconds": metrics[-1]["seconds"], "iterations": metrics[-1]["iteration"],
                "best_val_acc": max(m["val_acc"] for m in metrics), "widths": cfg["widths"],
                "command": "scripts/mtl_omniglot.sh pretrain", "metrics": metrics}
    rows = []
    for way in (5, 20):
        for key, label in MODELS:
            # _400it: no HT with as many optimiser steps as HT (5w-equal-steps)
            for ht, suffix in (("hard-tasks", ""), ("no-hard-tasks", ""), ("no-hard-tasks", "_400it")):
                rec = run_record(R / f"{key}_{way}w1s_{ht}{suffix}")
                if rec:
                    rows.append({"way": way, "shot": 1, "model": key, "label": label, "hard_tasks": ht == "hard-tasks",
                                 "equal_steps": bool(suffix), **rec})
    Path("results/mtl_omniglot.json").write_text(json.dumps(
        {"dataset": "omniglot", "pretrain": pretrain, "runs": rows,
         "stage_seconds": {"pretrain": pretrain["train_seconds"]}}, indent=2) + "\n")
    print(f"pretrain (stage 1): ResNet-12 {pretrain['widths']}, {pretrain['iterations']} iterations, "
          f"{pretrain['train_seconds'] / 60:.0f} min, best 5-way 1-shot val (prototypes) {100 * pretrain['best_val_acc']:.1f}%")
    print("| way | model | HT | iterations | test accuracy (%) | meta-train time | needs |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        needs = {"egnn_conv4": "–", "mt": "stage 1", "egnn_mtl": "stages 1, 2"}[r["model"]]
        ht = "yes" if r["hard_tasks"] else ("no, 2x iterations" if r["equal_steps"] else "no")
        print(f"| {r['way']}-way 1-shot | {r['label']} | {ht} | {r['train']['iterations']} | "
              f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_ci95']:.2f} | {r['train_seconds'] / 60:.0f} min | {needs} |")


if __name__ == "__main__":
    main()
