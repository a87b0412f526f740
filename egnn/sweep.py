"""Sweeps: train (or load) every run of a grid of config values, test all on the same fixed episodes, report.

A sweep spec (YAML):

- ``base``: config keys shared by every run (may ``include`` a config file, relative to the spec);
- ``runs``: name -> config overrides (may ``include`` a config file, hold ``checkpoint: PATH`` to load a
  trained model instead of training one, or ``test`` to change that run's test settings); default: one run of
  ``base`` alone;
- ``grid``: config key -> list of values; every run is crossed with every combination, named
  ``<run>/key=value,...``;
- ``test``: ``queries`` (queries per class, a list), ``episodes``, optionally ``seeds`` (evaluation seeds, a list:
  each another set of episodes; results of seeds other than the run's own are keyed ``<queries>/seed<s>``) and
  ``transductive`` (test every run in this mode; default: each in its own);
- ``reference``: a run the others are compared against, as paired differences on identical episodes; or a list
  of runs, each run then paired with the first of them tested on its episodes (e.g. cross-way: a model trained at
  5 ways against the native one at each test way);
- ``output``: the report's path prefix (JSON, Markdown, PNG); ``runs_dir``: where runs train (default
  ``runs/sweep/<spec name>``);
- ``set``: config keys that win over ``base``, ``runs`` and ``grid`` in every run (the CLI's ``--set KEY=VALUE``:
  a GPU spec tried on the CPU, a shorter budget).

Runs train in the order listed, so a later run may build on an earlier one's ``best.pt`` (e.g. a meta-transfer
run on a pretraining run): ``{runs}`` in a value is the run directory, e.g.
``backbone_checkpoint: "{runs}/pretrain/best.pt"``. Each run resumes where it stopped, and caches its test results, with per-episode
accuracies, in its directory: ``only`` trains and tests some runs (parts of one sweep in parallel processes)
and a final call without it reads them all and writes the report.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
import yaml

from egnn.config import expand_includes, make_config, read_yaml
from egnn.data import load_dataset
from egnn.data.paths import atomic_write_text
from egnn.devices import describe
from egnn.errors import ConfigError
from egnn.evaluation import evaluate_config
from egnn.losses import mean_ci95
from egnn.models import load_trained
from egnn.reports import read_spec, write_report
from egnn.trainer import Trainer

SPEC_KEYS = {"base", "runs", "grid", "test", "reference", "output", "runs_dir", "set"}
TEST_KEYS = {"queries", "episodes", "transductive", "seeds"}
# what fixes the test episodes (not the mode, the device or the graph they are run on): equal, the same episodes
EPISODE_KEYS = ("dataset", "split", "way", "shot", "query", "episodes", "label_ratio", "seed")


def load_sweep(path: str | Path, set_values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read and check a sweep spec, ``set_values`` added to its ``set``: every run's config is built (and
    validated) before anything trains."""
    path = Path(path)
    spec = read_spec(path, "sweep", SPEC_KEYS, set())
    if not isinstance(spec.get("set") or {}, dict):
        raise ConfigError(f"sweep config {path}: set maps config keys to values, got {spec['set']!r}")
    spec["set"] = {**(spec.get("set") or {}), **(set_values or {})}
    spec["runs"] = {name: _expand_run(o, path.parent) for name, o in (spec.get("runs") or {"": {}}).items()}
    spec.setdefault("runs_dir", f"runs/sweep/{path.stem}")
    spec.setdefault("output", f"results/sweep_{path.stem}")
    test = spec.setdefault("test", {})
    if not isinstance(test, dict) or set(test) - TEST_KEYS:
        raise ConfigError(f"sweep config {path}: test takes {', '.join(sorted(TEST_KEYS))}, got {test!r}")
    grid = spec.setdefault("grid", {})
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"sweep config {path}: grid maps config keys to non-empty lists of values, got {grid!r}")
    runs = expand(spec)
    for ref in references(spec):
        if ref not in runs:
            raise ConfigError(f"sweep config {path}: reference '{ref}' is not one of its runs {', '.join(runs)}")
    for name, overrides in runs.items():
        make_config(spec.get("base", {}), **{k: v for k, v in overrides.items() if k not in ("checkpoint", "test")})
    return spec


def _expand_run(overrides: dict[str, Any] | None, relative_to: Path) -> dict[str, Any]:
    """A run's overrides with its includes expanded; an ``out`` from an included file is dropped (the sweep owns its
    run directories: two runs of one file, transductive and not, would share one, the second resuming the first).
    An ``out`` the run names itself stays: compare and label-ratio share one run between two rows that way."""
    overrides = dict(overrides or {})
    own_out = overrides.get("out")
    expanded = expand_includes(overrides, relative_to)
    expanded.pop("out", None)
    return expanded if own_out is None else {**expanded, "out": own_out}


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["max_minutes=4", "device=cpu"]`` -> ``{"max_minutes": 4, "device": "cpu"}``: values read as YAML scalars,
    keys as config keys or their flag spelling (``max-minutes``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE, got '{item}': e.g. --set max_minutes=4")
        try:
            out[key.strip().replace("-", "_")] = read_yaml(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: the value is not a YAML scalar ({exc.__class__.__name__}): quote it "
                              f"or fix it") from None
    return out


def expand(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every run of ``spec``: name -> its config overrides, the grid's combinations crossed with ``runs``."""
    keys = list(spec.get("grid", {}))
    points = [dict(zip(keys, values)) for values in itertools.product(*(spec["grid"][k] for k in keys))]
    out = {}
    for name, overrides in spec["runs"].items():
        for point in points:
            label = ",".join(f"{k}={v}" for k, v in point.items())
            out["/".join(p for p in (name, label) if p)] = {**overrides, **point, **spec.get("set", {})}
    return out


def chosen_runs(spec: dict[str, Any], only: list[str] | None = None) -> list[str]:
    """The names of ``spec``'s runs that ``only`` (names or shell patterns) picks: all of them without it; an
    ``only`` that picks none is a :class:`ConfigError`."""
    runs = expand(spec)
    chosen = [n for n in runs if not only or any(fnmatch(n, pattern) for pattern in only)]
    if only and not chosen:
        raise ConfigError(f"--only {' '.join(only)} matches no run of the sweep; its runs are {', '.join(runs)}")
    return chosen


def sweep(spec: dict[str, Any], progress: bool = True, only: list[str] | None = None) -> dict[str, Any]:
    """Train (or resume, or load) and test every run of ``spec``; ``only`` (names or shell patterns) restricts
    the sweep to those runs. Returns the summary: per run, its config, training facts and test results."""
    runs = expand(spec)
    chosen = chosen_runs(spec, only)
    # "{runs}" in a value (of base or of a run) is the sweep's run directory: a run may name an earlier run's
    # checkpoint
    base = _fill_runs(spec.get("base", {}), spec["runs_dir"])
    test = {"queries": [1], "episodes": 1000, **spec.get("test", {})}
    splits_of: dict[tuple, Any] = {}
    rows = {}
    for name in chosen:
        overrides = _fill_runs(runs[name], spec["runs_dir"])
        checkpoint = overrides.pop("checkpoint", None)
        run_test = {**test, **overrides.pop("test", {})}  # a run may test on its own number of episodes or mode
        # a run's directory is the sweep's (base's ``out`` would put every run into one), unless the run names its own
        cfg = make_config({**base, "out": str(Path(spec["runs_dir"]) / name.replace("/", "_")), **overrides})
        key = (cfg.dataset, cfg.data_root, cfg.image_size)
        if key not in splits_of:
            splits_of[key] = load_dataset(*key)
        rows[name] = run_and_test(cfg, splits_of[key], run_test, checkpoint, progress)
    summary = {"spec": {k: spec.get(k) for k in ("base", "grid", "test", "reference")}, "runs": rows,
               "device": devices_of(rows)}
    pair(rows, references(spec))
    return summary


def devices_of(rows: dict[str, Any]) -> str:
    """The machines of a report's numbers: its rows' devices (parts run with --only or merged from an earlier
    report may have run elsewhere)."""
    return ", ".join(sorted({row["device"] for row in rows.values()}))


def pair(rows: dict[str, Any], refs: list[str]) -> None:
    """Each row that is not a reference gets ``paired_difference`` against the first of ``refs`` tested on its
    episodes (and ``paired_with``, that reference's name)."""
    refs = [r for r in refs if r in rows]
    for name, row in rows.items():
        row.pop("paired_difference", None), row.pop("paired_with", None)
        if not refs or name in refs:
            continue
        pairs = ((ref, paired_differences(rows[ref], row)) for ref in refs)
        ref, row["paired_difference"] = next(((r, d) for r, d in pairs if d), (None, {}))  # first on its episodes
        if ref is not None:
            row["paired_with"] = ref


def kept_rows(spec: dict[str, Any], report: str | Path, replaced: list[str]) -> dict[str, Any]:
    """The rows of ``report``, the spec's existing report (when there is one), that a merge keeps: those of the
    spec's runs other than ``replaced``, each marked ``made`` with the command and revision that made it. A kept
    row must still be what the spec asks for (its config, or the checkpoint it loaded, and the test protocol),
    else a :class:`ConfigError`, raised before anything trains; rows of runs the spec no longer has are dropped."""
    report = Path(report)
    if not report.exists():
        return {}
    try:
        old = json.loads(report.read_text())
        old_rows, old_test = old["runs"], old["spec"]["test"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{report} is not a sweep report ({exc.__class__.__name__}): move it away, or give "
                          f"--output another path") from None
    if old_test != spec.get("test", {}):
        raise ConfigError(f"{report} was tested with {old_test}, the spec now says {spec.get('test', {})}: "
                          f"re-make every run, or report to another --output")
    wanted = expand(spec)
    base = _fill_runs(spec.get("base", {}), spec["runs_dir"])
    kept = {}
    for name, row in old_rows.items():
        if name in replaced or name not in wanted:
            continue
        _check_kept(report, name, row, base, _fill_runs(wanted[name], spec["runs_dir"]))
        made = row.get("made") or {k: old.get(k) for k in ("command", "git_revision", "uncommitted_changes")}
        kept[name] = {**row, "made": made}
    return kept


def merge(summary: dict[str, Any], spec: dict[str, Any], kept: dict[str, Any],
          made: dict[str, Any]) -> dict[str, Any]:
    """``summary`` (the runs trained and tested now, each marked ``made`` by this call) and the ``kept`` rows of
    the spec's earlier report (:func:`kept_rows`) as one report, in the spec's order and paired anew: a sweep
    whose parts ran in different sessions or on different machines, their run directories gone, reported whole."""
    rows = {name: {**row, "made": made} for name, row in summary["runs"].items()}
    merged = {name: rows.get(name) or kept[name] for name in expand(spec) if name in rows or name in kept}
    pair(merged, references(spec))
    return {**summary, "runs": merged, "device": devices_of(merged)}


def _check_kept(report: Path, name: str, row: dict[str, Any], base: dict[str, Any],
                overrides: dict[str, Any]) -> None:
    """A report's row of run ``name`` is what the spec's ``overrides`` ask for now, else a :class:`ConfigError`."""
    overrides = dict(overrides)
    checkpoint, _ = overrides.pop("checkpoint", None), overrides.pop("test", None)
    if checkpoint or "train_seconds" not in row:
        if row.get("checkpoint") != checkpoint:
            raise ConfigError(f"{report}: its row {name} tested {row.get('checkpoint')}, the spec now loads "
                              f"{checkpoint or 'nothing (it trains)'}: name it in --only to re-make it")
        return
    want = make_config({**base, **overrides}).to_dict()
    changed = [k for k in want if k != "out" and k in row["config"] and want[k] != row["config"][k]]
    if changed:
        was = ", ".join(f"{k}={row['config'][k]!r}" for k in changed)
        now = ", ".join(f"{k}={want[k]!r}" for k in changed)
        raise ConfigError(f"{report}: its row {name} was trained with {was}, the spec now gives {now}: name it in "
                          f"--only to re-make it, or restore the spec")


def references(spec: dict[str, Any]) -> list[str]:
    """The spec's ``reference`` as a list (one name, a list of names, or none)."""
    ref = spec.get("reference")
    return [] if ref is None else [ref] if isinstance(ref, str) else list(ref)


def trained_at(run: Path) -> list[dict[str, Any]]:
    """Which revision trained which stretch of a run (``sessions.jsonl``, one line per start or resume)."""
    log = run / "sessions.jsonl"
    if not log.exists():
        return []
    return [{k: r.get(k) for k in ("from_iteration", "git_revision", "uncommitted_changes")}
            for r in map(json.loads, log.read_text().splitlines())]


def _fill_runs(values: dict[str, Any], runs_dir: str | Path) -> dict[str, Any]:
    return {k: v.replace("{runs}", str(runs_dir)) if isinstance(v, str) else v for k, v in values.items()}


def run_and_test(cfg, splits, test: dict[str, Any], checkpoint: str | None, progress: bool) -> dict[str, Any]:
    """Train ``cfg`` (resuming; unless ``checkpoint`` names a trained model) and test its best checkpoint at each
    of ``test["queries"]``; results cached in the run directory, keyed by the checkpoint and the protocol."""
    if checkpoint:
        method, trained = load_trained(checkpoint, cfg.device)
        facts = {"checkpoint": str(checkpoint), "model": trained.model}
        # keyed by content: a copy or a fresh checkout of the same file (a new mtime) keeps its tests
        with open(checkpoint, "rb") as f:
            tag = "sha" + hashlib.file_digest(f, "sha256").hexdigest()[:16]
        legacy = str(Path(checkpoint).stat().st_mtime_ns)  # the key of caches written before content keys
    else:
        trainer = Trainer(cfg, splits)
        trainer.fit(resume=True, progress=progress, wait=True)  # parallel parts may share a run
        method, trained = trainer.method, cfg
        facts = {"checkpoint": str(Path(cfg.out) / "best.pt"), "best_iteration": trainer.best_iteration,
                 "iterations_trained": trainer.iteration, "stopped": trainer.stop_reason(),
                 "best_val_acc": trainer.best_val, "train_seconds": trainer.train_seconds,
                 "trained_at": trained_at(Path(cfg.out))}
        tag, legacy = f"it{trainer.best_iteration}", None
        trainer.load_best()
    # the run's config sets the test protocol (for a loaded checkpoint: the spec's, not the one it trained with)
    protocol = replace(cfg, transductive=test.get("transductive", cfg.transductive))
    # tests are cached in the run directory, keyed by the model (its best iteration, or a loaded file's content)
    cache = Path(cfg.out) / "sweep_tests.json"
    stored = json.loads(cache.read_text()) if cache.exists() else {}
    results, new = {}, {}
    for seed, q in itertools.product(test.get("seeds", [protocol.eval_seed]), test["queries"]):
        episodes = replace(protocol, eval_seed=seed)
        what = (f"{episodes.test_way or episodes.way}w{episodes.shot}s_q{q}_{test['episodes']}x_"
                f"seed{seed}_r{episodes.label_ratio}_{episodes.unlabeled}_"
                f"{'trans' if episodes.transductive else 'nontrans'}")
        key = f"{tag}_{what}"
        label = str(q) if seed == protocol.eval_seed else f"{q}/seed{seed}"
        if key not in stored and legacy and f"{legacy}_{what}" in stored:
            stored[key] = stored[f"{legacy}_{what}"]
            atomic_write_text(cache, json.dumps(stored))
        if key not in stored:
            res = evaluate_config(method, splits["test"], episodes, test["episodes"], q)
            stored[key] = res.to_dict(per_episode=True)
            new[label] = res.accuracy
            atomic_write_text(cache, json.dumps(stored))  # each test as it ends: a stopped sweep keeps what it tested
        results[label] = stored[key]
    if new:
        board = None if checkpoint else trainer.tensorboard()  # a trained run's curves end with its tests
        if board is not None:
            board.test(new, trainer.iteration)
            board.close()
    return {"config": trained.to_dict(), **facts, "device": describe(cfg.device), "test": results}


def paired_differences(ref: dict[str, Any], row: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per test query count both have on the same episodes: mean and 95% CI of (reference − this run)."""
    out = {}
    for q, r in row["test"].items():
        a, b = ref["test"].get(q), r
        if a is None or any(a["protocol"][k] != b["protocol"][k] for k in EPISODE_KEYS):
            continue  # not the same episodes
        mean, ci = mean_ci95(torch.tensor(a["per_episode_accuracy"]) - torch.tensor(b["per_episode_accuracy"]))
        out[q] = {"mean": mean, "ci95": ci}
    return out


def table(summary: dict[str, Any]) -> str:
    """Markdown: a row per run, a column per test query count, paired differences where a reference is set."""
    queries = list(dict.fromkeys(q for r in summary["runs"].values() for q in r["test"]))
    refs = references(summary["spec"])
    ref = refs[0] if len(refs) == 1 else "reference" if refs else None
    head = "| run | " + " | ".join(f"test: {q} q/class (%)" for q in queries)
    head += f" | {ref} − run (paired, %)" if ref else ""
    lines = [head + " | train time | best iteration |", "|---|" + "---|" * (len(queries) + bool(ref) + 2)]
    for name, r in summary["runs"].items():
        cells = [f"{100 * r['test'][q]['accuracy']:.2f} ± {100 * r['test'][q]['accuracy_ci95']:.2f}"
                 if q in r["test"] else "–" for q in queries]
        if ref:
            d = r.get("paired_difference", {})
            paired = ", ".join(f"{100 * v['mean']:+.2f} ± {100 * v['ci95']:.2f} ({q} q)" for q, v in d.items())
            cells.append(f"{r['paired_with']}: {paired}" if paired and len(refs) > 1 else paired or "—")
        seconds = r.get("train_seconds")
        took = "loaded" if seconds is None else f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {took} | {r.get('best_iteration', '–')} |")
    return "\n".join(lines)


def write(summary: dict[str, Any], output: str | Path) -> dict[str, Path]:
    """``<output>.json``, ``<output>.md`` and ``<output>.png``: grouped bars per run, one per test query count,
    with 95% CIs."""
    names = list(summary["runs"])
    queries = list(dict.fromkeys(q for r in summary["runs"].values() for q in r["test"]))

    def draw(ax) -> None:
        width = 0.8 / len(queries)
        low = 100.0
        for i, q in enumerate(queries):
            rows = [summary["runs"][n]["test"].get(q) for n in names]
            acc = [100 * r["accuracy"] if r else 0.0 for r in rows]
            err = [100 * r["accuracy_ci95"] if r else 0.0 for r in rows]
            ax.bar([j + i * width for j in range(len(names))], acc, width, yerr=err, capsize=3, label=f"{q} q/class")
            low = min(low, *(a for a, r in zip(acc, rows) if r))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(max(0.0, low - 10), 100)
        ax.set_ylabel("query accuracy (%)")
        ax.legend(fontsize=7)

    return write_report(summary, table(summary), output, draw, figsize=(0.9 * len(names) + 2.5, 3.6))
