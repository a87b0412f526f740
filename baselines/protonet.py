"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

from egnn.methods.base import FewShotMethod, MethodOutput, prototype_logits


class PrototypicalNetworks(FewShotMethod):
    """Each class is the mean embedding of its labeled supports; a query scores each class by its negative
    squared Euclidean distance to the prototype. Queries never interact, so both modes give the same result.
    """

    @classmethod
    def from_config(cls, backbone, cfg) -> "PrototypicalNetworks":
        return cls(backbone)

    def forward(self, batch: Batch, transductive: bool = True) -> MethodOutput:
        v, dense = self.embed(batch)  # (B, N, D)
        return MethodOutput(logits=prototype_logits(v, dense), query_labels=self.queries(dense.y, dense))

    def loss(self, out: MethodOutput) -> torch.Tensor:
        return F.cross_entropy(out.logits.flatten(0, 1), out.query_labels.flatten())
