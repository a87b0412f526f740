"""Fair comparisons: every model trained (or loaded) and evaluated on the identical fixed episodes.

A comparison spec (YAML) has ``base`` (config keys shared by all models), ``models`` (name -> config overrides,
or ``checkpoint: PATH`` to load a trained one), ``evaluation`` (``episodes``, ``query``, ``transductive``),
``reference`` (the model the others are compared against) and ``output`` (a path prefix for the files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from egnn.errors import ConfigError
from egnn.reports import read_spec, write_report
from egnn.sweep import sweep

SPEC_KEYS = {"base", "models", "evaluation", "reference", "output"}


def load_spec(path: str | Path) -> dict[str, Any]:
    return read_spec(path, "comparison", SPEC_KEYS, {"models"})


def compare(spec: dict[str, Any], progress: bool = True, only: list[str] | None = None) -> dict[str, Any]:
    """A sweep (:mod:`egnn.sweep`) with one test protocol for all models and paired differences against the
    reference; ``only`` trains and tests those models, for parts of a comparison in parallel processes."""
    base, models = spec.get("base", {}), spec["models"]
    ev = {"episodes": 1000, "query": 1, "transductive": True, **spec.get("evaluation", {})}
    reference = spec.get("reference", next(iter(models)))
    if reference not in models:
        raise ConfigError(f"reference '{reference}' is not one of the models {', '.join(models)}")
    runs = {}
    for name, overrides in models.items():
        overrides = {"out": f"runs/compare/{name}", **(overrides or {})}
        if overrides.get("checkpoint") and not Path(overrides["checkpoint"]).exists():
            overrides.pop("checkpoint")  # not trained yet: train it here, with the spec's budget
        runs[name] = overrides
    unknown = set(only or ()) - set(models)
    if unknown:
        raise ConfigError(f"unknown models {', '.join(sorted(unknown))}; the comparison has {', '.join(models)}")
    summary = sweep({"base": base, "runs": runs, "reference": reference, "runs_dir": "runs/compare",
                     "test": {"queries": [ev["query"]], "episodes": ev["episodes"],
                              "transductive": ev["transductive"]}}, progress=progress, only=only)
    rows, q = {}, str(ev["query"])
    for name, r in summary["runs"].items():
        test = r["test"][q]
        rows[name] = {"model": r["config"]["model"], "checkpoint": r["checkpoint"],
                      **({} if "train_seconds" not in r else {"trained": r["config"]}),
                      "accuracy": test["accuracy"], "accuracy_ci95": test["accuracy_ci95"], "seconds": test["seconds"]}
        if q in r.get("paired_difference", {}):
            d = r["paired_difference"][q]
            rows[name][f"paired_difference_{reference}_minus_this"] = d["mean"]
            rows[name]["paired_difference_ci95"] = d["ci95"]
    protocol = {k: v for k, v in next(iter(summary["runs"].values()))["test"][q]["protocol"].items()}
    return {"protocol": {**protocol, "reference": reference}, "models": rows, "device": summary["device"]}


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
