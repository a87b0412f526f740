"""Semi-supervised episodes and the label-ratio sweep."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from egnn.data import load_dataset
from egnn.evaluation import evaluate
from egnn.models import load_trained

from egnn.episodes import EpisodeSampler, without_unlabeled
from tests.conftest import make_episode
from tests.conftest import cli
from tests.conftest import SPLITS


def test_label_ratio_labels_the_first_shots_of_every_class():
    sampler = EpisodeSampler(SPLITS["train"], way=3, shot=5, query=2, seed=1, label_ratio=0.4)
    ep = sampler.episode(0)
    assert ep.labeled.tolist() == [True, True, False, False, False] * 3


def test_dropping_unlabeled_supports_keeps_the_same_labeled_supports_and_queries():
    ep = make_episode(way=2, shot=3, query=2, labeled_shots=1)
    dropped = without_unlabeled(ep)
    assert (dropped.way, dropped.shot, dropped.query) == (2, 1, 2)
    assert torch.equal(dropped.images, torch.cat([ep.images[[0, 3]], ep.images[6:]]))
    assert dropped.labels.tolist() == [0, 1, 0, 0, 1, 1]
    kept = EpisodeSampler(SPLITS["test"], 3, 5, 2, seed=4, label_ratio=0.6)
    drop = EpisodeSampler(SPLITS["test"], 3, 5, 2, seed=4, label_ratio=0.6, drop_unlabeled=True)
    assert torch.equal(without_unlabeled(kept.episode(7)).images, drop.episode(7).images)


def test_label_ratio_sweep_at_test_size(tmp_path):
    spec = {
        "base": {"dataset": "glyphs", "way": 3, "shot": 5, "query": 1, "iterations": 3, "tasks_per_batch": 2,
                 "val_every": 3, "val_episodes": 2, "embedding": 16, "node_features": 8, "edge_features": 8,
                 "eval_batch": 10},
        "ratios": [0.2, 1.0],
        "models": {"egnn-semi": {"unlabeled": "keep"}, "egnn-labeled-only": {"unlabeled": "drop"}},
        "modes": ["transductive", "non-transductive"],
        "evaluation": {"episodes": 10, "query": 1},
        "output": str(tmp_path / "label_ratio_glyphs"),
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    proc = cli("label-ratio", "--config", tmp_path / "sweep.yaml", "--runs", tmp_path / "runs", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "label_ratio_glyphs.json").read_text())
    rows = {(r["model"], r["mode"], r["label_ratio"]): r for r in summary["results"]}
    assert len(rows) == 8
    assert rows["egnn-semi", "transductive", 0.2]["labeled_shots"] == 1
    assert rows["egnn-labeled-only", "transductive", 0.2]["protocol"]["unlabeled"] == "drop"
    for mode in ("transductive", "non-transductive"):
        semi, only = rows["egnn-semi", mode, 0.2], rows["egnn-labeled-only", mode, 0.2]
        assert semi["run"] != only["run"]  # below 100% the two variants are separate models...
        assert rows["egnn-semi", mode, 1.0]["run"] == rows["egnn-labeled-only", mode, 1.0]["run"]  # ...at 100%, one
        # the semi-supervised episodes hold 4 unlabeled supports per class that the labeled-only ones drop: each
        # reported accuracy is its model's, re-evaluated on exactly those episodes
        for row, drop in ((semi, False), (only, True)):
            method, _ = load_trained(Path(row["run"]) / "best.pt")
            again = evaluate(method, load_dataset("glyphs")["test"], way=3, shot=5, query=1, episodes=10, label_ratio=0.2,
                             transductive=mode == "transductive", drop_unlabeled=drop, batch_size=10)
            assert row["accuracy"] == pytest.approx(again.accuracy, abs=1e-9), (mode, drop)
    table = (tmp_path / "label_ratio_glyphs.md").read_text()
    assert "| egnn-semi | transductive |" in table and "20% labeled" in table
    assert (tmp_path / "label_ratio_glyphs.png").stat().st_size > 0


def test_sweep_parts_train_in_parallel_then_one_call_reports_from_cache(tmp_path):
    """--only trains and tests one model without a report; the full call reuses those runs and cached tests.
    train_modes tests the transductively trained models without transduction; ratio 1 is one shared run;
    episodes may differ per mode, and a model may run only some modes."""
    spec = {
        "base": {"dataset": "glyphs", "way": 3, "shot": 5, "query": 1, "query_max": 0, "iterations": 2,
                 "tasks_per_batch": 2, "val_every": 2, "val_episodes": 2, "embedding": 16, "node_features": 8,
                 "edge_features": 8, "eval_batch": 10},
        "ratios": [0.4, 1.0],
        "models": {"semi": {"unlabeled": "keep"}, "labeled-only": {"unlabeled": "drop", "modes": ["transductive"]}},
        "modes": ["transductive", "non-transductive"],
        "train_modes": {"non-transductive": "transductive"},
        "evaluation": {"episodes": {"transductive": 6, "non-transductive": 4}, "query": 1},
        "output": str(tmp_path / "report"),
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    sweep = ["label-ratio", "--config", tmp_path / "sweep.yaml", "--runs", tmp_path / "runs", "--quiet"]
    part = cli(*sweep, "--only", "semi")
    assert part.returncode == 0, part.stderr
    assert not (tmp_path / "report.json").exists()  # a part writes no report
    runs = sorted(p.name for p in (tmp_path / "runs" / "glyphs_3w5s").iterdir())
    assert runs == ["egnn_keep_transductive_r0.4", "egnn_keep_transductive_r1.0"]  # one training per ratio
    cached = json.loads((tmp_path / "runs" / "glyphs_3w5s" / "egnn_keep_transductive_r0.4" / "sweep_tests.json").read_text())
    assert sorted(k.split("_", 1)[1] for k in cached) == ["3w5s_q1_4x_seed0_r0.4_keep_nontrans",
                                                           "3w5s_q1_6x_seed0_r0.4_keep_trans"]
    full = cli(*sweep)
    assert full.returncode == 0, full.stderr
    runs = sorted(p.name for p in (tmp_path / "runs" / "glyphs_3w5s").iterdir())
    assert runs == ["egnn_drop_transductive_r0.4", "egnn_keep_transductive_r0.4", "egnn_keep_transductive_r1.0"]
    rows = {(r["model"], r["mode"], r["label_ratio"]): r for r in json.loads((tmp_path / "report.json").read_text())["results"]}
    assert all(r["trained"] == "transductive" for r in rows.values())
    assert not rows["semi", "non-transductive", 0.4]["protocol"]["transductive"]
    assert rows["semi", "non-transductive", 0.4]["protocol"]["episodes"] == 4
    assert ("labeled-only", "non-transductive", 0.4) not in rows and len(rows) == 6
    assert rows["semi", "transductive", 1.0]["run"] == rows["labeled-only", "transductive", 1.0]["run"]
    # the shared ratio-1 run: both rows report what its checkpoint scores on those 6 episodes, re-evaluated here
    method, _ = load_trained(Path(rows["semi", "transductive", 1.0]["run"]) / "best.pt")
    again = evaluate(method, load_dataset("glyphs")["test"], way=3, shot=5, query=1, episodes=6, transductive=True,
                     batch_size=10)
    for model in ("semi", "labeled-only"):
        assert rows[model, "transductive", 1.0]["accuracy"] == pytest.approx(again.accuracy, abs=1e-9)
    bad = cli(*sweep, "--only", "nope")
    assert bad.returncode == 2 and "unknown sweep models nope" in bad.stderr + bad.stdout


def test_a_batch_gathers_all_its_images_at_once_and_equals_the_episodes_one_by_one():
    for drop in (False, True):
        sampler = EpisodeSampler(SPLITS["train"], 3, 5, 2, seed=4, label_ratio=0.6, drop_unlabeled=drop)
        batch = sampler.batch(10, 4)
        for i, ep in enumerate(batch):
            alone = sampler.episode(10 + i)
            assert (ep.shot, ep.query) == (alone.shot, alone.query) == (3 if drop else 5, 2)
            for key in ("images", "labels", "labeled", "classes"):
                assert torch.equal(getattr(ep, key), getattr(alone, key)), key


def test_shipped_label_ratio_specs_parse_to_their_budgets():
    """Each configs/label_ratio_*.yaml parses, and its base (with the included recipe) is the budget its comment
    states: 10 minutes a model for the 20-way time-budgeted study, 1500 iterations a model for the 5-way one."""
    from egnn.config import make_config
    from egnn.label_ratio import load_sweep

    budgets = {}
    for path in sorted(Path("configs").glob("label_ratio_*.yaml")):
        cfg = make_config(load_sweep(path)["base"])
        budgets[path.stem] = (cfg.way, cfg.shot, cfg.iterations, cfg.max_minutes, cfg.lr_schedule)
    assert budgets["label_ratio_omniglot_20w5s"] == (20, 5, 0, 10, "cosine")
    assert budgets["label_ratio_omniglot_5w5s"] == (5, 5, 1500, 0, "cosine")
