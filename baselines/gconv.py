"""Layers of Garcia & Bruna's node-labeling GNN (ICLR 2018)."""
from __future__ import annotations

import torch
import torch.nn as nn

from egnn.nn.utils import masked_apply, mlp, off_diagonal


class LearnedAdjacency(nn.Module):
    r"""A learned metric turned into a row-stochastic adjacency.

    .. math::
        A_{ij} = \operatorname{softmax}_{j \ne i}\, \varphi(|x_i - x_j|)

    :math:`\varphi` is Linear-BN-LeakyReLU with widths ``2F, 2F, F, F`` then a linear map to 1 (``F = hidden``).

    Shapes:
        node features ``(B, N, F_in)``, node mask ``(B, N)`` -> adjacency ``(B, N, N)``.
    """

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.metric = nn.Sequential(mlp([in_features, 2 * hidden, 2 * hidden, hidden, hidden]), nn.Linear(hidden, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.metric.modules():
            if isinstance(m, (nn.Linear, nn.BatchNorm1d)):
                m.reset_parameters()

    def forward(self, x: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        pair_mask = node_mask[:, :, None] & node_mask[:, None, :]
        score = masked_apply(self.metric, (x[:, :, None] - x[:, None]).abs(), pair_mask)[..., 0]  # (B, N, N)
        score = score.masked_fill(~off_diagonal(node_mask), float("-inf"))
        return torch.softmax(score, -1).nan_to_num(0.0)  # a padded row is all -inf: zeros, not NaN


class GraphConv(nn.Module):
    r"""Graph convolution on the operator family :math:`\{I, A\}`.

    .. math::
        x'_i = \rho\big(\mathrm{BN}(W_1 x_i + W_2 \textstyle\sum_j A_{ij} x_j)\big)

    with :math:`\rho` = LeakyReLU; the output layer (``activation=False``) is linear and has no BatchNorm.

    Shapes:
        node features ``(B, N, F_in)``, adjacency ``(B, N, N)``, node mask ``(B, N)`` -> ``(B, N, F_out)``.
    """

    def __init__(self, in_features: int, out_features: int, activation: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(2 * in_features, out_features)]
        if activation:
            layers += [nn.BatchNorm1d(out_features), nn.LeakyReLU(0.2)]
        self.transform = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.transform.modules():
            if isinstance(m, (nn.Linear, nn.BatchNorm1d)):
                m.reset_parameters()

    def forward(self, x: torch.Tensor, adj: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        return masked_apply(self.transform, torch.cat([x, adj @ x], -1), node_mask)
