"""EGNN edge update (Kim et al., CVPR 2019, Eqs. 4-5)."""
from __future__ import annotations

import torch
import torch.nn as nn

from egnn.nn.utils import masked_apply, mlp, off_diagonal, row_normalize


class EdgeUpdate(nn.Module):
    r"""Re-estimate each edge from its nodes' new features, keeping its previous belief as a prior.

    .. math::
        s_{ij} = \sigma\big(f_e(|v_i - v_j|)\big), \qquad
        \bar e^{1}_{ij} = \frac{s_{ij}\, e^{1}_{ij}}{\sum_{k \ne i} s_{ik}\, e^{1}_{ik}} \sum_{k \ne i} e^{1}_{ik},
        \qquad
        \bar e^{2}_{ij} = \frac{(1 - s_{ij})\, e^{2}_{ij}}{\sum_{k \ne i} (1 - s_{ik})\, e^{2}_{ik}}
        \sum_{k \ne i} e^{2}_{ik},

    then every self-loop is set to :math:`[1, 0]` and each edge is normalised over its two channels:
    :math:`e'_{ij} = (\bar e_{ij} + \epsilon) / \sum_c (\bar e^{c}_{ij} + \epsilon)`. The row rescaling keeps each
    node's total mass per channel, so a layer redistributes belief rather than inventing it.
    :math:`f_e` is Linear-BN-LeakyReLU with widths ``2F, 2F, F, F`` (``F = hidden_features``), then a linear map to 1.

    Shapes:
        node features ``(B, N, F_in)``, edges ``(B, N, N, 2)``, node mask ``(B, N)`` -> edges ``(B, N, N, 2)``.
    """

    def __init__(self, in_features: int, hidden_features: int, dropout: float = 0.0, eps: float = 1e-6) -> None:
        super().__init__()
        h = hidden_features
        self.similarity = nn.Sequential(mlp([in_features, 2 * h, 2 * h, h, h], dropout), nn.Linear(h, 1))
        self.eps = eps
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.similarity.modules():
            if isinstance(m, (nn.Linear, nn.BatchNorm1d)):
                m.reset_parameters()

    def forward(self, v: torch.Tensor, e: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        pair_mask = node_mask[:, :, None] & node_mask[:, None, :]  # (B, N, N) real pairs, self-loops included
        diff = (v[:, :, None, :] - v[:, None, :, :]).abs()  # (B, N, N, F)
        sim = torch.sigmoid(masked_apply(self.similarity, diff, pair_mask))  # (B, N, N, 1)
        prior = e * off_diagonal(node_mask)[..., None]  # (B, N, N, 2)
        mass = prior.sum(2, keepdim=True)  # (B, N, 1, 2) each row's total per channel
        e = row_normalize(torch.cat([sim, 1 - sim], -1) * prior) * mass
        eye = torch.eye(e.shape[1], device=e.device, dtype=e.dtype)
        e = e + torch.stack([eye, torch.zeros_like(eye)], -1)  # self-loops: [1, 0]
        e = (e + self.eps) / (e + self.eps).sum(-1, keepdim=True)
        return e * pair_mask[..., None]  # padding stays zero
