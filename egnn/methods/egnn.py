"""EGNN as a few-shot method: embed, propagate edge labels, vote."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.data import Batch

from torch_geometric.utils import scatter

from egnn.graph import DenseEpisodes, edge_init, knn_edges, nodes_per_episode
from egnn.losses import edge_accuracy, edge_labeling_loss, layer_weights
from egnn.memory import dense_graph_bytes
from egnn.methods.base import FewShotMethod, MethodOutput
from egnn.nn import EGNN
from egnn.nn.utils import GRAPH_SLOPE, full_mask, off_diagonal


class EGNNMethod(FewShotMethod):
    """Edge-Labeling Graph Neural Network (Kim, Kim, Kim & Yoo, CVPR 2019).

    Edges carry (similarity, dissimilarity) and are refined layer by layer; training supervises the query
    edges of every layer. A query's class is the similarity-weighted vote over the *labeled* supports, so
    unlabeled supports and queries influence it only through the graph, never through their labels.
    """

    varied_queries = True
    sparse_graphs = True

    def __init__(self, backbone: nn.Module, num_layers: int = 3, node_features: int = 96,
                 edge_features: int = 96, dropout: float = 0.0, knn: int = 0, slope: float = GRAPH_SLOPE) -> None:
        super().__init__(backbone)
        self.knn = knn  # > 0: transductive episodes become sparse k-nearest-neighbour graphs
        self.gnn = EGNN(backbone.out_features, node_features, edge_features, num_layers, dropout, slope)
        self.register_buffer("layer_weights", layer_weights(num_layers), persistent=False)

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg) -> "EGNNMethod":
        return cls(backbone, cfg.layers, cfg.node_features, cfg.edge_features, cfg.graph_dropout(), cfg.knn,
                   cfg.graph_slope)

    def propagate(self, v: torch.Tensor, dense: DenseEpisodes, transductive: bool) -> torch.Tensor:
        """Edges of every layer ``(L, B, N, N, 2)`` for node features ``(B, N, D)``."""
        if transductive:
            return self.gnn(v, dense.init_edges, dense.node_mask)
        return self._per_query(v, dense)

    def _per_query(self, v: torch.Tensor, dense: DenseEpisodes) -> torch.Tensor:
        """Non-transductive: one graph per query (the supports plus that query), all run as one batch.

        Support-support edges, which every query's graph re-estimates, are averaged over the queries;
        query-query edges do not exist and are left at 0.5.
        """
        idx = dense.per_query_index()  # (Q, S+1)
        q, s = idx.shape[0], idx.shape[1] - 1
        b, n = dense.node_mask.shape
        v_q = v[:, idx].flatten(0, 1)  # (B*Q, S+1, D)
        e_q = dense.init_edges[:, idx[:, :, None], idx[:, None, :]].flatten(0, 1)  # (B*Q, S+1, S+1, 2)
        out = self.gnn(v_q, e_q, full_mask(b * q, s + 1, device=v.device))  # marked full: no read from the GPU
        out = out.view(out.shape[0], b, q, s + 1, s + 1, 2)  # (L, B, Q, S+1, S+1, 2)
        full = out.new_full((out.shape[0], b, n, n, 2), 0.5)
        full[:, :, :s, :s] = out[:, :, :, :s, :s].mean(2)
        full[:, :, s:, :s] = out[:, :, :, s, :s]  # query -> supports
        full[:, :, :s, s:] = out[:, :, :, :s, s].transpose(2, 3)  # supports -> query
        diag = torch.arange(s, n, device=v.device)
        full[:, :, diag, diag] = out[:, :, :, s, s]
        return full

    def loss_mask(self, dense: DenseEpisodes, transductive: bool) -> torch.Tensor:
        """``(B, N, N)`` edges that carry loss: those touching a query, none touching an unlabeled support.

        As in the reference code, transductive graphs keep the query self-loops (similarity close to 1, target 1)
        in the positive term of the balanced loss, and non-transductive ones drop the whole query-query block,
        which those graphs do not have. Unlike the reference, edges between an unlabeled support and a query carry
        no loss either: the unlabeled supports' labels never reach the loss.
        """
        query, unlabeled = dense.query_mask, dense.support_mask & ~dense.labeled_mask
        touches_query = query[:, :, None] | query[:, None, :]
        hidden = unlabeled[:, :, None] | unlabeled[:, None, :]
        pairs = dense.node_mask[:, :, None] & dense.node_mask[:, None, :]
        mask = pairs & touches_query & ~hidden
        if transductive:
            return mask & (off_diagonal(dense.node_mask) | (query[:, :, None] & query[:, None, :]))
        return mask & ~(query[:, :, None] & query[:, None, :])

    def vote(self, similarity: torch.Tensor, dense: DenseEpisodes) -> torch.Tensor:
        """Scores ``(B, N, way)``: each node's similarity-weighted count of labeled supports per class."""
        onehot = F.one_hot(dense.y.clamp_min(0), dense.way).to(similarity.dtype)
        onehot = onehot * dense.labeled_mask[..., None]  # only labeled supports vote
        return similarity @ onehot

    def forward(self, batch: Batch, transductive: bool = True) -> MethodOutput:
        if transductive and self.knn > 0:
            return self.forward_sparse(batch)
        v, dense = self.embed(batch)
        edges = self.propagate(v, dense, transductive)  # (L, B, N, N, 2)
        similarity = edges[..., 0]  # (L, B, N, N)
        target, mask = dense.edge_target(), self.loss_mask(dense, transductive)
        return MethodOutput(
            logits=self.queries(self.vote(similarity[-1], dense), dense),
            query_labels=self.queries(dense.y, dense),
            episode_metrics={"edge_acc": edge_accuracy(similarity[-1], target, mask)},
            extras={"edges": edges, "edge_target": target, "loss_mask": mask, "query_mask": dense.query_mask,
                    "transductive": transductive},
        )

    def forward_sparse(self, batch: Batch, edge_index: torch.Tensor | None = None) -> MethodOutput:
        """Transductive EGNN on sparse graphs, through PyG message passing: memory grows with the edges, not
        with N^2. Without ``edge_index``, each node gets edges from its ``knn`` nearest nodes of its episode and
        its ``knn`` nearest labeled supports (so every query can vote), both by embedding distance."""
        x = self.encode(batch.x, slots=nodes_per_episode(batch))  # (T, D)
        y, labeled, query = batch.y, batch.labeled_mask, batch.query_mask
        if edge_index is None:
            edge_index = knn_edges(x.detach(), batch.batch, self.knn, labeled, self.knn)
        src, dst = edge_index
        b = batch.num_graphs  # from ptr: no host sync
        edges = self.gnn.forward_sparse(x, edge_index, edge_init(edge_index, y, labeled), batch.batch, b)  # (L, E, 2)
        similarity = edges[..., 0]  # (L, E)
        onehot = F.one_hot(y.clamp_min(0), int(batch.way[0]) if torch.is_tensor(batch.way) else batch.way)
        votes = similarity[-1, :, None] * (onehot[src] * labeled[src, None]).to(similarity.dtype)  # (E, way)
        scores = scatter(votes, dst, 0, dim_size=x.shape[0], reduce="sum")  # (T, way)
        target = (y[src] == y[dst]).float()
        # as the dense loss_mask: edges touching a query, the query self-loops included, none touching an unlabeled support
        mask = ((src != dst) | query[dst]) & (query[src] | query[dst]) & (labeled | query)[src] & (labeled | query)[dst]
        hit = ((similarity[-1] > 0.5).float() == target).float() * mask
        per_episode = batch.batch[dst]
        edge_acc = scatter(hit, per_episode, 0, dim_size=b) / scatter(mask.float(), per_episode, 0, dim_size=b).clamp_min(1)
        return MethodOutput(
            logits=scores[query].view(b, -1, onehot.shape[1]),
            query_labels=y[query].view(b, -1),
            episode_metrics={"edge_acc": edge_acc},
            extras={"edges": edges, "edge_target": target, "loss_mask": mask, "edge_index": edge_index,
                    "query_mask": query},
        )

    def prepare_data_parallel(self) -> None:
        super().prepare_data_parallel()
        for update in self.gnn.edge_updates:  # the mirrored-pair trick normalises with local weighted statistics
            update.symmetric = False

    def builds_own_edges(self, transductive: bool) -> bool:
        return transductive and self.knn > 0

    def graph_name(self, transductive: bool) -> str:
        return f"knn{self.knn}" if self.builds_own_edges(transductive) else "dense"

    def graph_bytes(self, tasks: int, supports: int, queries: int, transductive: bool, training: bool) -> int:
        if self.builds_own_edges(transductive):
            return 0  # sparse graphs grow with the edges, not with N^2
        graphs, nodes = (tasks, supports + queries) if transductive else (tasks * queries, supports + 1)
        return dense_graph_bytes(graphs, nodes, len(self.gnn.edge_updates), self.gnn.edge_features, training)

    def figure(self, episode, transductive: bool):
        """The edge labels of ``episode`` before the first layer and after each (``egnn visualize``'s grid)."""
        from egnn.visualize import episode_graphs, grid_figure

        return grid_figure(episode_graphs(self, episode, transductive))

    def class_probabilities(self, logits: torch.Tensor, shots: torch.Tensor) -> torch.Tensor:
        """The vote normalised: each class's mean similarity to its labeled supports, over the sum of these.
        With equal shots this is the vote divided by its total; with uneven shots the mean keeps a class with
        more examples from winning by count alone."""
        mean = self.class_means(logits, shots)
        return mean / mean.sum(-1, keepdim=True).clamp_min(1e-12)

    @staticmethod
    def class_means(logits: torch.Tensor, shots: torch.Tensor) -> torch.Tensor:
        """``(..., way)`` each class's mean similarity to its labeled supports: the vote over the class's shots."""
        return logits.float() / shots.to(logits.device).clamp_min(1)

    def known_score(self, logits: torch.Tensor, shots: torch.Tensor) -> torch.Tensor:
        """The mean final-layer edge similarity of a query to the labeled examples of its best class: each edge is
        trained as the probability that its two nodes share a class, so a query of a class absent from the supports
        scores low against every class (the normalised vote, spread over the classes present, does not show it)."""
        return self.class_means(logits, shots).amax(-1)

    def query_affinity(self, out: MethodOutput) -> torch.Tensor | None:
        """The final layer's edge similarity between queries, symmetrised; None when the queries were not in one
        graph (non-transductive)."""
        edges = out.extras["edges"][-1, ..., 0]
        query = out.extras.get("query_mask")
        if "edge_index" in out.extras:  # sparse: scatter the query-query edges into a (Q, Q) matrix
            src, dst = out.extras["edge_index"]
            index = torch.full(query.shape, -1, dtype=torch.long, device=query.device)
            index[query] = torch.arange(int(query.sum()), device=query.device)
            keep = query[src] & query[dst]
            q = int(query.sum())
            dense = torch.zeros(q, q, device=edges.device, dtype=torch.float32)
            dense[index[dst[keep]], index[src[keep]]] = edges[keep].float()
        else:
            if not out.extras.get("transductive", True):
                return None
            dense = edges[0][query[0]][:, query[0]].float()
        return (dense + dense.T) / 2

    def loss(self, out: MethodOutput) -> torch.Tensor:
        return edge_labeling_loss(out.extras["edges"][..., 0], out.extras["edge_target"],
                                  out.extras["loss_mask"], self.layer_weights)
