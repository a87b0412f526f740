"""Gather the query-protocol study (scripts/query_protocol.sh) into results/query_protocol_omniglot.json and
print its README table: accuracy at 1 and 15 test queries per class for each training protocol.

Usage: python scripts/collect_query_protocol.py
"""
from __future__ import annotations

import json
import sys
from glob import glob
from pathlib import Path

ORDER = ["q1", "q5", "q15", "random1-15"]
LABEL = {"q1": "1 query/class", "q5": "5 queries/class", "q15": "15 queries/class",
         "random1-15": "random 1–15 per batch (robust recipe)"}


def main() -> None:
    rows = []
    for path in sorted(glob("runs/query_protocol/omniglot_*")):
        file = Path(path) / "results.json"
        if not file.exists():
            print(f"skip {path}: no results.json yet", file=sys.stderr)
            continue
        r = json.loads(file.read_text())
        cfg, name = r["config"], Path(path).name.split("_", 2)[2]
        by_q = {t["protocol"]["query"]: t for t in r["test"]}
        rows.append({"way": cfg["way"], "shot": cfg["shot"], "train_protocol": name, "command": r["command"],
                     "git_revision": r["git_revision"],
                     "train": {k: cfg[k] for k in ("iterations", "tasks_per_batch", "query", "query_max", "seed")},
                     "train_seconds": r["train_seconds"], "best_iteration": r["best_iteration"],
                     "test": {str(q): {"accuracy": t["accuracy"], "accuracy_ci95": t["accuracy_ci95"],
                                       "episodes": t["protocol"]["episodes"]} for q, t in by_q.items()}})
    # a run stopped before its budget, tested from its best checkpoint with `egnn eval --output` (see its command)
    partial = sorted(glob("results/query_protocol_omniglot_*_partial_test*.json"))
    if partial:
        tests = [json.loads(Path(f).read_text()) for f in partial]
        ckpt = tests[0]["checkpoint"]
        blob_cfg = json.loads(json.dumps(__import__("yaml").safe_load(Path(ckpt).with_name("config.yaml").read_text())))
        best = max(json.loads(x)["iteration"] for x in Path(ckpt).with_name("metrics.jsonl").read_text().splitlines())
        rows.append({"way": blob_cfg["way"], "shot": blob_cfg["shot"],
                     "train_protocol": Path(ckpt).parent.name.split("_", 2)[2],
                     "stopped_at_iteration": best, "command": [t["command"] for t in tests],
                     "git_revision": tests[0]["git_revision"],
                     "train": {k: blob_cfg[k] for k in ("iterations", "tasks_per_batch", "query", "query_max", "seed")},
                     "train_seconds": None, "best_iteration": best,
                     "test": {str(t["protocol"]["query"]): {"accuracy": t["accuracy"], "accuracy_ci95": t["accuracy_ci95"],
                                                           "episodes": t["protocol"]["episodes"]} for t in tests}})
    rows.sort(key=lambda r: (r["way"], ORDER.index(r["train_protocol"]) if r["train_protocol"] in ORDER else 9))
    Path("results/query_protocol_omniglot.json").write_text(
        json.dumps({"dataset": "omniglot", "mode": "transductive", "runs": rows}, indent=2) + "\n")
    print("| setting | trained with | test: 1 query/class | test: 15 queries/class | 15 − 1 | train time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        t = r["test"]
        cell = lambda q: f"{100 * t[q]['accuracy']:.2f} ± {100 * t[q]['accuracy_ci95']:.2f}" if q in t else "–"  # noqa: E731
        gap = f"{100 * (t['15']['accuracy'] - t['1']['accuracy']):+.2f}" if "1" in t and "15" in t else "–"
        label = LABEL.get(r["train_protocol"], r["train_protocol"])
        if r.get("stopped_at_iteration"):
            label += f" (stopped at {r['stopped_at_iteration']} of {r['train']['iterations']} iterations)"
        took = f"{r['train_seconds'] / 60:.0f} min" if r["train_seconds"] else "–"
        print(f"| {r['way']}-way {r['shot']}-shot | {label} | {cell('1')} | {cell('15')} | {gap} | {took} |")


if __name__ == "__main__":
    main()
