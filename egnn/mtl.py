"""Meta-Transfer Learning pieces (Sun, Liu, Chua & Schiele, CVPR 2019): the base learner fitted on each
task's support set, and the hard-task (HT) meta-batch.

HT, from the paper's description (the public MTL code does not include it): after each meta-batch, take in every
task the class with the lowest query accuracy; the next meta-batch then holds, besides its ordinary tasks, tasks
re-sampled from those failure classes (new images of the same classes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from egnn.episodes import Episode, EpisodeSampler


def fit_classifier(support: torch.Tensor, labels: torch.Tensor, way: int, steps: int = 20, lr: float = 0.1,
                   init: torch.Tensor | None = None) -> torch.Tensor:
    """MTL's base learner: a linear classifier per task, ``steps`` of gradient descent on the support set,
    batched over tasks and differentiable (the query loss reaches the features and ``init`` through it).

    Args:
        support: ``(T, S, D)`` support features; labels: ``(T, S)`` in ``[0, way)``;
        init: ``(way, D + 1)`` shared initial weights and bias (zeros if None).
    Returns:
        ``(T, way, D + 1)`` fitted weights (last column: bias).
    """
    t, s, d = support.shape
    x = torch.cat([support, support.new_ones(t, s, 1)], -1)  # (T, S, D + 1)
    w = (init if init is not None else support.new_zeros(way, d + 1)).expand(t, way, d + 1)
    onehot = F.one_hot(labels, way).to(support.dtype)  # (T, S, way)
    for _ in range(steps):  # cross-entropy gradient in closed form: (softmax - onehot)^T x / S
        probs = torch.softmax(x @ w.transpose(1, 2), -1)  # (T, S, way)
        w = w - lr * (probs - onehot).transpose(1, 2) @ x / s
    return w


def prototype_classifier(support: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
    r"""The nearest-prototype classifier as linear weights ``(T, way, D + 1)``: :math:`w_c = 2 p_c`,
    :math:`b_c = -\lVert p_c \rVert^2`, so :math:`w_c \cdot q + b_c = \lVert q \rVert^2 - \lVert q - p_c \rVert^2`
    ranks classes exactly as Euclidean prototypes do (Proto-MAML, Triantafillou et al., ICLR 2020).

    A base learner started from zero cannot reach this at 1 shot: every class has one support, so the biases get
    the same gradient and stay equal, and the classifier ranks by a centred dot product that ignores the
    prototypes' norms (``scripts/mtl_base_learner.py``)."""
    onehot = F.one_hot(labels, way).to(support.dtype)  # (T, S, way)
    protos = onehot.transpose(1, 2) @ support / onehot.sum(1)[..., None].clamp_min(1)  # (T, way, D)
    return torch.cat([2 * protos, -protos.square().sum(-1, keepdim=True)], -1)


def classify(query: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Logits ``(T, Q, way)`` of query features ``(T, Q, D)`` under fitted weights ``(T, way, D + 1)``."""
    return torch.cat([query, query.new_ones(*query.shape[:2], 1)], -1) @ w.transpose(1, 2)


def failure_classes(logits: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The dataset class with the lowest query accuracy in each task (ties: the first), ``(T,)``.

    Args:
        logits: ``(T, Q, way)``; labels: ``(T, Q)`` episode labels; classes: ``(T, way)`` dataset class of each label.
    """
    way = logits.shape[-1]
    hit = (logits.argmax(-1) == labels).float()  # (T, Q)
    per_class = hit.new_zeros(labels.shape[0], way).scatter_add_(1, labels, hit)  # on the logits' device
    count = hit.new_zeros(labels.shape[0], way).scatter_add_(1, labels, torch.ones_like(hit)).clamp_min(1)
    worst = (per_class / count).argmin(1)  # (T,) episode label
    return classes.to(worst.device).gather(1, worst[:, None]).squeeze(1)


class HardTaskSampler:
    """Hard tasks from failure classes: episode ``i`` draws ``way`` distinct classes from the failure pool
    (topped up with random classes when the pool is smaller than ``way``), then fresh images of each; a pure
    function of ``(seed, i, pool)``."""

    def __init__(self, sampler: EpisodeSampler) -> None:
        self.base = sampler

    def episode(self, index: int, pool: torch.Tensor) -> Episode:
        base, split = self.base, self.base.split
        gen = torch.Generator().manual_seed(base.seed * 1_000_003 + 3_333_333_333 + index)
        pool = pool.cpu().unique()  # episodes are drawn on the CPU, from the CPU copy of the split
        pool = pool[torch.randperm(pool.numel(), generator=gen)][:base.way]
        if pool.numel() < base.way:  # top up with classes outside the pool
            others = torch.ones(split.num_classes, dtype=torch.bool)
            others[pool] = False
            extra = others.nonzero().flatten()
            pool = torch.cat([pool, extra[torch.randperm(extra.numel(), generator=gen)[:base.way - pool.numel()]]])
        classes = pool[torch.randperm(base.way, generator=gen)]  # random order = random labels
        return base.episode_of(classes, gen)


def hard_task_batch(out, episodes: list[Episode], sampler: EpisodeSampler, first: int) -> list[Episode]:
    """MTL's HT meta-batch, the follow-up the trainer runs after a meta-batch when ``--hard-tasks`` is on: as many
    new tasks, each from the classes the tasks of ``episodes`` failed most (``out`` is their method output);
    task ``t`` is a pure function of ``(seed, first + t, pool)``, so resumed runs redraw the same tasks."""
    pool = failure_classes(out.logits.detach(), out.query_labels, torch.stack([e.classes for e in episodes]))
    hard = HardTaskSampler(sampler)
    pool = pool.cpu()  # one transfer per meta-batch: episodes are drawn on the CPU
    return [hard.episode(first + t, pool) for t in range(len(episodes))]
