"""What to label next: the query images whose labels would most improve the labels of the rest.

A label helps most where the model is unsure, and it helps every query the model finds alike to the labeled one
(in EGNN's transductive graph a new labeled support pulls the queries it shares edges with). ``coverage`` picks
greedily by that: query ``i`` is worth ``sum_j a_ij u_j``, the uncertainty ``u_j = 1 - max_c p_jc`` of every
query weighted by its affinity ``a_ij`` to ``i`` (``a_ii = 1``); after each pick the uncertainty it covers is taken
off (``u_j <- u_j (1 - a_ij)``), so the next pick goes where doubt remains. Without affinities (non-transductive
scoring) it is ``least-confident``. ``random`` and ``least-confident`` are the baselines it is measured against
(``scripts/active_labeling.py``).
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


def coverage(probabilities: torch.Tensor, affinity: torch.Tensor | None, k: int,
             generator: torch.Generator | None = None, known: torch.Tensor | None = None) -> list[int]:
    if affinity is None:
        return least_confident(probabilities, None, k)
    a = affinity.float().clamp(0, 1).clone()
    a.fill_diagonal_(1.0)
    doubt = 1 - probabilities.float().amax(-1)  # (Q,)
    picked: list[int] = []
    taken = torch.zeros_like(doubt, dtype=torch.bool)
    for _ in range(min(k, doubt.numel())):  # k picks, each a batched (Q, Q) @ (Q,) product
        worth = (a @ doubt).masked_fill(taken, -1.0)
        best = int(worth.argmax())
        picked.append(best)
        taken[best] = True
        doubt = doubt * (1 - a[best])
    return picked


def uncovered(probabilities: torch.Tensor, affinity: torch.Tensor | None, k: int,
              generator: torch.Generator | None = None, known: torch.Tensor | None = None) -> list[int]:
    """Coverage of what the examples do not reach yet: ``u_j = 1 - known_j`` (how unlike query ``j`` is to every
    class's examples) in place of the class doubt, so that a pick is a typical image of a region no example covers,
    rather than an odd one between classes."""
    if known is None:
        return coverage(probabilities, affinity, k, generator)
    return coverage(known[:, None].expand(-1, 1), affinity, k, generator)


STRATEGIES = {"coverage": coverage, "uncovered": uncovered, "least-confident": least_confident,
              "random": random_picks}


def suggest(probabilities: torch.Tensor, affinity: torch.Tensor | None, k: int, strategy: str = "coverage",
            generator: torch.Generator | None = None, known: torch.Tensor | None = None) -> list[int]:
    """Indices of the ``k`` queries to label next, best first, from class ``probabilities (Q, way)`` and the
    queries' ``affinity (Q, Q)`` (None: least-confident)."""
    if k < 0:
        raise UserError(f"--suggest must be at least 0, got {k}")
    if strategy not in STRATEGIES:
        raise UserError(f"unknown suggestion strategy '{strategy}': choose one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[strategy](probabilities, affinity, min(k, probabilities.shape[0]), generator, known=known)
