"""Time to accuracy on Omniglot 5-way 1-shot, side by side on this machine: egnn's recipe, egnn's previous default
recipe, and the original EGNN code at its own recipe and input, each trained for the same wall-clock, one after
another (a timed run owns the machine), then each tested at the same wall-clock points on the same 1000 test
episodes with 1 and 15 queries per class.

    python scripts/time_to_accuracy.py --minutes 30 --every 5 --out results/time_to_accuracy_cpu

- **egnn**: ``egnn train --config configs/omniglot_5w1s_cpu.yaml --max-minutes M --snapshot-minutes ...``;
- **egnn, previous default**: ``egnn train --dataset omniglot --way 5 --shot 1`` with the defaults egnn had
  before its time-budgeted recipe (20 tasks per batch, a random 1..15 queries per class, the reference's
  step schedule), on the current code, for the same minutes;
- **original**: ``../shared/reference/ref_egnn_omniglot.py train`` (the original code, unedited, imported at run
  time, at its own recipe: 84x84x3 inputs, 40 tasks, 1 query per class, its Adam and step schedule, glibc's
  allocator tuned as for egnn), for the same minutes of training time; its model is saved at each point
  (through the driver's periodic-validation hook, whose time is not counted as training) and read into egnn
  with ``egnn import-reference``.

Wall-clock points count training, and for egnn its validations and checkpoints too; loading the data and the
tests are outside. Each trained contender is kept in ``--work`` and skipped when the command runs again, so an
interrupted command continues with the contenders it had not finished (egnn's runs also resume mid-run; the
original's cannot). Tests are cached per snapshot.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str((1 << 31) - 1)}


def egnn_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "egnn.cli", *args]


def run(cmd: list[str], log: Path, env: dict | None = None) -> None:
    """Run ``cmd`` with its output in ``log``; a failure ends this script with the log's last line."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)
    if proc.returncode:
        tail = log.read_text().strip().splitlines()[-1:]
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}: {tail}")


def points(args) -> list[float]:
    return [round(args.every * k, 6) for k in range(1, int(round(args.minutes / args.every)) + 1)]


def train_egnn(name: str, flags: list[str], args, work: Path) -> None:
    out = work / name
    if (out / "results.json").exists() or finished(name, args):
        return
    marks = ",".join(f"{m:g}" for m in points(args))
    resume = ["--resume"] if (out / "last.pt").exists() else []
    run(egnn_command("train", *flags, "--max-minutes", str(args.minutes), "--snapshot-minutes", marks,
                     "--threads", str(args.threads), "--test-episodes", "10", "--quiet", "--out", str(out), *resume),
        work / f"{name}.log")


def train_original(args, work: Path) -> None:
    out = work / "original"
    if (out / "done.json").exists() or finished("original", args):
        return
    data = Path(args.reference_data)
    if not (data / "mini-imagenet" / "compacted_datasets" / "mini_imagenet_test.pickle").exists():
        run([sys.executable, str(Path(args.ref) / "ref_egnn_omniglot.py"), "build", "--data-root", str(data),
             "--omniglot-dir", str(Path(args.data_root) / "omniglot-py")], work / "original_build.log")
    out.mkdir(parents=True, exist_ok=True)
    run([sys.executable, __file__, "--original-child", "--ref", args.ref, "--reference-data", str(data),
         "--minutes", str(args.minutes), "--every", str(args.every), "--threads", str(args.threads),
         "--work", str(work), "--reference-test-episodes", str(args.reference_test_episodes)], work / "original.log",
        env=TUNED_MALLOC)
    (out / "done.json").write_text(json.dumps({"finished": time.time()}) + "\n")


def original_child(args) -> None:
    """Inside the original's process: its driver, whose periodic validation saves the model at each point."""
    spec = importlib.util.spec_from_file_location("ref_driver", Path(args.ref) / "ref_egnn_omniglot.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    out = Path(args.work) / "original"
    marks = iter(points(args))

    def snapshot(trainer, tt, torch, np, loader, part, episodes, transductive):
        minute = next(marks)
        torch.save({"iteration": trainer.global_step, "enc_module_state_dict": trainer.enc_module.state_dict(),
                    "gnn_module_state_dict": trainer.gnn_module.state_dict()}, out / f"{minute:g}min.pth")
        return {"snapshot_minutes": minute}

    real_evaluate = driver.evaluate
    driver.evaluate = lambda trainer, tt, torch, np, loader, part, *rest: (
        snapshot(trainer, tt, torch, np, loader, part, *rest) if part == "val" else
        real_evaluate(trainer, tt, torch, np, loader, part, *rest))
    sys.argv = ["ref_egnn_omniglot.py", "train", "--ref-dir", str(Path(args.ref) / "fewshot-egnn"), "--data-root",
                args.reference_data, "--work-dir", str(out), "--threads", str(args.threads), "--shots", "1",
                "--transductive", "1", "--budget-min", str(args.minutes), "--val-every-min", str(args.every),
                "--val-episodes", "1", "--test-episodes", str(args.reference_test_episodes), "--eval-modes", "trans"]
    driver.main()
    import shutil

    for minute in points(args):  # points the last iteration jumped over: the model at the budget's end
        if not (out / f"{minute:g}min.pth").exists():
            shutil.copyfile(out / "last_model.pth", out / f"{minute:g}min.pth")


def committed_tests(args) -> dict:
    """Tests already in the results file (per-episode accuracies included): a later session, whose checkout has no
    run directories, continues with the contenders still missing."""
    path = Path(args.out).with_suffix(".json")
    return json.loads(path.read_text()).get("tests", {}) if path.exists() else {}


def finished(name: str, args) -> bool:
    """Whether every point of contender ``name`` is tested at both query counts (in the results file or here)."""
    tests = committed_tests(args)
    return all(f"{name}/{m:g}/q{q}" in tests for m in points(args) for q in (1, 15))


def snapshots(work: Path) -> dict[str, dict[float, Path]]:
    """Each contender's egnn checkpoint per wall-clock point (the original's imported into egnn first)."""
    found: dict[str, dict[float, Path]] = {}
    for name in ("egnn", "egnn_previous"):
        for f in sorted((work / name / "snapshots").glob("*min.pt")):
            found.setdefault(name, {})[float(f.name[:-len("min.pt")])] = f
    for f in sorted((work / "original").glob("*min.pth")):
        minute = float(f.name[:-len("min.pth")])
        imported = work / "original_imported" / f"{minute:g}min"
        if not (imported / "best.pt").exists():
            run(egnn_command("import-reference", str(f), "--out", str(imported), "--dataset", "omniglot", "--way",
                             "5", "--shot", "1", "--transductive"), work / "import.log")
        found.setdefault("original", {})[minute] = imported / "best.pt"
    return found


def test_all(found, args, work: Path) -> dict:
    import torch

    from egnn.data import load_dataset
    from egnn.evaluation import evaluate
    from egnn.models import load_trained

    cache_file = work / "tests.json"
    cache = {**committed_tests(args), **(json.loads(cache_file.read_text()) if cache_file.exists() else {})}
    splits = {}
    for name, marks in found.items():
        for minute, checkpoint in marks.items():
            last = minute == max(marks)
            for q, seed in [(1, 0), (15, 0)] + ([(1, 1), (15, 1)] if last else []):  # the end: a second set too
                key = f"{name}/{minute:g}/q{q}" + (f"/seed{seed}" if seed else "")
                if key in cache:
                    continue
                method, cfg = load_trained(checkpoint)
                size = cfg.image_size
                if size not in splits:
                    splits[size] = load_dataset("omniglot", args.data_root, size)["test"]
                torch.set_num_threads(args.threads)
                res = evaluate(method, splits[size], way=5, shot=1, query=q, episodes=args.episodes,
                               transductive=True, seed=seed, batch_size=10 if size > 28 else 50, dataset="omniglot")
                cache[key] = {**res.to_dict(per_episode=True), "checkpoint": str(checkpoint)}
                tmp = cache_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(cache))
                tmp.replace(cache_file)
                print(f"{key}: {100 * res.accuracy:.2f} ± {100 * res.accuracy_ci95:.2f}", flush=True)
    return cache


LABELS = {"egnn": "egnn (recipe)", "egnn_previous": "egnn (previous default)", "original": "original code"}


def report(cache: dict, args, work: Path, wall: float) -> None:
    from egnn.devices import cpu_name
    from egnn.losses import mean_ci95
    from egnn.provenance import provenance

    names = [n for n in LABELS if any(k.startswith(f"{n}/") for k in cache)]
    curves = {}
    for name in names:
        marks = sorted({float(k.split("/")[1]) for k in cache if k.startswith(f"{name}/")})
        curves[name] = [{"minutes": m, **{f"q{q}": {"accuracy": cache[f"{name}/{m:g}/q{q}"]["accuracy"],
                                                    "ci95": cache[f"{name}/{m:g}/q{q}"]["accuracy_ci95"]}
                                          for q in (1, 15) if f"{name}/{m:g}/q{q}" in cache}} for m in marks]
        end = max(marks)
        curves[name][-1]["seed1"] = {f"q{q}": {"accuracy": cache[k]["accuracy"], "ci95": cache[k]["accuracy_ci95"]}
                                     for q in (1, 15) if (k := f"{name}/{end:g}/q{q}/seed1") in cache}
    diffs = {}
    for m in points(args):
        for q in (1, 15):
            a, b = cache.get(f"egnn/{m:g}/q{q}"), cache.get(f"original/{m:g}/q{q}")
            if a and b:
                import torch

                mean, ci = mean_ci95(torch.tensor(a["per_episode_accuracy"]) - torch.tensor(b["per_episode_accuracy"]))
                diffs[f"{m:g}min_q{q}"] = {"mean": mean, "ci95": ci}
    old = json.loads(Path(args.out).with_suffix(".json").read_text()) if Path(args.out).with_suffix(".json").exists() else {}
    runs = dict(old.get("runs", {}))  # contenders trained in an earlier call keep their facts
    for name in ("egnn", "egnn_previous"):
        res = work / name / "results.json"
        if res.exists():
            r = json.loads(res.read_text())
            runs[name] = {"command": r.get("command"), "iterations": r["iterations_trained"],
                          "train_seconds": r["train_seconds"], "config": r["config"]}
    orig = work / "original" / "results.json"
    if orig.exists():
        r = json.loads(orig.read_text())
        runs["original"] = {"iterations": r["train"]["iterations"], "train_seconds": r["train"]["train_wall_s"],
                            "own_test_1_query": r.get("test_trans")}
    summary = {**provenance("python scripts/time_to_accuracy.py", sys.argv[1:]), "device": cpu_name(),
               "wall_seconds": round(wall, 1), "minutes": args.minutes, "points": points(args),
               "test": {"way": 5, "shot": 1, "episodes": args.episodes, "queries": [1, 15], "seed": 0,
                        "transductive": True},
               "curves": curves, "egnn_minus_original_paired": diffs, "runs": runs,
               "earlier_calls": old.get("earlier_calls", []) + ([{k: old[k] for k in ("command", "git_revision",
                                                                                   "device", "wall_seconds")}]
                                                                 if old else []),
               "tests": {k: {**v, "per_episode_accuracy": [round(x, 4) for x in v["per_episode_accuracy"]]}
                         for k, v in cache.items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(summary, indent=2) + "\n"), (".md", markdown(summary))):
        tmp = out.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out.with_suffix(suffix))
    plot(summary, out.with_suffix(".png"))


def markdown(s: dict) -> str:
    lines = [f"Omniglot 5-way 1-shot, transductive; {s['test']['episodes']} test episodes (seed 0); {s['device']}",
             "", "| minutes | " + " | ".join(f"{LABELS[n]}, 1 / 15 queries (%)" for n in s["curves"]) + " |",
             "|---|" + "---|" * len(s["curves"])]
    for m in s["points"]:
        cells = []
        for name, curve in s["curves"].items():
            p = next((p for p in curve if p["minutes"] == m), None)
            cells.append("—" if p is None else f"{100 * p['q1']['accuracy']:.2f} ± {100 * p['q1']['ci95']:.2f} / "
                                                f"{100 * p['q15']['accuracy']:.2f} ± {100 * p['q15']['ci95']:.2f}")
        lines.append(f"| {m:g} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, curve in s["curves"].items():
        other = curve[-1].get("seed1", {})
        if len(other) == 2:
            lines.append(f"- {LABELS[name]} at {curve[-1]['minutes']:g} min on a second set of 1000 test episodes "
                         f"(seed 1): {100 * other['q1']['accuracy']:.2f} ± {100 * other['q1']['ci95']:.2f} / "
                         f"{100 * other['q15']['accuracy']:.2f} ± {100 * other['q15']['ci95']:.2f}")
    for key, d in s["egnn_minus_original_paired"].items():
        lines.append(f"- egnn − original at {key.replace('min_q', ' min, ').replace('_', ' ')} queries: "
                     f"{100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f} points (paired on the same episodes)")
    return "\n".join(lines) + "\n"


def plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, q in zip(axes, (1, 15)):
        for name, curve in s["curves"].items():
            xs = [p["minutes"] for p in curve]
            ys = [100 * p[f"q{q}"]["accuracy"] for p in curve]
            es = [100 * p[f"q{q}"]["ci95"] for p in curve]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=LABELS[name])
        ax.set_title(f"{q} quer{'y' if q == 1 else 'ies'} per class")
        ax.set_xlabel("training wall-clock (minutes)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend()
    fig.suptitle(f"Omniglot 5-way 1-shot on {s['device']}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock each contender trains for")
    p.add_argument("--every", type=float, default=5.0, help="minutes between the points it is tested at")
    p.add_argument("--egnn-config", default="configs/omniglot_5w1s_cpu.yaml")
    p.add_argument("--contenders", default="egnn,egnn_previous,original")
    p.add_argument("--ref", default=str(REPO.parent / "shared" / "reference"), help="folder of the reference driver")
    p.add_argument("--reference-data", default=os.path.expanduser("~/.cache/egnn/reference_omniglot84"),
                   help="where the driver's 84x84 Omniglot pickles are built once")
    p.add_argument("--data-root", default=os.environ.get("EGNN_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--reference-test-episodes", type=int, default=1000,
                   help="the driver's own test of the original's final model (1 query, its episodes)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="runs/time_to_accuracy")
    p.add_argument("--out", default="results/time_to_accuracy_cpu")
    p.add_argument("--original-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.original_child:
        return original_child(args)
    started = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EGNN_DATA", args.data_root)
    chosen = args.contenders.split(",")
    if "egnn" in chosen:
        train_egnn("egnn", ["--config", args.egnn_config], args, work)
    if "egnn_previous" in chosen:
        train_egnn("egnn_previous", ["--dataset", "omniglot", "--way", "5", "--shot", "1", "--tasks-per-batch", "20",
                                     "--query", "1", "--query-max", "15", "--lr-schedule", "step", "--iterations", "0"],
                   args, work)
    if "original" in chosen:
        train_original(args, work)
    found = snapshots(work)
    cache = test_all(found, args, work)
    report(cache, args, work, time.perf_counter() - started)
    print(f"wrote {args.out}.json, .md, .png")


if __name__ == "__main__":
    main()
