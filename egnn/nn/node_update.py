"""EGNN node update (Kim et al., CVPR 2019, Eq. 3)."""
from __future__ import annotations

import torch

from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from egnn.nn.utils import GRAPH_SLOPE, masked_apply, mlp, off_diagonal, row_normalize, uses_groups, weighted_apply


class NodeUpdate(MessagePassing):
    r"""Aggregate neighbours through each edge channel separately, then transform.

    .. math::
        \tilde e^{c}_{ij} = \frac{e^{c}_{ij}}{\sum_{k \ne i} e^{c}_{ik}} \quad (j \ne i), \qquad
        v_i' = f_v\Big(\Big[\, v_i \,\Big\|\, \sum_{j \ne i} \tilde e^{1}_{ij} v_j \,\Big\|\,
               \sum_{j \ne i} \tilde e^{2}_{ij} v_j \Big]\Big)

    Channel 1 (similarity) gathers evidence from likely same-class neighbours, channel 2 (dissimilarity)
    from likely different-class ones; self-loops are excluded from the aggregation. :math:`f_v` is
    Linear-BN-LeakyReLU(0.01) twice, widths ``2 * out_features`` then ``out_features``, with per-graph
    channel dropout (:class:`~egnn.nn.utils.TaskDropout`) after the last step, as in the reference code.

    Dense path (:meth:`forward`): every pair of an episode is an edge.
    Sparse path (:meth:`forward_sparse`): PyG message passing over any ``edge_index``, where edge
    ``(j -> i)`` carries :math:`e_{ij}` and the sums run over :math:`i`'s incoming edges; on a fully connected
    graph with self-loops both paths compute the same thing.

    Shapes:
        dense: node features ``(B, N, F_in)``, edges ``(B, N, N, 2)``, node mask ``(B, N)`` -> ``(B, N, F_out)``;
        sparse: node features ``(N, F_in)``, ``edge_index (2, E)``, edges ``(E, 2)``, optional graph index
        ``batch (N,)`` and graph count ``num_graphs`` (for dropout) -> ``(N, F_out)``.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0, slope: float = GRAPH_SLOPE) -> None:
        super().__init__(aggr="sum")
        self.transform = mlp([3 * in_features, 2 * out_features, out_features], dropout, "last", slope)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for m in self.transform.modules():
            if hasattr(m, "reset_parameters") and m is not self.transform:
                m.reset_parameters()

    def forward(self, v: torch.Tensor, e: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        weights = row_normalize(e * off_diagonal(node_mask)[..., None])  # (B, N, N, 2)
        aggr = torch.einsum("bijc,bjf->bicf", weights, v).flatten(2)  # (B, N, 2F): [sim || dis] channels
        return masked_apply(self.transform, torch.cat([v, aggr], -1), node_mask)  # (B, N, F_out)

    def forward_sparse(self, x: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor,
                       batch: torch.Tensor | None = None, num_graphs: int | None = None) -> torch.Tensor:
        src, dst = edge_index
        w = e * (src != dst)[:, None].to(e.dtype)  # (E, 2) self-loops carry no message
        w = w / scatter(w, dst, 0, dim_size=x.shape[0], reduce="sum").clamp_min(1e-12)[dst]  # row-normalised
        aggr = self.propagate(edge_index, x=x, w=w)  # (N, 2F)
        group = batch if uses_groups(self.transform) else None
        return weighted_apply(self.transform, torch.cat([x, aggr], -1), None, group, num_graphs)  # (N, F_out)

    def message(self, x_j: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (w[:, :, None] * x_j[:, None, :]).flatten(1)  # (E, 2F): [sim || dis] channels
