"""Small helpers shared by the graph layers."""
from __future__ import annotations

import torch
import torch.nn as nn


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear -> BatchNorm -> LeakyReLU(0.2) per step: the 1x1-conv blocks of the EGNN reference code."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers += [nn.Linear(dims[i], dims[i + 1], bias=False), nn.BatchNorm1d(dims[i + 1]), nn.LeakyReLU(0.2)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def masked_apply(module: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply a row-wise ``module`` to the entries of ``x (..., F)`` where ``mask (...)`` holds, zeros elsewhere.

    BatchNorm then sees only real nodes or pairs, never padding.
    """
    if bool(mask.all()):  # episodes of equal size: no padding, no gather
        return module(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)
    rows = module(x[mask])
    out = rows.new_zeros(*x.shape[:-1], rows.shape[-1])
    out[mask] = rows
    return out


def off_diagonal(node_mask: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` node mask -> ``(B, N, N)`` mask of pairs of distinct real nodes."""
    n = node_mask.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=node_mask.device)
    return node_mask[:, :, None] & node_mask[:, None, :] & ~eye


def row_normalize(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L1-normalise ``(B, N, N, C)`` over the neighbour axis, per channel."""
    return e / e.sum(2, keepdim=True).clamp_min(eps)
