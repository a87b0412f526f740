"""The one place episodes are drawn.

Episode ``i`` of a sampler is a pure function of ``(seed, i)``: training can resume at any iteration
without saved sampler state, and every model evaluated with the same seed sees identical episodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from egnn.data.base import FewShotSplit
from egnn.devices import to_device_of
from egnn.errors import ConfigError


@dataclass
class Episode:
    """An N-way K-shot episode; supports first (grouped by label), then queries (grouped by label).

    Attributes:
        images: ``(way * (shot + query), C, H, W)`` uint8.
        labels: ``(way * (shot + query),)`` episode labels in ``[0, way)``; a random permutation of the
            sampled classes, so no model can learn from label order.
        labeled: ``(way * shot,)`` bool, which supports carry their label (all, unless semi-supervised).
        classes: ``(way,)`` dataset class of each episode label.
    """

    images: torch.Tensor
    labels: torch.Tensor
    labeled: torch.Tensor
    classes: torch.Tensor
    way: int
    shot: int
    query: int


def check_episode_shape(way: int, shot: int, query: int, label_ratio: float = 1.0) -> None:
    for name, value in (("way", way), ("shot", shot), ("query", query)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if way < 2:
        raise ConfigError(f"way must be at least 2 (one class leaves nothing to tell apart), got {way}")
    if not 0 < label_ratio <= 1:
        raise ConfigError(f"label ratio must be in (0, 1], got {label_ratio}")
    if round(label_ratio * shot) < 1:
        raise ConfigError(f"label ratio {label_ratio} of {shot} shots labels no support: raise --label-ratio or --shot")


class EpisodeSampler:
    """Seeded N-way K-shot episodes with ``query`` queries per class from one split.

    With ``label_ratio < 1`` only ``round(label_ratio * shot)`` supports of each class are labeled; the rest
    stay in the episode as unlabeled supports, or are dropped with ``drop_unlabeled=True`` (the "labeled
    only" setting), which leaves the same labeled supports and queries as the semi-supervised episode.
    """

    def __init__(self, split: FewShotSplit, way: int, shot: int, query: int, seed: int = 0,
                 label_ratio: float = 1.0, drop_unlabeled: bool = False) -> None:
        check_episode_shape(way, shot, query, label_ratio)
        split.check_episode(way, shot, query)
        self.split, self.way, self.shot, self.query = split, way, shot, query
        self.seed, self.label_ratio, self.drop_unlabeled = seed, label_ratio, drop_unlabeled
        self.labeled_shots = round(label_ratio * shot)
        way_ids = torch.arange(way)  # labels and labeled flags are the same in every episode: build them once
        self._labels = torch.cat([way_ids.repeat_interleave(shot), way_ids.repeat_interleave(query)])
        self._labeled = (torch.arange(shot) < self.labeled_shots).repeat(way)

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + index)

    def draw(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Episode ``index`` as indices into the split: ``(order (N,), classes (way,))``, drawn on the CPU."""
        gen = self.generator(index)
        classes = torch.randperm(self.split.num_classes, generator=gen)[:self.way]  # random order = random labels
        return self.pick(classes, gen), classes

    def pick(self, classes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Indices ``(N,)`` of ``shot + query`` distinct images of each of ``classes`` (in label order), supports
        first, drawn with ``gen``."""
        split, way, per_class = self.split, self.way, self.shot + self.query
        counts = split.class_counts[classes]  # (way,)
        # draw per_class distinct images of every class at once: random keys, invalid slots sort last
        keys = torch.rand(way, int(counts.max()), generator=gen)
        keys = keys.masked_fill(torch.arange(keys.shape[1]) >= counts[:, None], 2.0)
        picks = keys.argsort(1)[:, :per_class] + split.class_offsets[classes][:, None]  # (way, shot + query)
        return torch.cat([picks[:, :self.shot].flatten(), picks[:, self.shot:].flatten()])

    def episode_of(self, classes: torch.Tensor, gen: torch.Generator) -> Episode:
        """The episode of ``classes`` (in label order), its images drawn with ``gen``."""
        return self.gathered(self.pick(classes, gen), classes)

    def gathered(self, order: torch.Tensor, classes: torch.Tensor) -> Episode:
        images = self.split.images[to_device_of(order, self.split.images)]  # indices go to the images' device
        return Episode(images, self._labels, self._labeled, classes, self.way, self.shot, self.query)

    def episode(self, index: int) -> Episode:
        episode = self.gathered(*self.draw(index))
        return without_unlabeled(episode) if self.drop_unlabeled else episode

    def batch(self, start: int, count: int) -> list[Episode]:
        """Episodes ``start .. start + count``, equal to ``episode(i)`` each: their indices are drawn on the CPU,
        then all images gathered at once where they live; with the split on a GPU (``--data-on-device``) the
        indices travel there in one copy and no image crosses the bus."""
        drawn = [self.draw(i) for i in range(start, start + count)]
        images = self.split.images[to_device_of(torch.stack([order for order, _ in drawn]), self.split.images)]
        episodes = [Episode(im, self._labels, self._labeled, classes, self.way, self.shot, self.query)
                    for im, (_, classes) in zip(images, drawn)]
        return [without_unlabeled(e) for e in episodes] if self.drop_unlabeled else episodes


def without_unlabeled(episode: Episode) -> Episode:
    """The same episode with its unlabeled supports removed: a ``labeled_shots``-shot episode."""
    s = episode.way * episode.shot
    keep = torch.cat([episode.labeled, torch.ones(episode.labels.numel() - s, dtype=torch.bool)]).nonzero()[:, 0]
    shots = int(episode.labeled.sum()) // episode.way  # the flags live on the CPU: no device sync
    return Episode(episode.images[to_device_of(keep, episode.images)], episode.labels[keep],
                   episode.labeled[episode.labeled], episode.classes, episode.way, shots, episode.query)
