"""Stage 1 of Meta-Transfer Learning: a backbone pretrained as a plain classifier over every training class.

It runs on the one :class:`~egnn.trainer.Trainer` as the ``classifier`` method
(:class:`~egnn.methods.PretrainClassifier`: single-image batches, a linear head, SGD with Nesterov momentum,
the learning rate divided by 10 at 50% and 75% of the iterations), so it has the run lock, resume, devices,
mixed precision and data-parallel training of every other run. Model selection: few-shot accuracy on validation
episodes with nearest prototypes of the backbone's features. ``tasks_per_batch`` counts images here.
"""
from __future__ import annotations

from typing import Any

from egnn.config import Config, make_config
from egnn.trainer import Trainer

#: the MTL paper's pretraining recipe; the Python API and ``egnn pretrain`` start from the same values
PRETRAIN_DEFAULTS: dict[str, Any] = {"model": "classifier", "backbone": "resnet12", "lr": 0.1, "weight_decay": 5e-4,
                                     "iterations": 2000, "val_every": 500, "tasks_per_batch": 128,
                                     "transductive": False, "query_max": 0, "out": "runs/pretrain"}


def pretrain_config(base: dict[str, Any] | None = None, **overrides: Any) -> Config:
    """A pretraining config: :data:`PRETRAIN_DEFAULTS`, then ``base`` (e.g. a YAML file's keys), then overrides."""
    return make_config({**PRETRAIN_DEFAULTS, **(base or {})}, **overrides)


def pretrain(cfg: Config, resume: bool = False, progress: bool = True,
             provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain ``cfg.backbone`` (``cfg.model`` must be ``classifier``: see :func:`pretrain_config`), then test
    its best checkpoint's features by nearest prototypes; ``best.pt`` / ``last.pt`` / ``results.json`` in
    ``cfg.out``."""
    trainer = Trainer(cfg)
    trainer.fit(resume=resume, progress=progress and trainer.rank == 0)
    tested = trainer.test(provenance=provenance) if trainer.rank == 0 else []
    return {"best_val_acc": trainer.best_val, "iterations": trainer.iteration, "train_seconds": trainer.train_seconds,
            "checkpoint": str(trainer.out / "best.pt"), "test": tested}
