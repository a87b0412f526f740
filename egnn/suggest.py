"""What to label next: which query images to label after a first pass.

Measured on Omniglot (``scripts/active_labeling.py``, ``results/active_labeling_omniglot_20w.md``): labeling a
*random* sample of the images improved the model's labels of the rest more than any informed choice tried, so
``random`` (seeded) is what ``egnn predict --suggest`` and ``egnn app`` name. The others stay for that study:

- ``least-confident``: the lowest top probability;
- ``coverage``: greedy on ``sum_j a_ij u_j``, the doubt ``u_j = 1 - max_c p_jc`` of every query weighted by its
  affinity ``a_ij`` to ``i`` (``a_ii = 1``), each pick taking off the doubt it covers (``u_j <- u_j (1 - a_ij)``);
- ``uncovered``: the same with ``u_j = 1 - known_j``, how unlike query ``j`` is to every class's examples.

Each lost to random by 1.3 to 2.8 points of accuracy on the still-unlabeled images (20-way, 10 labels a round): the
images a model is unsure of are often odd drawings, and as examples they mislead the transductive vote for the
rest, while a random sample adds typical examples (and estimates the accuracy of the labels without bias).
"""
from __future__ import annotations

import torch

from egnn.errors import UserError


def least_confident(probabilities: torch.Tensor, affinity: torch.Tensor | None, k: int,
                    generator: torch.Generator | None = None, known: torch.Tensor | None = None) -> list[int]:
    return probabilities.amax(-1).argsort()[:k].tolist()


def random_picks(probabilities: torch.Tensor, affinity: torch.Tensor | None, k: int,
                 generator: torch.Generator | None = None, known: torch.Tensor | None = None) -> list[int]:
    return torch.randperm(probabilities.shape[0], generator=generator)[:k].tolist()


def cover(doubt: torch.Tensor, affinity: torch.Tensor, k: int) -> list[int]:
    """Greedy picks on ``sum_j a_ij u_j``, each taking off the doubt it covers: ``u_j <- u_j (1 - a_ij)``."""
    a = affinity.float().clamp(0, 1).clone()
    a.fill_diagonal_(1.0)
    doubt = doubt.float().clone()
    picked: list[int] = []
    taken = torch.zeros_like(doubt, dtype=torch.bool)
    for _ in range(min(k, doubt.numel())):  # k picks, each a batched (Q, Q) @ (Q,) product
        worth = (a @ doubt).masked_fill(taken, -1.0)
        best = int(worth.argmax())
        picked.append(best)
        taken[best] = True
        doubt = doubt * (1 - a[best])
    return picked


def coverage(probabilities: torch.Tensor, affinity: torch.Tensor | None, k: int,
             generator: torch.Generator | None = None, known: torch.Tensor | None = None) -> list[int]:
    if affinity is None:
        return least_confident(probabilities, None, k)
    return cover(1 - probabilities.float().amax(-1), affinity, k)


def uncovered(probabilities: torch.Tensor, affinity: torch.Tensor | None, k: int,
              generator: torch.Generator | None = None, known: torch.Tensor | None = None) -> list[int]:
    """Coverage of what the examples do not reach yet: ``u_j = 1 - known_j`` (how unlike query ``j`` is to every
    class's examples) in place of the class doubt, so that a pick is a typical image of a region no example covers,
    rather than an odd one between classes."""
    if known is None or affinity is None:
        return coverage(probabilities, affinity, k, generator)
    return cover(1 - known.float(), affinity, k)


STRATEGIES = {"coverage": coverage, "uncovered": uncovered, "least-confident": least_confident,
              "random": random_picks}


def suggest(probabilities: torch.Tensor, affinity: torch.Tensor | None, k: int, strategy: str = "random",
            generator: torch.Generator | None = None, known: torch.Tensor | None = None) -> list[int]:
    """Indices of the ``k`` queries to label next, in order, from class ``probabilities (Q, way)``, the queries'
    ``affinity (Q, Q)`` and ``known (Q,)`` scores, by ``strategy`` (random: seeded by ``generator``, default
    seed 0, so the same images give the same suggestions)."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if k < 0:
        raise UserError(f"--suggest must be at least 0, got {k}")
    if strategy not in STRATEGIES:
        raise UserError(f"unknown suggestion strategy '{strategy}': choose one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[strategy](probabilities, affinity, min(k, probabilities.shape[0]), generator, known=known)
