"""Milliseconds per test episode on a CPU with the graph networks' rows in one pass or in blocks of B rows
(``egnn.nn.utils.CPU_CHUNK_ROWS``), paired: the same committed checkpoints on the same fixed Omniglot episodes,
the block sizes interleaved within each repeat, the median of ``--repeats``. Also checks that every block size
labels every episode as the one-pass run does. Timings count only on an otherwise idle machine.

    python scripts/bench_eval_blocks.py --out results/bench_eval_blocks_cpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import egnn.nn.utils as utils
from egnn.data import load_dataset
from egnn.data.paths import atomic_write_text
from egnn.devices import cpu_name
from egnn.evaluation import evaluate
from egnn.models import load_trained
from egnn.provenance import provenance

CHECKPOINTS = Path(__file__).resolve().parent.parent / "results" / "checkpoints"
#: (name, checkpoint, way, shot, queries per class, transductive, episodes, episodes per forward pass)
SETTINGS = [
    ("5w1s 15 queries, transductive", "omniglot_cpu_5w1s_trans.pt", 5, 1, 15, True, 100, 50),
    ("20w1s 15 queries, transductive", "omniglot_cpu_20w1s_trans.pt", 20, 1, 15, True, 20, 10),
    ("20w1s 15 queries, non-transductive", "omniglot_cpu_20w1s_nontrans.pt", 20, 1, 15, False, 10, 5),
    ("20w5s 1 query, non-transductive", "omniglot_cpu_20w1s_nontrans.pt", 20, 5, 1, False, 10, 5),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", default="1024,2048,4096", help="rows per block (one pass, 0, is always measured)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/bench_eval_blocks_cpu.json")
    args = parser.parse_args()
    started = time.time()
    torch.set_num_threads(args.threads)
    blocks = [0] + [b for b in (int(b) for b in args.blocks.split(",")) if b != 0]  # one pass: the reference
    rows = []
    for name, file, way, shot, query, transductive, episodes, batch in SETTINGS:
        method, cfg = load_trained(CHECKPOINTS / file)
        split = load_dataset("omniglot", None, cfg.image_size)["test"]

        def run(block: int, n: int):
            utils.CPU_CHUNK_ROWS = block or 2**62
            return evaluate(method, split, way=way, shot=shot, query=query, episodes=n, transductive=transductive,
                            batch_size=batch)

        run(0, batch)  # warm-up
        times = {b: [] for b in blocks}
        labels = {}
        for _ in range(args.repeats):
            for b in blocks:
                result = run(b, episodes)
                times[b].append(result.seconds / episodes * 1000)
                labels.setdefault(b, result.per_episode)
        ms = {str(b): round(statistics.median(t), 1) for b, t in times.items()}
        row = {"setting": name, "checkpoint": f"results/checkpoints/{file}", "episodes": episodes,
               "episodes_per_pass": batch, "ms_per_episode": ms,
               "same_labels_as_one_pass": all(labels[b] == labels[0] for b in blocks)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    report = {**provenance("python scripts/bench_eval_blocks.py", started=started), "device": cpu_name(),
              "threads": args.threads, "repeats": args.repeats, "rows": rows}
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
