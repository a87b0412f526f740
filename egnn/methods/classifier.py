"""Classification pretraining (stage 1 of Meta-Transfer Learning, Sun et al., CVPR 2019) as a method.

Trained on batches of single images over all training classes, with a linear head and cross-entropy; scored
on few-shot episodes by nearest prototypes of its features (ProtoNet without meta-training, the usual proxy for
transfer), which is what validation selects the best checkpoint by. Its ``best.pt`` is the
``--backbone-checkpoint`` of MTL's meta-transfer and of EGNN on the MTL backbone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.data import Batch

from egnn.data import FewShotSplit
from egnn.devices import to_device_of
from egnn.errors import ConfigError
from egnn.methods.base import FewShotMethod, MethodOutput, prototype_logits


@dataclass
class LabeledImages:
    """A batch of ``(T, C, H, W)`` uint8 images ``x`` with class indices ``y (T,)`` over the training split."""

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device) -> "LabeledImages":
        return self.apply(lambda t: t.to(device))

    def apply(self, fn) -> "LabeledImages":
        return LabeledImages(fn(self.x), fn(self.y))


class ImageBatchSampler:
    """Batches of images drawn uniformly, with replacement, from a split: batch ``(first, count)`` is a pure
    function of ``(seed, first)``, so a run resumes bitwise and data-parallel ranks draw disjoint streams."""

    def __init__(self, split: FewShotSplit, seed: int = 0) -> None:
        self.split, self.seed = split, seed

    def batch(self, first: int, count: int) -> LabeledImages:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + first)
        idx = torch.randint(0, self.split.labels.numel(), (count,), generator=gen)
        # device-resident images: the indices go to them (drawn on the CPU, so the same batches everywhere)
        return LabeledImages(self.split.images[to_device_of(idx, self.split.images)], self.split.labels[idx])


class PretrainClassifier(FewShotMethod):
    """A backbone with a linear head over the training classes: ``(T, D) -> (T, classes)`` logits.

    The head is sized by :meth:`bind_training_split` (or by the checkpoint it is loaded from), so the method is
    built before the data's class count is known, like every other method.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.head: nn.Linear | None = None

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg) -> "PretrainClassifier":
        return cls(backbone)

    @classmethod
    def embedding_features(cls, cfg) -> int:
        return 0  # the backbone's own features, as the MTL paper pretrains them

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.knn or cfg.hard_tasks or cfg.label_ratio < 1:
            raise ConfigError("model classifier (pretraining) trains on single images: it takes no --knn, "
                              "--hard-tasks or --label-ratio")

    def _make_head(self, classes: int) -> None:
        self.head = nn.Linear(self.backbone.out_features, classes).to(self.backbone_device)

    def bind_training_split(self, split: FewShotSplit) -> None:
        if self.head is None:
            self._make_head(split.num_classes)

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        if self.head is None and prefix + "head.weight" in state:
            self._make_head(state[prefix + "head.weight"].shape[0])
        super()._load_from_state_dict(state, prefix, *args, **kwargs)

    def training_sampler(self, split: FewShotSplit, cfg, query: int) -> ImageBatchSampler:
        return ImageBatchSampler(split, cfg.seed)

    def collate_training(self, items: LabeledImages, transductive: bool) -> LabeledImages:
        return items

    def optimizer(self, params, cfg):
        """The MTL paper's pretraining optimiser: SGD with Nesterov momentum 0.9, the learning rate divided by 10
        at 50% and 75% of the run (of its iterations, or of its --max-minutes)."""
        from egnn.schedules import MultiStep

        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        return opt, MultiStep((0.5, 0.75), 0.1)

    def forward(self, batch: Batch | LabeledImages, transductive: bool = True) -> MethodOutput:
        if isinstance(batch, LabeledImages):  # training: one "episode" whose queries are the batch's images
            logits = self.head(self.backbone(self.normalize(batch.x)))
            return MethodOutput(logits=logits[None], query_labels=batch.y[None])
        v, dense = self.embed(batch)  # few-shot episodes: nearest prototypes of the features
        return MethodOutput(logits=prototype_logits(v, dense), query_labels=self.queries(dense.y, dense))

    def loss(self, out: MethodOutput) -> torch.Tensor:
        return F.cross_entropy(out.logits.flatten(0, 1), out.query_labels.flatten())
