"""Seconds per training iteration of egnn on real Omniglot, paired across code revisions and settings.

Each measurement is a fresh process (so the allocator starts clean) that imports egnn from a checkout of the
named revision (``worktree``: this checkout as it is), builds the trainer, takes ``--warmup`` steps, then times
``--steps`` steps with the same seed, so every revision and setting trains on the same episodes. The runs are
interleaved (every revision of a recipe back to back, then the next repeat), and the median of ``--repeats`` is
reported. Timings count only on an otherwise idle machine.

    python scripts/bench_step.py --revisions 7b1a150,worktree --out results/bench_step_cpu.json
    python scripts/bench_step.py --revisions worktree --env EGNN_MALLOC=system,EGNN_MALLOC=tuned
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: (name, config overrides): Omniglot 5-way 1-shot transductive with 40 tasks per batch unless said otherwise
RECIPES = {
    "5w1s q1": {"query_max": 0},
    "5w1s q5": {"query": 5, "query_max": 0},
    "5w1s q1-5": {"query_max": 5},
    "5w1s q1-15": {"query_max": 15},
    "5w5s q5": {"shot": 5, "query": 5, "query_max": 0},
    "5w1s q1 non-transductive": {"query_max": 0, "transductive": False},
    "5w1s q1-5 bf16": {"query_max": 5, "precision": "bf16"},
    # the 20-way 5-shot non-transductive bar row: a 101-node graph per query, so few tasks a batch
    "20w5s q1 non-transductive 2 tasks": {"way": 20, "shot": 5, "query_max": 0, "transductive": False,
                                          "tasks_per_batch": 2},
    "20w5s q1 non-transductive 5 tasks": {"way": 20, "shot": 5, "query_max": 0, "transductive": False,
                                          "tasks_per_batch": 5},
    "20w5s q1-5 10 tasks": {"way": 20, "shot": 5, "query_max": 5, "tasks_per_batch": 10},
}


def child(args) -> None:
    """Runs inside the measured process: time ``steps`` training iterations after ``warmup``."""
    import torch

    import egnn
    from egnn.config import make_config
    from egnn.trainer import Trainer

    torch.set_num_threads(args.threads)
    settings = {"dataset": "omniglot", "data_root": args.data_root, "way": 5, "shot": 1, "tasks_per_batch": 40,
                "out": tempfile.mkdtemp(), **json.loads(args.recipe)}
    trainer = Trainer(make_config(**settings))
    for _ in range(args.warmup):
        trainer.step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss, _ = trainer.step()
    float(loss)  # the device has finished
    print(json.dumps({"seconds_per_step": (time.perf_counter() - start) / args.steps,
                      "egnn": str(Path(egnn.__file__).parent)}))


def checkout(revision: str, scratch: Path) -> Path:
    if revision == "worktree":
        return REPO
    path = scratch / revision
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(path), revision], check=True,
                   capture_output=True)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--revisions", default="worktree", help="comma-separated git revisions; worktree: this checkout")
    p.add_argument("--env", default="", help="comma-separated VAR=VALUE settings to pair, one process each")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)}")
    p.add_argument("--data-root", default=os.environ.get("EGNN_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--recipe", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    from egnn.devices import cpu_name
    from egnn.provenance import provenance

    started = time.perf_counter()
    recipes = args.recipes.split(",")
    settings = [s for s in args.env.split(",") if s] or [""]
    with tempfile.TemporaryDirectory() as scratch:
        trees = {rev: checkout(rev, Path(scratch)) for rev in args.revisions.split(",")}
        times: dict[tuple[str, str, str], list[float]] = {}
        for repeat in range(args.repeats):
            for recipe in recipes:
                for rev, tree in trees.items():
                    for setting in settings:
                        env = {**os.environ, "PYTHONPATH": str(tree), "EGNN_DATA": args.data_root}
                        if setting:
                            key, _, value = setting.partition("=")
                            env[key] = value
                        cmd = [sys.executable, __file__, "--child", "--recipe", json.dumps(RECIPES[recipe]),
                               "--data-root", args.data_root, "--steps", str(args.steps), "--warmup",
                               str(args.warmup), "--threads", str(args.threads)]
                        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
                        if proc.returncode:
                            sys.exit(f"{rev} {recipe} {setting}: {proc.stderr.strip().splitlines()[-1]}")
                        got = json.loads(proc.stdout.strip().splitlines()[-1])
                        assert Path(got["egnn"]).resolve().parent == tree.resolve(), got  # the right checkout
                        times.setdefault((recipe, rev, setting), []).append(got["seconds_per_step"])
                        print(f"{recipe:28s} {rev:10s} {setting:20s} {got['seconds_per_step']:.3f} s/it", flush=True)
        for rev in trees:
            if rev != "worktree":
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees[rev])],
                               capture_output=True)
    rows = [{"recipe": recipe, "settings": RECIPES[recipe], "revision": rev, "env": setting,
             "seconds_per_step": statistics.median(v), "all": v} for (recipe, rev, setting), v in times.items()]
    first = {r["recipe"]: r["seconds_per_step"] for r in rows if (r["revision"], r["env"]) == (rows[0]["revision"], rows[0]["env"])}
    for r in rows:
        r["speedup_vs_first"] = round(first[r["recipe"]] / r["seconds_per_step"], 3)
    report = {**provenance("python scripts/bench_step.py", sys.argv[1:]), "device": cpu_name(),
              "wall_seconds": round(time.perf_counter() - started, 1), "steps": args.steps, "warmup": args.warmup,
              "repeats": args.repeats, "threads": args.threads, "tasks_per_batch": 40, "rows": rows}
    for r in rows:
        print(f"{r['recipe']:28s} {r['revision']:10s} {r['env']:20s} {r['seconds_per_step']:.3f} s/it "
              f"(x{r['speedup_vs_first']})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
