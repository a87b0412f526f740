"""Node-labeling GNN (Garcia & Bruna, ICLR 2018)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.data import Batch

from baselines.gconv import GraphConv, LearnedAdjacency
from egnn.errors import ConfigError
from egnn.methods.base import FewShotMethod, MethodOutput


class NodeLabelingGNN(FewShotMethod):
    """Few-shot learning with graph neural networks (Garcia & Bruna, ICLR 2018).

    Each node is its embedding concatenated with a one-hot label (zeros for queries and unlabeled supports);
    every layer learns an adjacency from |x_i - x_j|, convolves over {I, A}, and concatenates its output to
    the node features. The last layer predicts the query labels, trained with cross-entropy.
    """

    varied_queries = True

    def __init__(self, backbone: nn.Module, num_layers: int = 3, hidden: int = 96, max_way: int = 5) -> None:
        super().__init__(backbone)
        # width of the label block, the training way as in the paper: wider blocks train markedly slower
        self.max_way = max_way
        f = backbone.out_features + max_way
        self.adjacency, self.convs = nn.ModuleList(), nn.ModuleList()
        for _ in range(num_layers - 1):  # hidden layers, each adding hidden / 2 features
            self.adjacency.append(LearnedAdjacency(f, hidden))
            self.convs.append(GraphConv(f, hidden // 2))
            f += hidden // 2
        self.adjacency.append(LearnedAdjacency(f, hidden))
        self.output = GraphConv(f, max_way, activation=False)

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg) -> "NodeLabelingGNN":
        return cls(backbone, cfg.layers, cfg.node_features, max_way=cfg.way)

    def node_logits(self, v: torch.Tensor, labels: torch.Tensor, labeled: torch.Tensor, node_mask: torch.Tensor,
                    way: int) -> torch.Tensor:
        """``(B, N, way)`` class scores of every node; ``labels`` are read only where ``labeled``."""
        onehot = F.one_hot(labels.clamp_min(0), self.max_way).to(v.dtype) * labeled[..., None]
        x = torch.cat([v, onehot], -1)
        for adjacency, conv in zip(self.adjacency, self.convs):
            x = torch.cat([x, conv(x, adjacency(x, node_mask), node_mask)], -1)
        return self.output(x, self.adjacency[-1](x, node_mask), node_mask)[..., :way]

    def forward(self, batch: Batch, transductive: bool = True) -> MethodOutput:
        v, dense = self.embed(batch)
        if dense.way > self.max_way:
            raise ConfigError(f"this GNN was trained {self.max_way}-way and labels at most {self.max_way} classes, "
                              f"got way={dense.way}: evaluate with --way {self.max_way} or fewer")
        if transductive:
            logits = self.queries(self.node_logits(v, dense.y, dense.labeled_mask, dense.node_mask, dense.way), dense)
        else:  # one graph per query: the supports and that query
            idx = dense.per_query_index()  # (Q, S+1)
            b, q = v.shape[0], idx.shape[0]
            sub = lambda t: t[:, idx].flatten(0, 1)  # noqa: E731  (B, N, ...) -> (B*Q, S+1, ...)
            out = self.node_logits(sub(v), sub(dense.y), sub(dense.labeled_mask), sub(dense.node_mask), dense.way)
            logits = out[:, -1].view(b, q, dense.way)
        return MethodOutput(logits=logits, query_labels=self.queries(dense.y, dense))

    def loss(self, out: MethodOutput) -> torch.Tensor:
        return F.cross_entropy(out.logits.flatten(0, 1), out.query_labels.flatten())
