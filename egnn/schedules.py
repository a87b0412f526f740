"""Learning-rate schedules as functions of training progress, so a run sized by iterations and a run sized by
wall-clock (``--max-minutes``) follow the same curve.

A schedule maps ``(iteration, progress)`` to a factor of the base learning rate, where ``progress`` in ``[0, 1]``
is the share of the run already done: ``iteration / iterations``, or ``seconds spent / time budget`` under a
time budget, whichever is further along. The trainer sets the factor before every optimiser step; nothing is
kept besides the iteration and the seconds spent, which every checkpoint holds, so ``--resume`` continues the
same curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


class LRSchedule:
    """Base class: :meth:`factor` of the base learning rate at ``iteration`` with ``progress`` in ``[0, 1]``."""

    def factor(self, iteration: int, progress: float) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class StepHalving(LRSchedule):
    """The EGNN reference: the learning rate halved every ``every`` iterations, whatever the run's length."""

    every: int

    def factor(self, iteration: int, progress: float) -> float:
        return 0.5 ** (iteration // self.every)


@dataclass(frozen=True)
class MultiStep(LRSchedule):
    """Multiplied by ``gamma`` at each progress milestone, e.g. MTL's pretraining: ÷10 at 50% and 75% of the run."""

    milestones: tuple[float, ...]
    gamma: float

    def factor(self, iteration: int, progress: float) -> float:
        return self.gamma ** sum(progress >= m for m in self.milestones)


@dataclass(frozen=True)
class Cosine(LRSchedule):
    r"""Cosine decay over the run, :math:`\tfrac12 (1 + \cos \pi p)` down to ``floor``: with a time budget, the
    run is always in its last stretch when the budget ends, however fast the machine."""

    floor: float = 0.0

    def factor(self, iteration: int, progress: float) -> float:
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def episodic_schedule(cfg) -> LRSchedule:
    """The schedule ``cfg.lr_schedule`` names for the episodic methods: ``step`` (the reference: halve every
    ``lr_halve_every`` iterations), ``cosine`` (over the run's progress), or ``auto``: cosine under a time budget
    (``max_minutes``), where a fixed iteration period would decay at a machine-dependent point or never, else step."""
    kind = cfg.lr_schedule
    if kind == "auto":
        kind = "cosine" if cfg.max_minutes else "step"
    return Cosine() if kind == "cosine" else StepHalving(cfg.lr_halve_every)
