""""None of these": open-set episodes, and the threshold that turns a model's known-score into an "unknown" answer.

A query of a class that is absent from the supports still gets the most probable of the support classes, often
confidently: the class probabilities are normalised over the classes present. Each method says how well a query
fits its best class (:meth:`~egnn.methods.FewShotMethod.known_score`; for EGNN the mean edge similarity to the
labeled examples of that class, an estimate of "same class" learnt by the edge loss). Below a threshold the answer
is "unknown". The threshold is calibrated on the checkpoint's *validation* classes, never its test classes: in
open-set episodes drawn there (``way`` known classes with ``shot`` labeled examples each, ``query`` queries per
class, and the queries of ``unknown_classes`` more classes whose examples are withheld), it is the ``rate``
quantile of the known queries' scores, so that a fraction ``rate`` of the queries of known classes would be called
unknown (the false-unknown rate).

Calibrations live beside the checkpoint in ``<checkpoint>.unknown.json``, one per episode shape; a later call
with the same shape reuses it.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch

from egnn.data.base import FewShotSplit
from egnn.data.paths import atomic_write_text
from egnn.episodes import EpisodeSampler
from egnn.errors import DataError, UserError

DEFAULT_RATE = 0.05


def check_rate(rate: float, name: str = "the false-unknown rate") -> float:
    """``rate`` if it is a false-unknown rate (a fraction in (0, 1)), else a :class:`UserError` naming ``name``."""
    if not 0 < rate < 1:
        raise UserError(f"{name} is a fraction of the known images in (0, 1), got {rate}")
    return rate


@dataclass
class OpenSetEpisode:
    """Supports of ``way`` known classes, then queries of those and of ``unknown`` absent classes.

    Attributes:
        support: ``(way * shot, C, H, W)`` uint8; ``support_labels (way * shot,)`` in ``[0, way)``.
        query: ``(Q, C, H, W)`` uint8; ``query_labels (Q,)`` in ``[0, way)``, ``-1`` for a query of an absent class.
        classes: ``(way + unknown,)`` the split's class of each episode label (the absent ones last).
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor


def open_set_episodes(split: FewShotSplit, way: int, shot: int, query: int, unknown: int, episodes: int,
                      seed: int = 0) -> Iterator[OpenSetEpisode]:
    """Seeded open-set episodes: episode ``i`` is a pure function of ``(seed, i)``, as every episode in egnn. Each
    is an ordinary ``(way + unknown)``-way episode whose last ``unknown`` classes lose their supports."""
    if unknown < 0:
        raise UserError(f"unknown classes must be at least 0, got {unknown}")
    sampler = EpisodeSampler(split, way + unknown, shot, query, seed=seed)
    n_support = (way + unknown) * shot
    for i in range(episodes):
        ep = sampler.episode(i)
        support, labels = ep.images[:n_support], ep.labels[:n_support]
        keep = labels < way
        query_labels = ep.labels[n_support:].clone()
        query_labels[query_labels >= way] = -1
        yield OpenSetEpisode(support[keep], labels[keep], ep.images[n_support:], query_labels, ep.classes)


def auroc(unknown: torch.Tensor, known: torch.Tensor) -> float:
    """P(an unknown query scores lower than a known one), ties counting half: the area under the ROC curve of
    "low score means unknown" (Mann-Whitney U)."""
    both = torch.cat([unknown, known]).double()
    _, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)  # sorted distinct values
    below = torch.cumsum(counts, 0) - counts  # values ranked under each distinct value
    ranks = (below + (counts + 1) / 2)[inverse].double()  # 1-based ranks, ties sharing their mean rank
    u = ranks[unknown.numel():].sum() - known.numel() * (known.numel() + 1) / 2  # known ranked above unknown
    return float(u / (known.numel() * unknown.numel()))


@dataclass
class Calibration:
    """A threshold on the known-score, and how it was found."""

    threshold: float
    rate: float
    way: int
    shot: int
    query: int
    unknown_classes: int
    episodes: int
    transductive: bool
    split: str
    seed: int
    known_queries: int
    shot_used: int | None = None  # examples per class it was calibrated with, when the split's classes had fewer

    def key(self) -> str:
        return shape_key(self.way, self.shot, self.transductive, self.rate)


def shape_key(way: int, shot: int, transductive: bool, rate: float) -> str:
    return f"{way}-way {shot}-shot {'transductive' if transductive else 'non-transductive'} rate {rate:g}"


def calibrate(clf, split: FewShotSplit, way: int, shot: int, rate: float = DEFAULT_RATE, query: int = 5,
              unknown: int | None = None, episodes: int = 200, seed: int = 0) -> Calibration:
    """The threshold under which a fraction ``rate`` of known queries fall, on open-set episodes of ``split``
    (the checkpoint's validation classes) scored by the fitted-per-episode classifier ``clf``. ``unknown``
    absent classes per episode default to ``max(1, way // 2)``: in a transductive graph the absent classes'
    queries change the known queries' scores, so they are calibrated in company."""
    check_rate(rate)
    unknown = max(1, way // 2) if unknown is None else unknown
    if split.num_classes < way + unknown:
        raise DataError(f"{split.name} has {split.num_classes} classes, too few to calibrate {way}-way episodes with "
                        f"{unknown} absent classes: lower the way")
    # a class gives at most (its images - query) examples: more shots than that are calibrated with that many, and
    # the calibration stays keyed by the shot asked for (a later predict with as many finds it, not recalibrate)
    used = max(1, min(shot, int(split.class_counts.min()) - query))
    clf = copy.copy(clf)  # the caller's classifier keeps its supports; the model is shared, not copied
    known = []
    for ep in open_set_episodes(split, way, used, query, unknown, episodes, seed):
        clf.fit(ep.support, ep.support_labels.tolist())
        scores = clf.score(ep.query)
        known.append(scores.known[ep.query_labels >= 0])
    known = torch.cat(known)
    threshold = float(torch.quantile(known.double(), rate))
    return Calibration(threshold, rate, way, shot, query, unknown, episodes, clf.transductive, split.name, seed,
                       known.numel(), used)


def calibration_file(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".unknown.json")


def saved_calibrations(checkpoint: str | Path) -> dict[str, dict]:
    path = calibration_file(checkpoint)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["calibrations"]
    except (ValueError, KeyError) as exc:
        raise UserError(f"{path} is not a calibration file ({exc}): delete it to calibrate again") from None


def save_calibration(checkpoint: str | Path, calibration: Calibration) -> None:
    """Add ``calibration`` to the checkpoint's calibration file (atomically)."""
    found = saved_calibrations(checkpoint)
    found[calibration.key()] = asdict(calibration)
    text = json.dumps({"checkpoint": Path(checkpoint).name, "calibrations": found}, indent=1, sort_keys=True) + "\n"
    atomic_write_text(calibration_file(checkpoint), text)


def find_calibration(checkpoint: str | Path, way: int, shot: int, transductive: bool,
                     rate: float = DEFAULT_RATE) -> Calibration | None:
    """The saved calibration of this episode shape, or else the nearest saved one in way and shot at the same mode
    and rate (None if there is none)."""
    found = saved_calibrations(checkpoint)
    exact = found.get(shape_key(way, shot, transductive, rate))
    if exact:
        return Calibration(**exact)
    near = [Calibration(**c) for c in found.values() if c["transductive"] == transductive and c["rate"] == rate]
    if not near:
        return None
    return min(near, key=lambda c: (abs(c.way - way) / way + abs(c.shot - shot) / shot, c.way, c.shot))
