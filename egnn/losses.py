"""Losses and metrics on dense episode batches."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def layer_weights(num_layers: int, hidden: float = 0.5, last: float = 1.0) -> torch.Tensor:
    """EGNN's layer weights: 0.5 for every hidden layer, 1.0 for the last."""
    w = torch.full((num_layers,), hidden)
    w[-1] = last
    return w


def edge_labeling_loss(similarity: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    r"""Balanced binary cross-entropy on the masked (query) edges of every layer.

    .. math::
        \mathcal{L} = \frac{1}{L} \sum_{l=1}^{L} \lambda_l \Big(
            \operatorname{mean}_{(i,j) \in \mathcal{P}} \mathrm{BCE}(s^l_{ij}, 1) +
            \operatorname{mean}_{(i,j) \in \mathcal{N}} \mathrm{BCE}(s^l_{ij}, 0) \Big)

    where :math:`\mathcal{P}` / :math:`\mathcal{N}` are the masked same-class / different-class edges of the
    whole batch. Averaging positives and negatives separately stops the many different-class edges from
    drowning the few same-class ones. The mean over layers follows the reference implementation.

    Args:
        similarity: ``(L, B, N, N)`` predicted similarity of every layer, in (0, 1); or ``(L, E)`` on an edge list.
        target: ``(B, N, N)`` (or ``(E,)``) 1 for same-class pairs, 0 otherwise.
        mask: ``(B, N, N)`` (or ``(E,)``) bool, the edges that carry loss.
        weights: ``(L,)`` layer weights; default :func:`layer_weights`.
    """
    if weights is None:
        weights = layer_weights(similarity.shape[0])
    eps = 1e-7
    with torch.autocast(similarity.device.type, enabled=False):  # in float32, also under mixed precision
        similarity = similarity.to(torch.promote_types(similarity.dtype, torch.float32))  # float64 stays
        bce = F.binary_cross_entropy(similarity.clamp(eps, 1 - eps), target.to(similarity).expand_as(similarity),
                                     reduction="none")
    pos = (mask & (target > 0.5)).to(bce.dtype)  # (B, N, N)
    neg = (mask & (target <= 0.5)).to(bce.dtype)
    per_layer = ((bce * pos).flatten(1).sum(1) / pos.sum().clamp_min(1)
                 + (bce * neg).flatten(1).sum(1) / neg.sum().clamp_min(1))  # (L,)
    return (weights.to(per_layer) * per_layer).mean()


def query_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-episode accuracy ``(B,)`` from query scores ``(B, Q, way)`` and labels ``(B, Q)``."""
    return (logits.argmax(-1) == labels).float().mean(-1)


def edge_accuracy(similarity: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-episode accuracy ``(B,)`` of thresholding similarity ``(B, N, N)`` at 0.5 on the masked edges."""
    hit = ((similarity > 0.5).float() == target).float() * mask
    return hit.sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)


def mean_ci95(values) -> tuple[float, float]:
    """Mean and half-width of the normal 95% confidence interval, as few-shot papers report them."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), 1.96 * float(v.std(unbiased=True)) / math.sqrt(v.numel())
