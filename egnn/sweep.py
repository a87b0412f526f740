"""Label-ratio experiments: semi-supervised EGNN against its labeled-only counterpart (and any baseline).

A sweep spec (YAML) has ``base`` (config keys shared by all runs), ``ratios`` (label ratios), ``models``
(name -> config overrides; ``unlabeled: drop`` makes the labeled-only variant), ``modes`` (``transductive``
and/or ``non-transductive``), ``evaluation`` (``episodes``, ``query``) and ``output`` (a path prefix). Each
(model, mode, ratio) is trained in ``runs/label_ratio/...`` (resumed if already there) and tested on the same
fixed episodes: the labeled-only variant sees those episodes with their unlabeled supports removed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from egnn.config import make_config
from egnn.data import load_dataset
from egnn.errors import ConfigError
from egnn.reports import read_spec, write_report
from egnn.trainer import Trainer, evaluate_config

SPEC_KEYS = {"base", "ratios", "models", "modes", "evaluation", "output"}
MODES = {"transductive": True, "non-transductive": False}


def load_sweep(path: str | Path) -> dict[str, Any]:
    spec = read_spec(path, "sweep", SPEC_KEYS, {"ratios", "models"})
    bad = set(spec.get("modes", MODES)) - set(MODES)
    if bad:
        raise ConfigError(f"sweep config {path}: unknown modes {', '.join(sorted(bad))}; use {', '.join(MODES)}")
    return spec


def label_ratio_sweep(spec: dict[str, Any], progress: bool = True, runs: str | Path = "runs/label_ratio") -> dict:
    base, ev = spec.get("base", {}), {"episodes": 1000, "query": 1, **spec.get("evaluation", {})}
    shared = make_config(base)
    splits = load_dataset(shared.dataset, shared.data_root, shared.image_size)
    rows = []
    for name, overrides in spec["models"].items():
        for mode in spec.get("modes", list(MODES)):
            for ratio in spec["ratios"]:
                out = Path(runs) / f"{shared.dataset}_{shared.way}w{shared.shot}s" / f"{name}_{mode}_r{ratio}"
                cfg = make_config(base, **{**(overrides or {}), "label_ratio": ratio, "transductive": MODES[mode],
                                           "out": str(out)})
                trainer = Trainer(cfg, splits)
                trainer.fit(resume=True, progress=progress)
                trainer.load_best()
                res = evaluate_config(trainer.method, splits["test"], cfg, ev["episodes"], ev["query"])
                rows.append({"model": name, "mode": mode, "label_ratio": ratio, "unlabeled": cfg.unlabeled,
                             "labeled_shots": round(ratio * cfg.shot), "accuracy": res.accuracy,
                             "accuracy_ci95": res.accuracy_ci95, "train_seconds": trainer.train_seconds,
                             "protocol": res.protocol})
    return {"dataset": shared.dataset, "way": shared.way, "shot": shared.shot, "ratios": spec["ratios"],
            "evaluation": ev, "results": rows}


def table(summary: dict[str, Any]) -> str:
    ratios = summary["ratios"]
    head = "| model | mode | " + " | ".join(f"{int(100 * r)}% labeled" for r in ratios) + " |"
    lines = [head, "|---|---|" + "---|" * len(ratios)]
    keys = dict.fromkeys((r["model"], r["mode"]) for r in summary["results"])
    for model, mode in keys:
        cells = {r["label_ratio"]: r for r in summary["results"] if r["model"] == model and r["mode"] == mode}
        lines.append(f"| {model} | {mode} | " + " | ".join(
            f"{100 * cells[r]['accuracy']:.2f} ± {100 * cells[r]['accuracy_ci95']:.2f}" if r in cells else "–"
            for r in ratios) + " |")
    return "\n".join(lines)


def write(summary: dict[str, Any], output: str | Path) -> dict[str, Path]:
    """``<output>.json``, ``<output>.md`` and ``<output>.png`` (accuracy against label ratio, 95% CI bands)."""
    def draw(ax) -> None:
        for model, mode in dict.fromkeys((r["model"], r["mode"]) for r in summary["results"]):
            rs = sorted((r for r in summary["results"] if r["model"] == model and r["mode"] == mode),
                        key=lambda r: r["label_ratio"])
            x = [100 * r["label_ratio"] for r in rs]
            y = [100 * r["accuracy"] for r in rs]
            ci = [100 * r["accuracy_ci95"] for r in rs]
            line, = ax.plot(x, y, marker="o", label=f"{model} ({mode})")
            ax.fill_between(x, [a - c for a, c in zip(y, ci)], [a + c for a, c in zip(y, ci)], alpha=0.2,
                            color=line.get_color())
        ax.set_xlabel("labeled supports (%)")
        ax.set_ylabel("query accuracy (%)")
        ax.set_title(f"{summary['dataset']} {summary['way']}-way {summary['shot']}-shot", fontsize=9)
        ax.legend(fontsize=7)

    return write_report(summary, table(summary), output, draw)
