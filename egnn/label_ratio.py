"""Label-ratio experiments: semi-supervised EGNN against its labeled-only counterpart (and any baseline).

A sweep spec (YAML) has ``base`` (config keys shared by all runs), ``ratios`` (label ratios), ``models``
(name -> config overrides; ``unlabeled: drop`` makes the labeled-only variant), ``modes`` (``transductive``
and/or ``non-transductive``), ``evaluation`` (``episodes``, ``query``), ``output`` (a path prefix) and
optionally ``train_modes`` (mode -> the mode its models are trained in; e.g. ``{non-transductive:
transductive}`` tests the transductively trained models without transduction, when training per query graph
is too costly). ``evaluation.episodes`` may be a number or a mapping mode -> number (a non-transductive
episode costs a graph per query), and a model's entry may hold ``modes`` to run only some of them. Each
(model, training mode, ratio) is trained once in ``runs/label_ratio/...`` (resumed if already there; at ratio 1
the labeled-only variant is the same run as its semi-supervised twin) and tested on the same fixed episodes:
the labeled-only variant sees those episodes with their unlabeled supports removed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from egnn.config import make_config
from egnn.errors import ConfigError
from egnn.reports import read_spec, write_report
from egnn.sweep import sweep

SPEC_KEYS = {"base", "ratios", "models", "modes", "evaluation", "output", "train_modes"}
MODES = {"transductive": True, "non-transductive": False}


def load_sweep(path: str | Path) -> dict[str, Any]:
    spec = read_spec(path, "sweep", SPEC_KEYS, {"ratios", "models"})
    bad = set(spec.get("modes", MODES)) - set(MODES)
    if bad:
        raise ConfigError(f"sweep config {path}: unknown modes {', '.join(sorted(bad))}; use {', '.join(MODES)}")
    train_modes = spec.get("train_modes") or {}
    if not isinstance(train_modes, dict) or not set(train_modes) | set(train_modes.values()) <= set(MODES):
        raise ConfigError(f"sweep config {path}: train_modes maps a mode to the mode it trains in, "
                          f"e.g. {{non-transductive: transductive}}")
    return spec


def label_ratio_sweep(spec: dict[str, Any], progress: bool = True, runs: str | Path = "runs/label_ratio",
                      only: list[str] | None = None) -> dict:
    """Train (or resume) and test every (model, mode, ratio) of ``spec``, as a :mod:`egnn.sweep` of one run per
    cell; ``only`` restricts it to those models (parts in parallel processes; the reporting call then reads the
    runs' cached tests)."""
    base, ev = spec.get("base", {}), {"episodes": 1000, "query": 1, **spec.get("evaluation", {})}
    train_modes = spec.get("train_modes") or {}
    shared = make_config(base)
    unknown = set(only or ()) - set(spec["models"])
    if unknown:
        raise ConfigError(f"unknown sweep models {', '.join(sorted(unknown))}; the spec has {', '.join(spec['models'])}")
    cells, grid = {}, {}
    for name, overrides in spec["models"].items():
        overrides = dict(overrides or {})
        for mode in overrides.pop("modes", None) or spec.get("modes", list(MODES)):
            trained_as = train_modes.get(mode, mode)
            for ratio in spec["ratios"]:
                cfg = make_config(base, **{**overrides, "label_ratio": ratio, "transductive": MODES[trained_as]})
                # at ratio 1 nothing is unlabeled: keep and drop are the same model, trained once and tested alike
                drop = cfg.unlabeled == "drop" and ratio < 1
                run = f"{cfg.model}_{'drop' if drop else 'keep'}_{trained_as}_r{ratio}"
                extra = {k: v for k, v in overrides.items() if k not in ("model", "unlabeled")}
                if extra:  # other overrides make another model: its own runs
                    run += "_" + hashlib.sha1(repr(sorted(extra.items())).encode()).hexdigest()[:8]
                episodes = ev["episodes"][mode] if isinstance(ev["episodes"], dict) else ev["episodes"]
                key = f"{name}/{mode}/r{ratio}"
                grid[key] = {**overrides, "label_ratio": ratio, "transductive": MODES[trained_as],
                             "unlabeled": "drop" if drop else "keep",
                             "out": str(Path(runs) / f"{shared.dataset}_{shared.way}w{shared.shot}s" / run),
                             "test": {"episodes": episodes, "transductive": MODES[mode]}}
                cells[key] = (name, mode, trained_as, ratio)
    summary = sweep({"base": base, "runs": grid, "runs_dir": str(runs), "test": {"queries": [ev["query"]]}},
                    progress=progress, only=[f"{m}/*" for m in only] if only else None)
    rows = []
    for key, r in summary["runs"].items():
        name, mode, trained_as, ratio = cells[key]
        test = r["test"][str(ev["query"])]
        rows.append({"model": name, "mode": mode, "trained": trained_as, "label_ratio": ratio,
                     "unlabeled": test["protocol"]["unlabeled"], "labeled_shots": round(ratio * shared.shot),
                     "accuracy": test["accuracy"], "accuracy_ci95": test["accuracy_ci95"],
                     "train_seconds": r["train_seconds"], "test_seconds": test["seconds"],
                     "run": r["config"]["out"], "protocol": test["protocol"]})
    return {"dataset": shared.dataset, "way": shared.way, "shot": shared.shot, "ratios": spec["ratios"],
            "evaluation": ev, "train_modes": train_modes, "results": rows, "device": summary["device"]}


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
