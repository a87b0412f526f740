#!/usr/bin/env python
"""How well ``egnn predict --unknown`` says "none of these", on Omniglot test characters.

    python scripts/predict_unknown.py --checkpoint results/checkpoints/omniglot_5w1s.pt \\
        --shapes 5w1s,5w5s,20w1s --episodes 500 --out results/predict_unknown_omniglot

For each episode shape (``5w1s``: 5 known classes, one labeled example each), the threshold is calibrated on the
checkpoint's validation characters (``egnn.unknowns.calibrate``: a false-unknown rate of ``--rate``), then
measured on open-set episodes of the test characters (never seen in training or calibration): the known classes'
queries and the queries of ``--unknown`` absent classes (default half the way), ``--query`` queries per class,
transductive as the checkpoint. Every score below is computed on the same episodes:

- ``similarity`` (what egnn uses): the mean final-layer edge similarity to the labeled examples of the best class;
- ``probability``: the top class probability (the normalised vote), the usual baseline (Hendrycks & Gimpel, 2017);
- ``prototype``: minus the squared Euclidean distance of the query's embedding to the nearest class prototype.

Reported per shape: the AUROC of each score (unknown against known queries), the accuracy of the known queries'
labels (closed set: ignoring the unknown answer; open set: an answer of unknown counts wrong), the recall of the
unknowns, and the false-unknown rate reached on test classes against the one asked for; each with a 95% CI over
episodes. Writes ``OUT.json``, ``OUT.md`` and ``OUT.png``.
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
SCORES = ("similarity", "probability", "prototype")
BINS = 40  # of the similarity histogram in the JSON and the figure


def parse_shape(text: str) -> tuple[int, int]:
    way, shot = text.lower().rstrip("s").split("w")
    return int(way), int(shot)


def prototype_scores(method, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, way: int) -> torch.Tensor:
    with torch.inference_mode():
        emb = method.encode(torch.cat([support, query]).to(method.backbone_device)).float().cpu()
    s = support.shape[0]
    onehot = torch.nn.functional.one_hot(labels, way).float()
    protos = onehot.T @ emb[:s] / onehot.sum(0)[:, None]
    return -torch.cdist(emb[s:], protos).pow(2).amin(-1)


def measure(clf, split, val, way, shot, args) -> dict:
    from egnn.losses import mean_ci95
    from egnn.unknowns import auroc, calibrate, open_set_episodes

    unknown = args.unknown if args.unknown >= 0 else max(1, way // 2)
    cal = calibrate(clf, val, way, shot, rate=args.rate, query=args.query, unknown=unknown,
                    episodes=args.calibration_episodes, seed=args.seed)
    per_episode = {k: [] for k in ("closed_acc", "open_acc", "unknown_recall", "false_unknown")}
    pooled = {name: ([], []) for name in SCORES}  # (unknown scores, known scores)
    per_episode_auroc = {name: [] for name in SCORES}
    for ep in open_set_episodes(split, way, shot, args.query, unknown, args.episodes, seed=args.seed + 1):
        clf.fit(ep.support, ep.support_labels.tolist())
        out = clf.score(ep.query)
        known = ep.query_labels >= 0
        pred = out.probabilities.argmax(-1)
        called_unknown = out.known < cal.threshold
        per_episode["closed_acc"].append(float((pred[known] == ep.query_labels[known]).float().mean()))
        per_episode["open_acc"].append(float(((pred[known] == ep.query_labels[known]) & ~called_unknown[known])
                                             .float().mean()))
        per_episode["unknown_recall"].append(float(called_unknown[~known].float().mean()))
        per_episode["false_unknown"].append(float(called_unknown[known].float().mean()))
        scores = {"similarity": out.known, "probability": out.probabilities.amax(-1),
                  "prototype": prototype_scores(clf.method, ep.support, ep.support_labels, ep.query, way)}
        for name, score in scores.items():
            pooled[name][0].append(score[~known])
            pooled[name][1].append(score[known])
            per_episode_auroc[name].append(auroc(score[~known], score[known]))
    row = {"shape": f"{way}-way {shot}-shot", "way": way, "shot": shot, "query": args.query,
           "unknown_classes": unknown, "episodes": args.episodes, "calibration": cal.__dict__}
    for key, values in per_episode.items():
        mean, ci = mean_ci95(values)
        row[key] = {"mean": mean, "ci95": ci}
    row["auroc"] = {}
    for name in SCORES:
        mean, ci = mean_ci95(per_episode_auroc[name])
        row["auroc"][name] = {"per_episode_mean": mean, "ci95": ci,
                              "pooled": auroc(torch.cat(pooled[name][0]), torch.cat(pooled[name][1]))}
    row["histogram"] = {"bins": BINS, **{name: torch.histc(torch.cat(pooled["similarity"][i]).float(), BINS, 0, 1)
                                          .int().tolist() for i, name in ((1, "known"), (0, "unknown"))}}
    return row


def markdown(report: dict) -> str:
    lines = [f"# Unknowns on Omniglot test characters ({report['checkpoint']})", "",
             f"`{report['command']}` at {report['git_revision'][:10]} on {report['device']}, {report['wall_seconds']:.0f} s. "
             f"Threshold calibrated on the validation characters at a false-unknown rate of "
             f"{100 * report['rate']:g}%; measured on {report['rows'][0]['episodes']} open-set test episodes per "
             f"shape, {report['rows'][0]['query']} queries per class, transductive. Mean ± 95% CI over episodes.", "",
             "| shape | absent classes | AUROC similarity | AUROC probability | AUROC prototype | known accuracy "
             "(closed / open set) | unknowns recalled | false-unknown rate (asked " f"{100 * report['rate']:g}%) |",
             "|---|---|---|---|---|---|---|---|"]
    pct = lambda d: f"{100 * d['mean']:.2f} ± {100 * d['ci95']:.2f}"  # noqa: E731
    for r in report["rows"]:
        au = {k: f"{v['per_episode_mean']:.3f} ± {v['ci95']:.3f}" for k, v in r["auroc"].items()}
        lines.append(f"| {r['shape']} | {r['unknown_classes']} | {au['similarity']} | {au['probability']} | "
                     f"{au['prototype']} | {pct(r['closed_acc'])} / {pct(r['open_acc'])} | {pct(r['unknown_recall'])} "
                     f"| {pct(r['false_unknown'])} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        edges = [i / r["histogram"]["bins"] for i in range(r["histogram"]["bins"])]
        for name, label in (("known", "known classes"), ("unknown", "absent classes")):
            counts = r["histogram"][name]
            ax.bar(edges, [c / sum(counts) for c in counts], width=1 / len(edges), align="edge", alpha=0.6, label=label)
        ax.axvline(r["calibration"]["threshold"], color="k", ls="--", lw=1, label="threshold (from validation)")
        ax.set_title(f"{r['shape']}, AUROC {r['auroc']['similarity']['per_episode_mean']:.3f}")
        ax.set_xlabel("mean edge similarity to the best class")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "results/checkpoints/omniglot_5w1s.pt"))
    p.add_argument("--shapes", default="5w1s,5w5s,20w1s")
    p.add_argument("--episodes", type=int, default=500)
    p.add_argument("--calibration-episodes", type=int, default=200)
    p.add_argument("--query", type=int, default=5)
    p.add_argument("--unknown", type=int, default=-1, help="absent classes per episode (-1: half the way)")
    p.add_argument("--rate", type=float, default=0.05, help="false-unknown rate the threshold is calibrated to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=os.environ.get("EGNN_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--out", default="results/predict_unknown_omniglot")
    args = p.parse_args()
    started = time.time()
    torch.set_num_threads(args.threads)
    from egnn import FewShotClassifier
    from egnn.data import load_dataset
    from egnn.devices import cpu_name
    from egnn.provenance import provenance

    clf = FewShotClassifier.load(args.checkpoint, device="cpu")
    splits = load_dataset(clf.cfg.dataset, args.data_root, clf.size)
    rows = []
    for text in args.shapes.split(","):
        way, shot = parse_shape(text)
        rows.append(measure(clf, splits["test"], splits["val"], way, shot, args))
        r = rows[-1]
        print(f"{r['shape']}: AUROC similarity {r['auroc']['similarity']['per_episode_mean']:.3f}, probability "
              f"{r['auroc']['probability']['per_episode_mean']:.3f}, prototype "
              f"{r['auroc']['prototype']['per_episode_mean']:.3f}; false-unknown "
              f"{100 * r['false_unknown']['mean']:.2f}%, unknowns recalled {100 * r['unknown_recall']['mean']:.2f}%",
              flush=True)
    report = {**provenance("python scripts/predict_unknown.py", started=started), "device": cpu_name(),
              "checkpoint": args.checkpoint, "rate": args.rate, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from egnn.data.paths import atomic_write_text

    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out}.json, .md, .png")


if __name__ == "__main__":
    sys.exit(main())
