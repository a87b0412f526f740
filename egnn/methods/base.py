"""One interface for every few-shot method: the trainer and the evaluation never branch on a name."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch_geometric.data import Batch
from torch_geometric.utils import to_dense_batch

from egnn.graph import DenseEpisodes


@dataclass
class MethodOutput:
    """What a method returns for a batch of B episodes with Q queries each.

    Attributes:
        logits: ``(B, Q, way)`` class scores of the queries.
        query_labels: ``(B, Q)`` true labels of the queries (for loss and metrics only).
        episode_metrics: extra per-episode metrics, each ``(B,)``, e.g. edge accuracy.
        extras: method-specific tensors, e.g. EGNN's edges of every layer.
    """

    logits: torch.Tensor
    query_labels: torch.Tensor
    episode_metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class FewShotMethod(nn.Module):
    """Owns the embedding network; a method reads the episode graph and scores the queries.

    Subclasses implement :meth:`forward` and :meth:`loss`. ``transductive=True`` lets queries see each
    other; ``False`` predicts every query from the supports and itself only.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def embed(self, batch: Batch) -> tuple[torch.Tensor, DenseEpisodes]:
        """Embed every image once: ``(B, N, D)`` features and the dense view of the episodes."""
        x = batch.x
        if x.dim() != 4:
            raise ValueError(f"Expected images of shape (nodes, C, H, W), got {tuple(x.shape)}")
        feats = self.backbone(x.float().div_(255) if x.dtype == torch.uint8 else x)  # (T, D)
        v, _ = to_dense_batch(feats, batch.batch)  # (B, N, D)
        return v, DenseEpisodes.from_batch(batch)

    @staticmethod
    def queries(t: torch.Tensor, dense: DenseEpisodes) -> torch.Tensor:
        """Rows of ``t (B, N, ...)`` at query nodes: ``(B, Q, ...)``; every episode must hold Q queries."""
        q = dense.query_mask.sum(1)
        if (q != q[0]).any():
            raise ValueError(f"Expected the same number of queries in every episode, got {q.tolist()}")
        return t[dense.query_mask].view(t.shape[0], int(q[0]), *t.shape[2:])

    def forward(self, batch: Batch, transductive: bool = True) -> MethodOutput:
        raise NotImplementedError

    def loss(self, out: MethodOutput) -> torch.Tensor:
        raise NotImplementedError
