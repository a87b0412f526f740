"""--log tensorboard: the run's curves and the edge-label figure, read back from the event files."""
import json

import pytest

from tests.conftest import cli, fit, tiny_config


def test_tensorboard_events_hold_the_runs_curves_figures_and_test(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = fit(tiny_config(tmp_path, log="tensorboard"))
    trainer.test([2, 3])
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (("train/loss", "loss"), ("val/accuracy", "val_acc"), ("lr", "lr"), ("train/accuracy", "train_acc")):
        points = events.Scalars(tag)
        assert [p.step for p in points] == [r["iteration"] for r in logged] == [3, 6], tag
        assert [p.value for p in points] == pytest.approx([r[key] for r in logged], rel=1e-6), tag
    assert len(events.Scalars("seconds_per_iteration")) == 2
    images = events.Images("figure/edge_labels")  # the fixed validation episode's edge labels, at each validation
    assert [i.step for i in images] == [3, 6] and all(i.width > i.height > 50 for i in images)
    results = json.loads((tmp_path / "results.json").read_text())["test"]
    for r in results:
        (point,) = events.Scalars(f"test/accuracy_{r['protocol']['query']}q")
        assert point.value == pytest.approx(r["accuracy"]) and point.step == 6


def test_an_unknown_log_is_refused(tmp_path):
    from egnn.errors import ConfigError

    with pytest.raises(ConfigError, match="log must be tensorboard"):
        tiny_config(tmp_path, log="wandb")


def test_a_sweeps_runs_share_one_log_directory_with_their_tests(tmp_path):
    """``tensorboard --logdir <runs_dir>`` shows a sweep's (or a comparison's) runs side by side."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    from tests.test_sweep import write_spec

    spec = write_spec(tmp_path, grid={}, reference=None)
    assert cli("sweep", spec, "--set", "log=tensorboard", "--quiet").returncode == 0
    report = json.loads((tmp_path / "report.json").read_text())["runs"]
    boards = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "runs")).Reload()
    assert sorted(boards.Runs()) == ["q1/tensorboard", "q2/tensorboard"]
    for name in ("q1", "q2"):
        logged = [json.loads(x) for x in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        curve = boards.Scalars(f"{name}/tensorboard", "val/accuracy")
        assert [p.value for p in curve] == pytest.approx([r["val_acc"] for r in logged], rel=1e-6)
        for q in ("1", "2"):
            (point,) = boards.Scalars(f"{name}/tensorboard", f"test/accuracy_{q}q")
            assert point.value == pytest.approx(report[name]["test"][q]["accuracy"]) and point.step == 4
    # a second call reads its tests from the cache and logs nothing twice (not even an empty event file)
    files = sorted((tmp_path / "runs" / "q1" / "tensorboard").iterdir())
    assert cli("sweep", spec, "--set", "log=tensorboard", "--quiet").returncode == 0
    assert sorted((tmp_path / "runs" / "q1" / "tensorboard").iterdir()) == files
    again = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "runs")).Reload()
    assert len(again.Scalars("q1/tensorboard", "test/accuracy_1q")) == 1
