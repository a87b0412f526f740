"""Fair comparisons: every model trained (or loaded) and evaluated on the identical fixed episodes.

A comparison spec (YAML) has ``base`` (config keys shared by all models), ``models`` (name -> config overrides,
or ``checkpoint: PATH`` to load a trained one), ``evaluation`` (``episodes``, ``query``, ``transductive``),
``reference`` (the model the others are compared against) and ``output`` (a path prefix for the files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from egnn.config import make_config
from egnn.data import load_dataset
from egnn.errors import ConfigError
from egnn.losses import mean_ci95
from egnn.reports import read_spec, write_report
from egnn.trainer import Trainer, evaluate_config, load_trained

SPEC_KEYS = {"base", "models", "evaluation", "reference", "output"}


def load_spec(path: str | Path) -> dict[str, Any]:
    return read_spec(path, "comparison", SPEC_KEYS, {"models"})


def compare(spec: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    base, models = spec.get("base", {}), spec["models"]
    ev = {"episodes": 1000, "query": 1, "transductive": True, **spec.get("evaluation", {})}
    reference = spec.get("reference", next(iter(models)))
    if reference not in models:
        raise ConfigError(f"reference '{reference}' is not one of the models {', '.join(models)}")
    shared = make_config(base)
    splits = load_dataset(shared.dataset, shared.data_root, shared.image_size)
    per_episode, rows = {}, {}
    for name, overrides in models.items():
        overrides = dict(overrides or {})
        checkpoint = overrides.pop("checkpoint", None)
        if checkpoint and Path(checkpoint).exists():
            method, cfg = load_trained(checkpoint, shared.device)
            source = {"checkpoint": str(checkpoint)}
        else:
            cfg = make_config(base, **{"out": f"runs/compare/{name}", **overrides})
            trainer = Trainer(cfg, splits)
            trainer.fit(resume=True, progress=progress)
            method, cfg = load_trained(Path(cfg.out) / "best.pt", shared.device)
            source = {"trained": cfg.to_dict(), "checkpoint": str(Path(cfg.out) / "best.pt")}
        protocol = make_config(base, transductive=ev["transductive"])
        result = evaluate_config(method, splits["test"], protocol, ev["episodes"], ev["query"])
        per_episode[name] = torch.tensor(result.per_episode)
        rows[name] = {"model": cfg.model, **source, "accuracy": result.accuracy,
                      "accuracy_ci95": result.accuracy_ci95, "seconds": round(result.seconds, 2)}
    for name in rows:
        if name != reference:
            diff = per_episode[reference] - per_episode[name]
            mean, ci = mean_ci95(diff)
            rows[name][f"paired_difference_{reference}_minus_this"] = mean
            rows[name]["paired_difference_ci95"] = ci
    return {"protocol": {**result.protocol, "reference": reference}, "models": rows}


def table(summary: dict[str, Any]) -> str:
    ref = summary["protocol"]["reference"]
    lines = [f"| model | accuracy (%) | {ref} − model (paired, %) |", "|---|---|---|"]
    for name, r in summary["models"].items():
        d = r.get(f"paired_difference_{ref}_minus_this")
        paired = "—" if d is None else f"{100 * d:+.2f} ± {100 * r['paired_difference_ci95']:.2f}"
        lines.append(f"| {name} | {100 * r['accuracy']:.2f} ± {100 * r['accuracy_ci95']:.2f} | {paired} |")
    return "\n".join(lines)


def write(summary: dict[str, Any], output: str | Path) -> dict[str, Path]:
    """``<output>.json``, ``<output>.md`` and a bar plot ``<output>.png`` with 95% CI error bars."""
    names = list(summary["models"])
    acc = [100 * summary["models"][n]["accuracy"] for n in names]
    err = [100 * summary["models"][n]["accuracy_ci95"] for n in names]
    p = summary["protocol"]

    def draw(ax) -> None:
        ax.bar(names, acc, yerr=err, capsize=4, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(names)])
        ax.set_ylim(max(0.0, min(acc) - 10), 100)
        ax.set_ylabel("query accuracy (%)")
        ax.set_title(f"{p['dataset']} {p['way']}-way {p['shot']}-shot, {p['query']} q/class, {p['episodes']} episodes",
                     fontsize=9)

    return write_report(summary, table(summary), output, draw, figsize=(1.4 * len(names) + 1.5, 3.2))
