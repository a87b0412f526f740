"""EGNN node update (Kim et al., CVPR 2019, Eq. 3)."""
from __future__ import annotations

import torch
import torch.nn as nn

from egnn.nn.utils import masked_apply, mlp, off_diagonal, row_normalize


class NodeUpdate(nn.Module):
    r"""Aggregate neighbours through each edge channel separately, then transform.

    .. math::
        \tilde e^{c}_{ij} = \frac{e^{c}_{ij}}{\sum_{k \ne i} e^{c}_{ik}} \quad (j \ne i), \qquad
        v_i' = f_v\Big(\Big[\, v_i \,\Big\|\, \sum_{j \ne i} \tilde e^{1}_{ij} v_j \,\Big\|\,
               \sum_{j \ne i} \tilde e^{2}_{ij} v_j \Big]\Big)

    Channel 1 (similarity) gathers evidence from likely same-class neighbours, channel 2 (dissimilarity)
    from likely different-class ones; self-loops are excluded from the aggregation. :math:`f_v` is
    Linear-BN-LeakyReLU twice, widths ``2 * out_features`` then ``out_features``.

    Shapes:
        node features ``(B, N, F_in)``, edges ``(B, N, N, 2)``, node mask ``(B, N)`` -> ``(B, N, F_out)``.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.transform = mlp([3 * in_features, 2 * out_features, out_features], dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.transform.modules():
            if hasattr(m, "reset_parameters") and m is not self.transform:
                m.reset_parameters()

    def forward(self, v: torch.Tensor, e: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        weights = row_normalize(e * off_diagonal(node_mask)[..., None])  # (B, N, N, 2)
        aggr = torch.einsum("bijc,bjf->bicf", weights, v).flatten(2)  # (B, N, 2F): [sim || dis] channels
        return masked_apply(self.transform, torch.cat([v, aggr], -1), node_mask)  # (B, N, F_out)
