"""Learning-rate schedules over the run's progress, and the trainer following them by iterations or by a time budget."""
import json
import math
import time

import pytest
import torch

from egnn.schedules import Cosine, MultiStep, StepHalving, episodic_schedule
from egnn.trainer import Trainer
from tests.conftest import SPLITS, fit, tiny_config


def test_schedule_factors_by_hand(tmp_path):
    assert [StepHalving(3).factor(i, 0.9) for i in range(8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert [Cosine().factor(0, p) for p in (0.0, 0.25, 0.5, 1.0, 1.5)] == pytest.approx(
        [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, 0.0, 0.0])
    assert Cosine(floor=0.1).factor(0, 1.0) == pytest.approx(0.1)
    assert [MultiStep((0.5, 0.75), 0.1).factor(0, p) for p in (0.49, 0.5, 0.74, 0.75, 1.0)] == pytest.approx(
        [1, 0.1, 0.1, 0.01, 0.01])
    assert episodic_schedule(tiny_config(tmp_path)) == StepHalving(15000)  # the reference, without a budget
    assert episodic_schedule(tiny_config(tmp_path, max_minutes=5)) == Cosine()
    assert episodic_schedule(tiny_config(tmp_path, max_minutes=5, lr_schedule="step", lr_halve_every=7)) == StepHalving(7)
    assert tiny_config(tmp_path, iterations=0).iteration_limit() == 150
    assert tiny_config(tmp_path, iterations=0, max_minutes=1).iteration_limit() == math.inf
    assert tiny_config(tmp_path, iterations=10, max_minutes=1).progress(4, 30.0) == 0.5  # time is further along
    assert tiny_config(tmp_path, iterations=10, max_minutes=1).progress(8, 30.0) == 0.8  # iterations are


def learning_rates(monkeypatch):
    """The learning rate of every optimiser step the trainers of this test take, in order."""
    seen = []
    real = Trainer.update

    def update(self, episodes):
        seen.append(self.optimizer.param_groups[0]["lr"])
        return real(self, episodes)

    monkeypatch.setattr(Trainer, "update", update)
    return seen


def test_iteration_schedules_set_each_steps_learning_rate(tmp_path, monkeypatch):
    seen = learning_rates(monkeypatch)
    fit(tiny_config(tmp_path / "step", lr=0.01, lr_halve_every=2))
    assert seen == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])
    seen.clear()
    fit(tiny_config(tmp_path / "cos", lr=0.01, lr_schedule="cosine"))
    assert seen == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * i / 6)) for i in range(6)])
    logged = [json.loads(x)["lr"] for x in (tmp_path / "cos" / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([seen[2], seen[5]])  # the log shows the period's last learning rate


class FakeClock:
    """``time.perf_counter`` for the trainer: a training step takes 10 s, a validation 5 s."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def timed(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    update, validate = Trainer.update, Trainer.validate

    def slow_update(self, episodes):
        clock.now += 10
        return update(self, episodes)

    def slow_validate(self):
        clock.now += 5
        return validate(self)

    monkeypatch.setattr(Trainer, "update", slow_update)
    monkeypatch.setattr(Trainer, "validate", slow_validate)
    return clock


def test_time_budget_drives_the_schedule_and_ends_with_its_validation_inside(tmp_path, monkeypatch):
    """100 s of budget, 10 s steps, 5 s validations every 4 steps: steps 1-4 (40 s), validation (45 s),
    steps 5-8 (85 s), validation (90 s); a 9th step and its validation would end at 105 s, so the run stops at 8
    having spent 90 s. Each step's learning rate is the cosine at the time spent when it starts."""
    timed(monkeypatch)
    seen = learning_rates(monkeypatch)
    budget = 100 / 60
    trainer = fit(tiny_config(tmp_path / "t", iterations=0, val_every=4, lr=0.01, max_minutes=budget))
    assert (trainer.iteration, trainer.stop_reason()) == (8, "max-minutes")
    assert trainer.train_seconds == pytest.approx(90)
    starts = [0, 10, 20, 30, 45, 55, 65, 75]
    assert seen == pytest.approx([0.005 * (1 + math.cos(math.pi * t / 100)) for t in starts])
    log = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["seconds"], r["val_seconds"]) for r in log] == [(4, 45, 5), (8, 45, 5)]


def test_time_budget_ends_between_validations(tmp_path, monkeypatch):
    """With validations every 50 steps, a 65 s budget ends after step 6, validated and checkpointed there: a 7th
    step would reach 70 s. (Before the first validation its cost is unknown, so it is not reserved: the run
    spends 65 s.)"""
    timed(monkeypatch)
    trainer = fit(tiny_config(tmp_path / "t", iterations=0, val_every=50, max_minutes=65 / 60))
    assert (trainer.iteration, trainer.stop_reason(), trainer.train_seconds) == (6, "max-minutes", 65)
    assert torch.load(tmp_path / "t" / "last.pt", weights_only=False)["iteration"] == 6
    again = fit(tiny_config(tmp_path / "t", iterations=0, val_every=50, max_minutes=65 / 60), resume=True)
    assert again.iteration == 6  # a spent budget stays spent


def test_an_interrupted_timed_run_resumes_on_the_same_schedule(tmp_path, monkeypatch):
    timed(monkeypatch)
    seen = learning_rates(monkeypatch)
    cfg = dict(iterations=0, val_every=3, lr=0.01, max_minutes=100 / 60)
    whole = fit(tiny_config(tmp_path / "whole", **cfg))
    whole_lrs = list(seen)
    seen.clear()
    broken = Trainer(tiny_config(tmp_path / "split", **cfg), SPLITS)
    real_step = Trainer.step

    def dies_at_5(self):
        if self.iteration == 5:
            raise KeyboardInterrupt  # killed after the checkpoint at 3 and two more steps
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", dies_at_5)
    with pytest.raises(KeyboardInterrupt):
        broken.fit(progress=False)
    monkeypatch.setattr(Trainer, "step", real_step)
    resumed = fit(tiny_config(tmp_path / "split", **cfg), resume=True)
    # 3 steps and a validation: 35 s; again: 70 s; 2 steps and the closing validation: 95 s, where a third would overrun
    assert resumed.iteration == whole.iteration == 8 and resumed.train_seconds == whole.train_seconds == 95
    assert seen[:3] + seen[5:] == pytest.approx(whole_lrs)  # the steps lost to the kill are re-taken alike
    for (k, a), b in zip(whole.method.state_dict().items(), resumed.method.state_dict().values()):
        assert torch.equal(a, b), k


def test_snapshots_at_wall_clock_points_and_at_the_end_of_the_budget(tmp_path, monkeypatch):
    """10 s steps, 5 s validations every 4 steps, a 100 s budget (the run ends at 8 steps, 90 s): the 0.5-minute
    snapshot is the model after step 3 (30 s), the 1-minute one after step 6 (65 s); 1.5 and 1.66 minutes are
    never reached, the run being over first, and hold its final weights; points past the budget are not
    written."""
    timed(monkeypatch)
    kept = {}
    real_step = Trainer.step

    def step(self):
        out = real_step(self)
        kept[self.iteration] = {k: v.clone() for k, v in self.method.state_dict().items()}
        return out

    monkeypatch.setattr(Trainer, "step", step)
    fit(tiny_config(tmp_path, iterations=0, val_every=4, max_minutes=100 / 60, snapshot_minutes="0.5,1,1.5,1.66,5"))
    written = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert written == ["0.5min.pt", "1.5min.pt", "1.66min.pt", "1min.pt"]
    for name, iteration in [("0.5min.pt", 3), ("1min.pt", 6), ("1.5min.pt", 8), ("1.66min.pt", 8)]:
        blob = torch.load(tmp_path / "snapshots" / name, weights_only=False)
        assert blob["iteration"] == iteration, name
        for k, v in blob["model"].items():
            assert torch.equal(v, kept[iteration][k]), (name, k)


def test_bad_schedule_and_snapshot_settings_are_refused(tmp_path):
    from egnn.errors import ConfigError

    with pytest.raises(ConfigError, match="lr-schedule must be auto, step or cosine, got 'linear'"):
        tiny_config(tmp_path, lr_schedule="linear")
    for bad in ("5,x", "0,5", "-1"):
        with pytest.raises(ConfigError, match="snapshot-minutes must be positive numbers"):
            tiny_config(tmp_path, snapshot_minutes=bad)
    assert tiny_config(tmp_path, snapshot_minutes="20, 5,10").snapshot_points() == [5, 10, 20]
