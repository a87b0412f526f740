"""MTL's own few-shot classifier (Sun et al., CVPR 2019): a frozen pretrained backbone with Scaling-and-Shifting,
and a linear base learner fitted on each task's support set by a few differentiable gradient steps, starting
from a meta-learned initialisation. Meta-training updates only the SS parameters and that initialisation."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.data import Batch

from egnn.methods.base import FewShotMethod, MethodOutput
from egnn.mtl import classify, fit_classifier, prototype_classifier


class MTLClassifier(FewShotMethod):
    """Scores ``(B, Q, way)`` of the queries under a classifier fitted to the labeled supports of each episode.
    Queries never interact, so both modes give the same result."""

    def __init__(self, backbone: nn.Module, way: int, inner_steps: int = 20, inner_lr: float = 0.1,
                 inner_init: str = "learned") -> None:
        super().__init__(backbone)
        self.init = nn.Parameter(torch.zeros(way, backbone.out_features + 1))  # base learner's (W | b) at step 0
        self.inner_steps, self.inner_lr, self.inner_init = inner_steps, inner_lr, inner_init

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.inner_init not in ("learned", "prototypes"):
            from egnn.errors import ConfigError

            raise ConfigError(f"inner-init must be learned or prototypes, got '{cfg.inner_init}'")
        if cfg.inner_steps < 0 or cfg.inner_lr <= 0:
            from egnn.errors import ConfigError

            raise ConfigError(f"inner-steps must be >= 0 and inner-lr > 0, got {cfg.inner_steps} and {cfg.inner_lr}")

    @classmethod
    def from_config(cls, backbone, cfg) -> "MTLClassifier":
        return cls(backbone, cfg.way, cfg.inner_steps, cfg.inner_lr, cfg.inner_init)

    def forward(self, batch: Batch, transductive: bool = True) -> MethodOutput:
        v, dense = self.embed(batch)  # (B, N, D)
        if dense.way > self.init.shape[0]:
            from egnn.errors import ConfigError

            raise ConfigError(f"this MTL classifier was meta-trained {self.init.shape[0]}-way; evaluate with "
                              f"--way {self.init.shape[0]} or fewer")
        s = int(dense.support_mask[0].sum())
        labeled = dense.labeled_mask[:, :s]  # (B, S)
        if not bool(labeled.all()):  # unlabeled supports cannot teach a classifier
            keep = labeled[0]
            support, labels = v[:, :s][:, keep], dense.y[:, :s][:, keep]
        else:
            support, labels = v[:, :s], dense.y[:, :s]
        init = self.init[:dense.way]
        if self.inner_init == "prototypes":  # Proto-MAML: start at the nearest-prototype classifier, plus the learned
            init = prototype_classifier(support, labels, dense.way) + init  # residual (zero before meta-training)
        w = fit_classifier(support, labels, dense.way, self.inner_steps, self.inner_lr, init)
        return MethodOutput(logits=classify(self.queries(v, dense), w), query_labels=self.queries(dense.y, dense))

    def loss(self, out: MethodOutput) -> torch.Tensor:
        return F.cross_entropy(out.logits.flatten(0, 1), out.query_labels.flatten())
