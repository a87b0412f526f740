"""Gather the Omniglot runs' results.json into results/omniglot.json and print the README table.

Usage: python scripts/collect_omniglot.py [runs/omniglot_*]
Each run was made by the ``egnn train`` command recorded in its results.json (with the git revision).
"""
from __future__ import annotations

import json
import sys
from glob import glob
from pathlib import Path

PUBLISHED_GNN = {(5, 1): 99.2, (5, 5): 99.7, (20, 1): 97.4, (20, 5): 99.0}  # Garcia & Bruna, ICLR 2018


def main(paths: list[str]) -> None:
    runs = []
    for path in sorted(paths or (p for p in glob("runs/omniglot_*") if Path(p).is_dir())):
        file = Path(path) / "results.json"
        if not file.exists():
            print(f"skip {path}: no results.json yet", file=sys.stderr)
            continue
        r = json.loads(file.read_text())
        cfg = r["config"]
        runs.append({
            "way": cfg["way"], "shot": cfg["shot"], "transductive": cfg["transductive"],
            "command": r["command"], "git_revision": r["git_revision"],
            "train": {k: cfg[k] for k in ("iterations", "tasks_per_batch", "query", "lr", "seed")},
            "train_seconds": r["train_seconds"], "best_iteration": r["best_iteration"],
            "best_val_acc": r["best_val_acc"],
            "test": [{k: t[k] for k in ("accuracy", "accuracy_ci95", "edge_acc", "edge_acc_ci95", "protocol")}
                     for t in r["test"]],
            "published_gnn": PUBLISHED_GNN.get((cfg["way"], cfg["shot"])),
        })
    Path("results").mkdir(exist_ok=True)
    Path("results/omniglot.json").write_text(json.dumps({"dataset": "omniglot", "runs": runs}, indent=2) + "\n")
    print("| setting | mode | 1 query/class | 15 queries/class | GNN (published) | train time |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        by_q = {t["protocol"]["query"]: t for t in r["test"]}
        cell = lambda q: (f"{100 * by_q[q]['accuracy']:.2f} ± {100 * by_q[q]['accuracy_ci95']:.2f}"  # noqa: E731
                          if q in by_q else "–")
        mode = "transductive" if r["transductive"] else "non-transductive"
        print(f"| {r['way']}-way {r['shot']}-shot | {mode} | {cell(1)} | {cell(15)} | {r['published_gnn']} | "
              f"{r['train_seconds'] / 60:.0f} min |")


if __name__ == "__main__":
    main(sys.argv[1:])
