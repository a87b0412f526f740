"""egnn sweep: a grid of runs trained through the one trainer, tested on identical episodes, reported once."""
import json
import os
import shutil

import pytest
import torch
import yaml

from egnn.config import load_config, make_config
from egnn.data import load_dataset
from egnn.errors import ConfigError
from egnn.losses import mean_ci95
from egnn.sweep import expand, load_sweep, parse_set
from egnn.evaluation import evaluate_config
from egnn.trainer import Trainer
from tests.conftest import assert_user_error, cli

BASE = {"dataset": "glyphs", "way": 3, "shot": 1, "query_max": 0, "iterations": 4, "tasks_per_batch": 2,
        "val_every": 2, "val_episodes": 4, "embedding": 16, "node_features": 8, "edge_features": 8, "eval_batch": 10,
        "threads": 1}


def write_spec(tmp_path, **kw):
    spec = {"base": BASE, "runs": {"q1": {"query": 1}, "q2": {"query": 2}}, "grid": {"transductive": [True, False]},
            "test": {"queries": [1, 2], "episodes": 12}, "reference": "q1/transductive=True",
            "output": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"), **kw}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path / "sweep.yaml"


def test_grid_names_cross_every_run_with_every_combination(tmp_path):
    spec = load_sweep(write_spec(tmp_path, grid={"transductive": [True, False], "shot": [1, 2]}, reference=None))
    runs = expand(spec)
    assert list(runs) == [f"{r}/transductive={t},shot={s}" for r in ("q1", "q2") for t in (True, False) for s in (1, 2)]
    assert runs["q2/transductive=False,shot=2"] == {"query": 2, "transductive": False, "shot": 2}


def test_sweep_trains_what_egnn_train_trains_and_pairs_runs_on_the_same_episodes(tmp_path):
    proc = cli("sweep", write_spec(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert (tmp_path / "report.md").read_text().startswith("| run |") and (tmp_path / "report.png").stat().st_size
    assert report["git_revision"] and "egnn sweep" in report["command"] and report["wall_seconds"] > 0
    assert report["device"].startswith("cpu (")
    assert all(r["device"] == report["device"] for r in report["runs"].values())
    # the same config trained directly gives bit-identical test episodes' accuracies
    cfg = make_config(BASE, query=2, transductive=False, out=str(tmp_path / "direct"))
    trainer = Trainer(cfg)
    trainer.fit(progress=False)
    trainer.load_best()
    direct = evaluate_config(trainer.method, trainer.splits["test"], cfg, 12, 2)
    row = report["runs"]["q2/transductive=False"]
    assert row["test"]["2"]["per_episode_accuracy"] == direct.per_episode
    assert row["iterations_trained"] == 4 and row["config"]["query"] == 2
    # paired differences: reference minus run, episode by episode, at each test query count
    ref = report["runs"]["q1/transductive=True"]["test"]["2"]["per_episode_accuracy"]
    mean, ci = mean_ci95(torch.tensor(ref) - torch.tensor(direct.per_episode))
    assert row["paired_difference"]["2"] == {"mean": mean, "ci95": ci}
    assert "paired_difference" not in report["runs"]["q1/transductive=True"]


def test_parts_run_alone_then_one_call_reports_from_their_cache(tmp_path):
    spec = write_spec(tmp_path)
    assert cli("sweep", spec, "--only", "q1/*", "--quiet").returncode == 0
    assert not (tmp_path / "report.json").exists()  # a part writes no report
    part = cli("sweep", spec, "--only", "q2/transductive=True", "--quiet")
    assert part.returncode == 0 and "q2/transductive=True" in part.stdout
    tested = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/best.pt")}
    assert len(tested) == 3
    assert cli("sweep", spec, "--quiet").returncode == 0  # trains only the missing run, tests only it
    assert all(p.stat().st_mtime_ns == t for p, t in tested.items())
    assert len(json.loads((tmp_path / "report.json").read_text())["runs"]) == 4
    assert_user_error(cli("sweep", spec, "--only", "nope"), "--only nope matches no run of the sweep")


def test_set_wins_over_base_runs_and_grid_and_a_part_may_report_alone(tmp_path):
    spec = write_spec(tmp_path)
    runs = expand(load_sweep(spec, parse_set(["query=3", "transductive=false", "max-minutes=0.5"])))
    assert all(o["query"] == 3 and o["transductive"] is False and o["max_minutes"] == 0.5 for o in runs.values())
    listed = cli("sweep", spec, "--list", "--only", "q2/*")
    assert listed.stdout.split() == ["q2/transductive=True", "q2/transductive=False"]
    part = cli("sweep", spec, "--only", "q1/*", "--report", "--set", "iterations=2", "--output", tmp_path / "part",
                "--quiet")
    assert part.returncode == 0, part.stderr
    report = json.loads((tmp_path / "part.json").read_text())
    assert sorted(report["runs"]) == ["q1/transductive=False", "q1/transductive=True"]
    assert all(r["iterations_trained"] == 2 for r in report["runs"].values())
    assert "--set iterations=2" in report["command"] and not (tmp_path / "report.json").exists()
    assert_user_error(cli("sweep", spec, "--set", "iterations"), "--set takes KEY=VALUE")
    assert_user_error(cli("sweep", spec, "--set", "wayy=3"), "unknown config key(s) wayy")


def test_merge_adds_a_part_to_the_report_after_the_other_run_directories_are_gone(tmp_path):
    spec = write_spec(tmp_path)
    assert cli("sweep", spec, "--only", "q1/*", "--report", "--quiet").returncode == 0
    first = json.loads((tmp_path / "report.json").read_text())
    shutil.rmtree(tmp_path / "runs")  # a new checkout: only the committed report is left
    proc = cli("sweep", spec, "--only", "q2/transductive=True", "--merge", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "kept from" in proc.stdout and "q1/transductive=False" in proc.stdout
    merged = json.loads((tmp_path / "report.json").read_text())
    assert list(merged["runs"]) == ["q1/transductive=True", "q1/transductive=False", "q2/transductive=True"]
    for name in ("q1/transductive=True", "q1/transductive=False"):  # kept as they were, with who made them
        kept = merged["runs"][name]
        assert kept["test"] == first["runs"][name]["test"] and kept["config"] == first["runs"][name]["config"]
        assert kept["made"] == {k: first[k] for k in ("command", "git_revision", "uncommitted_changes")}
    new = merged["runs"]["q2/transductive=True"]
    assert "--merge" in new["made"]["command"] and merged["command"] == new["made"]["command"]
    assert "--report" in merged["runs"]["q1/transductive=True"]["made"]["command"]
    # the new row is paired with the kept reference, episode by episode
    ref = first["runs"]["q1/transductive=True"]["test"]["2"]["per_episode_accuracy"]
    diff = torch.tensor(ref) - torch.tensor(new["test"]["2"]["per_episode_accuracy"])
    assert new["paired_difference"]["2"] == dict(zip(("mean", "ci95"), mean_ci95(diff)))
    assert "| q2/transductive=True |" in (tmp_path / "report.md").read_text()
    # a kept row must still be what the spec asks for: refused before anything trains
    changed = write_spec(tmp_path, base={**BASE, "embedding": 32})
    assert_user_error(cli("sweep", changed, "--only", "q2/transductive=False", "--merge"),
                      "its row q1/transductive=True was trained with embedding=16, the spec now gives embedding=32")
    assert not (tmp_path / "runs" / "q2_transductive=False").exists()
    other_test = write_spec(tmp_path, test={"queries": [1, 2], "episodes": 10})
    assert_user_error(cli("sweep", other_test, "--only", "q2/transductive=False", "--merge"), "was tested with")
    (tmp_path / "report.json").write_text("{")
    assert_user_error(cli("sweep", spec, "--only", "q2/transductive=False", "--merge"), "is not a sweep report")


def test_a_list_of_references_pairs_each_run_with_the_one_on_its_episodes(tmp_path):
    # cross-way: the 3-way model tested at 2 ways is paired with the native 2-way model, not the 3-way one
    spec = write_spec(tmp_path, runs={"w3": {"way": 3}, "w2": {"way": 2},
                                      "w3@2": {"checkpoint": "{runs}/w3/best.pt", "way": 2}},
                      grid={}, reference=["w3", "w2"])
    assert cli("sweep", spec, "--quiet").returncode == 0
    report = json.loads((tmp_path / "report.json").read_text())
    rows = report["runs"]
    cross = rows["w3@2"]
    assert cross["paired_with"] == "w2" and set(cross["paired_difference"]) == {"1", "2"}
    for q in ("1", "2"):
        diff = torch.tensor(rows["w2"]["test"][q]["per_episode_accuracy"]) - torch.tensor(
            cross["test"][q]["per_episode_accuracy"])
        assert cross["paired_difference"][q] == dict(zip(("mean", "ci95"), mean_ci95(diff)))
    assert "paired_difference" not in rows["w3"] and "paired_difference" not in rows["w2"]
    assert "| reference − run (paired, %) |" in (tmp_path / "report.md").read_text()
    assert "| w3@2 |" in (tmp_path / "report.md").read_text() and "w2: " in (tmp_path / "report.md").read_text()
    # a loaded model's tests are cached like a trained one's: the report is re-made without evaluating again
    from unittest import mock

    with mock.patch("egnn.sweep.evaluate_config", side_effect=AssertionError("evaluated again")):
        assert cli("sweep", spec, "--quiet").returncode == 0
    assert json.loads((tmp_path / "report.json").read_text())["runs"]["w3@2"]["test"] == cross["test"]
    # keyed by the file's content: the same file written anew (a fresh checkout: a new mtime) keeps its tests, and a
    # cache keyed by mtime (written before content keys) is carried over
    loaded, cache = tmp_path / "runs" / "w3" / "best.pt", tmp_path / "runs" / "w3@2" / "sweep_tests.json"
    before = loaded.stat().st_mtime_ns
    loaded.write_bytes(loaded.read_bytes())
    os.utime(loaded, ns=(before + 10**9, before + 10**9))
    stored = json.loads(cache.read_text())
    for caches in (stored, {f"{before + 10**9}_{k.split('_', 1)[1]}": v for k, v in stored.items()}):
        cache.write_text(json.dumps(caches))
        with mock.patch("egnn.sweep.evaluate_config", side_effect=AssertionError("evaluated again")):
            assert cli("sweep", spec, "--quiet").returncode == 0
        assert json.loads((tmp_path / "report.json").read_text())["runs"]["w3@2"]["test"] == cross["test"]
    legacy = caches
    # another model in the same file is tested again
    shutil.copy(tmp_path / "runs" / "w2" / "best.pt", loaded)
    assert cli("sweep", spec, "--only", "w3@2", "--quiet").returncode == 0
    cached = json.loads(cache.read_text())
    assert len(cached) == len(legacy) + len(stored) * 2  # the old keys, the carried ones, the new model's


def test_runs_placeholder_is_filled_in_base_values_too(tmp_path):
    # every run of a chain may build on one earlier run: {runs} in base names the sweep's run directory
    spec = write_spec(tmp_path, base={**BASE, "model": "mtl", "transductive": False,
                                      "backbone_checkpoint": "{runs}/pretrain/best.pt"},
                      runs={"a": {}}, grid={}, reference=None)
    assert_user_error(cli("sweep", spec, "--quiet"), f"{tmp_path / 'runs'}/pretrain/best.pt not found")


def test_bad_sweep_specs_are_one_line_errors(tmp_path):
    assert_user_error(cli("sweep", write_spec(tmp_path, grid={"way": 5})), "grid maps config keys to non-empty lists")
    assert_user_error(cli("sweep", write_spec(tmp_path, reference="q9")), "reference 'q9' is not one of its runs")
    assert_user_error(cli("sweep", write_spec(tmp_path, runs={"a": {"wayy": 3}}, reference=None)),
                      "unknown config key(s) wayy")
    assert_user_error(cli("sweep", write_spec(tmp_path, tests={})), "unknown tests")


def test_shipped_sweep_specs_parse(tmp_path):
    from pathlib import Path

    specs = sorted(Path("configs").glob("sweep_*.yaml")) + [Path("configs/gpu_omniglot.yaml")]
    assert len(specs) >= 5
    for path in specs:
        assert expand(load_sweep(path)), path


def test_config_files_include_a_base_file_and_override_it(tmp_path):
    (tmp_path / "base.yaml").write_text("way: 20\nshot: 5\niterations: 7\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run.yaml").write_text("include: ../base.yaml\nshot: 1\n")  # relative to the including file
    cfg = load_config(tmp_path / "sub" / "run.yaml", iterations=9)
    assert (cfg.way, cfg.shot, cfg.iterations) == (20, 1, 9)  # base < including file < flags
    (tmp_path / "loop.yaml").write_text("include: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("include: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml not found"):
        load_config(tmp_path / "missing.yaml")


def test_paired_differences_pair_episode_by_episode():
    """Reference [1, 0, 1, 0] against run [0, 1, 0, 1] on the same episodes: differences [1, -1, 1, -1], mean 0,
    CI 1.96 * sqrt(4/3) / 2 (any other pairing, e.g. sorted lists, gives other numbers); runs tested on other
    episodes are not paired at all."""
    import math

    from egnn.sweep import EPISODE_KEYS, paired_differences

    same = {k: 1 for k in EPISODE_KEYS}
    ref = {"test": {"1": {"per_episode_accuracy": [1.0, 0.0, 1.0, 0.0], "protocol": same}}}
    run = {"test": {"1": {"per_episode_accuracy": [0.0, 1.0, 0.0, 1.0], "protocol": same}}}
    d = paired_differences(ref, run)["1"]
    assert d["mean"] == 0 and d["ci95"] == pytest.approx(1.96 * math.sqrt(4 / 3) / 2)
    elsewhere = {"test": {"1": {"per_episode_accuracy": [0.0, 1.0, 0.0, 1.0], "protocol": {**same, "seed": 2}}}}
    assert paired_differences(ref, elsewhere) == {}


def test_test_seeds_add_other_sets_of_episodes(tmp_path):
    """``test: seeds`` evaluates each run on each seed's episodes: the run's own seed under the plain key, another
    under ``<queries>/seed<s>``, each what evaluating the trained model at that seed gives."""
    from dataclasses import replace

    from egnn.models import load_trained

    spec = write_spec(tmp_path, runs={"q1": {"query": 1}}, grid={}, reference=None,
                      test={"queries": [1], "episodes": 12, "seeds": [0, 3]})
    assert cli("sweep", spec, "--quiet").returncode == 0
    row = json.loads((tmp_path / "report.json").read_text())["runs"]["q1"]
    assert set(row["test"]) == {"1", "1/seed3"}
    method, cfg = load_trained(tmp_path / "runs" / "q1" / "best.pt")
    for key, seed in (("1", 0), ("1/seed3", 3)):
        want = evaluate_config(method, load_dataset("glyphs")["test"], replace(cfg, eval_seed=seed), 12, 1)
        assert row["test"][key]["per_episode_accuracy"] == want.per_episode
    assert row["test"]["1"]["per_episode_accuracy"] != row["test"]["1/seed3"]["per_episode_accuracy"]


def test_runs_of_one_included_config_train_in_their_own_directories(tmp_path):
    """An ``out`` in an included config file (as configs/omniglot_5w1s_cpu.yaml has) does not move a sweep's run:
    two runs of one file, transductive and not, train apart instead of the second resuming the first."""
    (tmp_path / "shared.yaml").write_text(yaml.safe_dump({**BASE, "out": str(tmp_path / "elsewhere")}))
    spec = write_spec(tmp_path, base={}, grid={}, reference=None, test={"queries": [1], "episodes": 4},
                      runs={"t": {"include": "shared.yaml"}, "n": {"include": "shared.yaml", "transductive": False},
                            "m": {"include": "shared.yaml", "out": str(tmp_path / "mine")}})
    assert cli("sweep", spec, "--quiet").returncode == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["n", "t"] and not (tmp_path / "elsewhere").exists()
    assert (tmp_path / "mine" / "best.pt").exists()  # an out the run names itself is where it trains
    for name, mode in (("t", True), ("n", False)):
        assert yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())["transductive"] is mode


def test_a_report_that_fails_to_draw_leaves_the_previous_one_whole(tmp_path):
    from egnn.reports import write_report

    write_report({"runs": 1}, "| one |", tmp_path / "report", lambda ax: ax.bar([0], [1]))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["report.json", "report.md", "report.png"]

    def broken(ax):
        raise RuntimeError("no figure")

    with pytest.raises(RuntimeError, match="no figure"):
        write_report({"runs": 2}, "| two |", tmp_path / "report", broken)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # and no temporary file left behind


def test_a_stop_between_tests_keeps_the_tests_already_done(tmp_path, monkeypatch):
    """A sweep stopped (Ctrl-C) after its first test and run again tests only what is left, and reports what one
    uninterrupted sweep reports: a 20-way model's tests take half an hour on a CPU, too long to lose to a stop."""
    import egnn.sweep as sweep_module

    real = sweep_module.evaluate_config
    calls = []

    def stop_after_the_first(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(args[-1])
        return real(*args, **kwargs)

    spec = load_sweep(write_spec(tmp_path, runs={"q1": {"query": 1}}, grid={}, reference=None,
                                 test={"queries": [1, 2], "episodes": 6}))
    monkeypatch.setattr(sweep_module, "evaluate_config", stop_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        sweep_module.sweep(spec, progress=False)
    assert len(json.loads((tmp_path / "runs" / "q1" / "sweep_tests.json").read_text())) == 1

    def count(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "evaluate_config", count)
    resumed = sweep_module.sweep(spec, progress=False)["runs"]["q1"]["test"]
    assert calls == [1, 2]  # the second run tested only the 2-query episodes
    shutil.rmtree(tmp_path / "runs" / "q1")
    whole = sweep_module.sweep(spec, progress=False)["runs"]["q1"]["test"]

    def untimed(tests):
        return {q: {k: v for k, v in t.items() if k != "seconds"} for q, t in tests.items()}

    assert untimed(resumed) == untimed(whole)
