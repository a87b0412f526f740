"""Seconds per Conv-4 forward and backward pass of a meta-batch in training mode, encoded two ways that compute the
same function: all ``B x S`` images in one batch with per-slot BatchNorm statistics (:class:`~egnn.nn.slot_norm.
SlotBatchNorm`, what egnn does) against one node slot at a time with PyTorch's BatchNorm (what the original code
does). Paired: the same random images and weights, the two ways alternating within each repeat, the median of
``--repeats``; every setting in a fresh process that keeps freed memory as egnn's trainer does. Also records the
largest difference between the two ways' embeddings (the Conv-4 built without dropout, so both see the same
function). Timings count only on an otherwise idle machine.

    python scripts/bench_slot_encoding.py --out results/bench_slot_encoding_cpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: (image size, tasks B, node slots S): 5-way 1-shot and 5-way 5-shot with 1 query per class at the original's
#: 84x84x3, then the same graph sizes at Omniglot's 28x28x1 (5-way 5-shot with 1-5 queries reaches 50 slots)
SETTINGS = [(84, 40, 10), (84, 40, 30), (28, 40, 10), (28, 40, 30), (28, 40, 50)]


def measure(size: int, tasks: int, slots: int, repeats: int, threads: int) -> dict:
    import torch

    from egnn.backbones import create_backbone
    from egnn.devices import keep_freed_host_memory
    from egnn.nn.slot_norm import node_slots

    kept = keep_freed_host_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    channels = 3 if size >= 84 else 1
    net = create_backbone("conv4", in_channels=channels, image_size=size, out_features=128, dropout=0.0).train()
    x = torch.rand(tasks * slots, channels, size, size, generator=torch.Generator().manual_seed(1))

    def whole():  # egnn: one batch, statistics per slot
        with node_slots(net, slots):
            return net(x)

    def per_slot():  # the original: slot k is the k-th image of every task, one BatchNorm batch each
        xs = x.view(tasks, slots, *x.shape[1:])
        return torch.stack([net(xs[:, k]) for k in range(slots)], 1).flatten(0, 1)

    with torch.no_grad():
        diff = (whole() - per_slot()).abs().max().item()
    ways = {"one batch, slot statistics": whole, "slot by slot": per_slot}
    times = {name: [] for name in ways}
    for fn in ways.values():  # warm-up: first passes pay for the heap
        fn().square().mean().backward()
    for _ in range(repeats):
        for name, fn in ways.items():
            net.zero_grad(set_to_none=True)
            start = time.perf_counter()
            fn().square().mean().backward()
            times[name].append(time.perf_counter() - start)
    median = {name: round(statistics.median(t), 3) for name, t in times.items()}
    return {"image_size": size, "channels": channels, "tasks": tasks, "slots": slots, "images": tasks * slots,
            "seconds": median, "all_seconds": {k: [round(v, 3) for v in t] for k, t in times.items()},
            "speedup_slot_by_slot": round(median["one batch, slot statistics"] / median["slot by slot"], 2),
            "max_abs_difference": diff, "keeps_freed_memory": kept}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "results" / "bench_slot_encoding_cpu.json"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        size, tasks, slots = json.loads(args.one)
        print(json.dumps(measure(size, tasks, slots, args.repeats, args.threads)))
        return
    from egnn.data.paths import atomic_write_text
    from egnn.devices import cpu_name
    from egnn.provenance import provenance

    started, rows = time.time(), []
    for setting in SETTINGS:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(setting), "--repeats", str(args.repeats),
                               "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    report = {**provenance("python scripts/bench_slot_encoding.py", started=started), "device": cpu_name(),
              "threads": args.threads, "repeats": args.repeats, "rows": rows}
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
