#!/usr/bin/env python
"""Which images to label next, simulated on Omniglot test characters: ``egnn predict --suggest`` against random
and least-confident picks, paired on the same arrangements.

    python scripts/active_labeling.py --checkpoint results/checkpoints/omniglot_5w1s.pt --way 20 \\
        --arrangements 30 --rounds 5 --per-round 10 --out results/active_labeling_omniglot_20w

Each arrangement draws ``--way`` test characters (never seen in training) and all 20 drawings of each: one labeled
example per class to start, the other 19 to label. Each round the model labels the still-unlabeled images
(transductive, as ``egnn predict``), its accuracy on them is recorded, and ``--per-round`` images picked by the
strategy get their true labels and join the examples. Every strategy starts from the same arrangement and the same
first labels, so differences are paired per arrangement. Writes ``OUT.json``, ``OUT.md`` and ``OUT.png``: accuracy
on the unlabeled images against the number of labels, per strategy, and the paired differences.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def simulate(clf, images: torch.Tensor, labels: torch.Tensor, way: int, rounds: int, per_round: int,
             strategy: str, seed: int) -> list[float]:
    """Accuracy on the unlabeled images before each round and after the last: ``rounds + 1`` values."""
    from egnn.suggest import suggest

    labeled = torch.zeros(labels.numel(), dtype=torch.bool)
    labeled[:way] = True  # the first image of every class (the arrangement put them first)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for r in range(rounds + 1):
        pool = (~labeled).nonzero()[:, 0]
        clf.fit(images[labeled], labels[labeled].tolist())
        out = clf.score(images[pool])
        pred = torch.tensor(clf.classes_)[out.probabilities.argmax(-1)]
        curve.append(float((pred == labels[pool]).float().mean()))
        if r < rounds:
            picks = suggest(out.probabilities, out.affinity, per_round, strategy, gen, known=out.known)
            labeled[pool[picks]] = True
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "results/checkpoints/omniglot_5w1s.pt"))
    p.add_argument("--way", type=int, default=20)
    p.add_argument("--arrangements", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--strategies", default="coverage,least-confident,random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=os.environ.get("EGNN_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--out", default="results/active_labeling_omniglot_20w")
    args = p.parse_args()
    started = time.time()
    torch.set_num_threads(args.threads)
    from egnn import FewShotClassifier
    from egnn.data import load_dataset
    from egnn.devices import cpu_name
    from egnn.episodes import EpisodeSampler
    from egnn.losses import mean_ci95
    from egnn.provenance import provenance

    clf = FewShotClassifier.load(args.checkpoint, device="cpu", transductive=True)
    test = load_dataset(clf.cfg.dataset, args.data_root, clf.size)["test"]
    per_class = int(test.class_counts.min())
    sampler = EpisodeSampler(test, args.way, 1, per_class - 1, seed=args.seed)
    strategies = args.strategies.split(",")
    curves = {s: [] for s in strategies}
    for a in range(args.arrangements):
        ep = sampler.episode(a)  # supports (one per class) first, then the 19 others of each class
        for s in strategies:
            curves[s].append(simulate(clf, ep.images, ep.labels, args.way, args.rounds, args.per_round, s,
                                      seed=args.seed * 1000 + a))
        print(f"arrangement {a}: " + ", ".join(f"{s} {100 * curves[s][-1][-1]:.1f}" for s in strategies), flush=True)
    labels_at = [args.way + r * args.per_round for r in range(args.rounds + 1)]
    summary = {}
    for s in strategies:
        t = torch.tensor(curves[s])  # (arrangements, rounds + 1)
        summary[s] = [dict(zip(("mean", "ci95"), mean_ci95(t[:, r]))) for r in range(t.shape[1])]
    paired = {}
    for s in strategies:
        if s == "random":
            continue
        d = torch.tensor(curves[s]) - torch.tensor(curves["random"])
        paired[f"{s} - random"] = [dict(zip(("mean", "ci95"), mean_ci95(d[:, r]))) for r in range(d.shape[1])]
        area = d[:, 1:].mean(1)  # the mean over the rounds after the first labels: one number per arrangement
        paired[f"{s} - random"].append({"rounds_mean": mean_ci95(area)[0], "ci95": mean_ci95(area)[1]})
    report = {**provenance("python scripts/active_labeling.py", started=started), "device": cpu_name(),
              "checkpoint": args.checkpoint, "way": args.way, "arrangements": args.arrangements,
              "rounds": args.rounds, "per_round": args.per_round, "labels": labels_at, "accuracy": summary,
              "paired": paired, "curves": curves}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from egnn.data.paths import atomic_write_text

    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    plot(report, out.with_suffix(".png"))
    print(markdown(report))


def markdown(r: dict) -> str:
    pct = lambda d: f"{100 * d['mean']:.2f} ± {100 * d['ci95']:.2f}"  # noqa: E731
    lines = [f"# What to label next: Omniglot test characters, {r['way']} classes ({r['checkpoint']})", "",
             f"`{r['command']}` at {r['git_revision'][:10]} on {r['device']}, {r['wall_seconds']:.0f} s. "
             f"{r['arrangements']} arrangements of {r['way']} characters x 20 drawings; one label per class to "
             f"start, {r['per_round']} more per round; accuracy on the still-unlabeled images, mean ± 95% CI over "
             "arrangements; paired differences against random picks on the same arrangements.", "",
             "| labels | " + " | ".join(r["accuracy"]) + " | " + " | ".join(r["paired"]) + " |",
             "|---" * (1 + len(r["accuracy"]) + len(r["paired"])) + "|"]
    for i, n in enumerate(r["labels"]):
        lines.append(f"| {n} | " + " | ".join(pct(v[i]) for v in r["accuracy"].values()) + " | "
                     + " | ".join(f"{100 * v[i]['mean']:+.2f} ± {100 * v[i]['ci95']:.2f}" for v in r["paired"].values())
                     + " |")
    lines.append("")
    for name, v in r["paired"].items():
        lines.append(f"- {name}, mean over the rounds after the first labels: {100 * v[-1]['rounds_mean']:+.2f} ± "
                     f"{100 * v[-1]['ci95']:.2f} points")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, v in r["accuracy"].items():
        mean = [100 * x["mean"] for x in v]
        ci = [100 * x["ci95"] for x in v]
        ax.errorbar(r["labels"], mean, yerr=ci, marker="o", capsize=3, label=name)
    ax.set_xlabel("labeled images")
    ax.set_ylabel("accuracy on the unlabeled images (%)")
    ax.set_title(f"Omniglot test, {r['way']} classes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
