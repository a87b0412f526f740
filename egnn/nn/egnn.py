"""The EGNN graph network: alternating node and edge updates."""
from __future__ import annotations

import torch
import torch.nn as nn

from egnn.nn.edge_update import EdgeUpdate
from egnn.nn.node_update import NodeUpdate
from egnn.nn.utils import GRAPH_SLOPE


class EGNN(nn.Module):
    r"""``num_layers`` rounds of :class:`NodeUpdate` then :class:`EdgeUpdate` (Kim et al., CVPR 2019).

    Layer ``l`` maps :math:`(V^{l-1}, E^{l-1}) \mapsto (V^{l}, E^{l})`; the edges of every layer are returned,
    because the edge-labeling loss supervises all of them. Dropout (whole feature channels per graph, after
    every edge-MLP step and the last node-MLP step) is off in the last layer, as in the reference code.

    Shapes:
        dense: node features ``(B, N, in_features)``, edges ``(B, N, N, 2)``, node mask ``(B, N)``
        -> edges ``(L, B, N, N, 2)``;
        sparse (:meth:`forward_sparse`): node features ``(N, in_features)``, ``edge_index (2, E)``,
        edges ``(E, 2)``, optional graph index ``batch (N,)`` and graph count ``num_graphs`` -> edges ``(L, E, 2)``.
    """

    def __init__(self, in_features: int = 128, node_features: int = 96, edge_features: int = 96,
                 num_layers: int = 3, dropout: float = 0.0, slope: float = GRAPH_SLOPE) -> None:
        super().__init__()
        self.edge_features = edge_features
        self.node_updates = nn.ModuleList()
        self.edge_updates = nn.ModuleList()
        for layer in range(num_layers):
            p = dropout if layer < num_layers - 1 else 0.0
            self.node_updates.append(NodeUpdate(in_features if layer == 0 else node_features, node_features, p,
                                                slope=slope))
            self.edge_updates.append(EdgeUpdate(node_features, edge_features, p, slope=slope))

    def reset_parameters(self) -> None:
        for m in [*self.node_updates, *self.edge_updates]:
            m.reset_parameters()

    def forward(self, v: torch.Tensor, e: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        edges = []
        for node_update, edge_update in zip(self.node_updates, self.edge_updates):
            v = node_update(v, e, node_mask)  # (B, N, F)
            e = edge_update(v, e, node_mask)  # (B, N, N, 2)
            edges.append(e)
        return torch.stack(edges)  # (L, B, N, N, 2)

    def forward_sparse(self, x: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor,
                       batch: torch.Tensor | None = None, num_graphs: int | None = None) -> torch.Tensor:
        edges = []
        for node_update, edge_update in zip(self.node_updates, self.edge_updates):
            x = node_update.forward_sparse(x, edge_index, e, batch, num_graphs)  # (N, F)
            e = edge_update.forward_sparse(x, edge_index, e, batch, num_graphs)  # (E, 2)
            edges.append(e)
        return torch.stack(edges)  # (L, E, 2)
