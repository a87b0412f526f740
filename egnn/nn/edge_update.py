"""EGNN edge update (Kim et al., CVPR 2019, Eqs. 4-5)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch_geometric.utils import scatter

from egnn.nn.utils import (GRAPH_SLOPE, all_real, full_mask, masked_apply, mlp, off_diagonal, row_groups,
                            row_normalize, uses_groups, weighted_apply)


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
    :math:`f_e` is Linear-BN-LeakyReLU(0.01) with widths ``2F, 2F, F, F`` (``F = hidden_features``), each step followed
    by per-graph channel dropout when ``dropout > 0``, then a linear map to 1: the reference's ``sim_network``.

    :math:`f_e` sees :math:`|v_i - v_j| = |v_j - v_i|`, so it runs once per unordered pair and the result is
    mirrored; the self-pairs of a graph, whose input is the zero vector, share one row. In training, BatchNorm
    weights these rows by their multiplicity (2 per pair, the graph's node count for its zero row), which reproduces the
    statistics of all :math:`N^2` ordered pairs: the same math for about half the cost
    (``symmetric=False`` runs every ordered pair, the reference computation).

    :meth:`forward_sparse` runs the same update on any ``edge_index`` (edge ``(j -> i)`` carries
    :math:`e_{ij}`; the sums run over :math:`i`'s incoming edges), with ``torch_geometric.utils.scatter``.

    Shapes:
        dense: node features ``(B, N, F_in)``, edges ``(B, N, N, 2)``, node mask ``(B, N)`` -> ``(B, N, N, 2)``;
        sparse: node features ``(N, F_in)``, ``edge_index (2, E)``, edges ``(E, 2)``, optional graph index
        ``batch (N,)`` and graph count ``num_graphs`` (for dropout) -> ``(E, 2)``.
    """

    def __init__(self, in_features: int, hidden_features: int, dropout: float = 0.0, eps: float = 1e-6,
                 slope: float = GRAPH_SLOPE) -> None:
        super().__init__()
        h = hidden_features
        self.similarity = nn.Sequential(mlp([in_features, 2 * h, 2 * h, h, h], dropout, "every", slope),
                                        nn.Linear(h, 1))
        self.eps = eps
        self.symmetric = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.similarity.modules():
            if isinstance(m, (nn.Linear, nn.BatchNorm1d)):
                m.reset_parameters()

    def forward(self, v: torch.Tensor, e: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        b, n = node_mask.shape
        pair_mask = full_mask(b, n, n, device=node_mask.device) if all_real(node_mask) else (
            node_mask[:, :, None] & node_mask[:, None, :])  # (B, N, N) real pairs, self-loops included
        sim = self.pair_similarity(v, node_mask) if self.symmetric else torch.sigmoid(
            masked_apply(self.similarity, (v[:, :, None] - v[:, None, :]).abs(), pair_mask))  # (B, N, N, 1)
        prior = e * off_diagonal(node_mask)[..., None]  # (B, N, N, 2)
        mass = prior.sum(2, keepdim=True)  # (B, N, 1, 2) each row's total per channel
        e = row_normalize(torch.cat([sim, 1 - sim], -1) * prior) * mass
        eye = torch.eye(e.shape[1], device=e.device, dtype=e.dtype)
        e = e + torch.stack([eye, torch.zeros_like(eye)], -1)  # self-loops: [1, 0]
        e = (e + self.eps) / (e + self.eps).sum(-1, keepdim=True)
        return e * pair_mask[..., None]  # padding stays zero

    def pair_similarity(self, v: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        r""":math:`\sigma(f_e(|v_i - v_j|))` for all ordered pairs ``(B, N, N, 1)``, computed once per unordered pair."""
        b, n, _ = v.shape
        iu, ju = torch.triu_indices(n, n, 1, device=v.device)  # (P,) each, i < j
        full = all_real(node_mask)  # equal-sized episodes: every pair is real, nothing to gather or scatter
        valid = full_mask(b, iu.numel(), device=v.device) if full else node_mask[:, iu] & node_mask[:, ju]  # (B, P)
        rows = (v[:, iu] - v[:, ju]).abs()  # (B, P, F)
        rows = rows.flatten(0, 1) if full else rows[valid]  # (R, F) real pairs only
        group = row_groups(valid) if uses_groups(self.similarity) else None  # graph of each row, for dropout
        real, weight = rows.shape[0], None
        if self.training:  # each graph's self-pairs: one zero row standing for its real nodes
            rows = torch.cat([rows, rows.new_zeros(b, rows.shape[1])])
            if group is not None:
                group = torch.cat([group, torch.arange(b, device=v.device)])
            weight = torch.cat([rows.new_full((real,), 2.0), node_mask.sum(1).to(rows.dtype)])
        out = torch.sigmoid(weighted_apply(self.similarity, rows, weight, group, b))  # (R [+B], 1)
        if full:
            upper = out[:real].view(b, iu.numel(), 1)
        else:
            upper = v.new_zeros(b, iu.numel(), 1)
            upper[valid] = out[:real]
        sim = v.new_zeros(b, n, n, 1)
        sim[:, iu, ju] = upper
        sim[:, ju, iu] = upper
        return sim  # self-pairs stay 0: the caller masks them out of the prior

    def forward_sparse(self, x: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor,
                       batch: torch.Tensor | None = None, num_graphs: int | None = None) -> torch.Tensor:
        src, dst = edge_index
        n, loop = x.shape[0], (src == dst)[:, None]  # (E, 1)
        group = batch[dst] if batch is not None and uses_groups(self.similarity) else None
        sim = torch.sigmoid(weighted_apply(self.similarity, (x[dst] - x[src]).abs(), None, group, num_graphs))  # (E, 1)
        prior = e.masked_fill(loop, 0.0)  # (E, 2)
        mass = scatter(prior, dst, 0, dim_size=n, reduce="sum")  # (N, 2) each row's total per channel
        e = torch.cat([sim, 1 - sim], -1) * prior
        e = e / scatter(e, dst, 0, dim_size=n, reduce="sum").clamp_min(1e-12)[dst] * mass[dst]
        e = e + loop * e.new_tensor([1.0, 0.0])  # self-loops: [1, 0]
        return (e + self.eps) / (e + self.eps).sum(-1, keepdim=True)
