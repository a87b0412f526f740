"""Methods from configs and from checkpoints: build a method, rebuild a trained one. Loading a checkpoint never
passes through the trainer; the trainer, ``egnn eval``, ``egnn predict`` and the classifier object all load here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from egnn.backbones import backbone_from_config
from egnn.checkpoint import load_checkpoint, load_model_state
from egnn.config import Config, make_config
from egnn.devices import resolve_device
from egnn.errors import CheckpointError, ConfigError, UserError
from egnn.methods import FewShotMethod, method_class


def build_method(cfg: Config, in_channels: int, image_size: int) -> FewShotMethod:
    if cfg.backbone_checkpoint:
        backbone, stats = load_backbone(cfg, in_channels, image_size)
        method = method_class(cfg.model).from_config(backbone, cfg)
        if stats is not None:
            method.set_normalization(*stats)
        return method
    kind = method_class(cfg.model)
    return kind.from_config(backbone_from_config(cfg, in_channels, image_size, kind.embedding_features(cfg)), cfg)


def load_backbone(cfg: Config, in_channels: int, image_size: int):
    """The backbone of ``cfg.backbone_checkpoint`` (an ``egnn pretrain`` run, or a run built on one, e.g. MTL's
    meta-transfer), frozen, with Scaling-and-Shifting parameters (trainable iff ``cfg.train_ss``); and the input
    statistics it was trained with."""
    from egnn.backbones.resnet12 import add_scaling_shifting

    path = cfg.backbone_checkpoint
    blob = load_checkpoint(path)
    try:
        saved = make_config(saved_config(blob["config"]))
        if (blob["in_channels"], blob["image_size"]) != (in_channels, image_size):
            raise ConfigError(f"backbone checkpoint {path} expects {blob['in_channels']}x{blob['image_size']}px "
                              f"images, this dataset has {in_channels}x{image_size}: pass --image-size "
                              f"{blob['image_size']} or another checkpoint")
        if blob.get("backbone_arch"):  # a run built on a pretrained backbone records the pretraining run's
            arch = make_config(blob["backbone_arch"])
        else:  # a pretraining run, or a run saved before runs recorded it: follow the chain
            arch = saved
            while arch.backbone_checkpoint:
                arch = make_config(saved_config(load_checkpoint(arch.backbone_checkpoint)["config"]))
        backbone = backbone_from_config(arch, in_channels, image_size, 0)
        backbone.arch = {"backbone": arch.backbone, "widths": arch.widths}  # saved with runs built on it
    except KeyError as exc:
        raise CheckpointError(f"{path} is not a backbone checkpoint ({exc}): pass the best.pt of egnn pretrain") from None
    state = {k[len("backbone."):]: v for k, v in blob["model"].items() if k.startswith("backbone.")}
    has_ss = any(k.endswith(".scale") for k in state)
    if has_ss:
        add_scaling_shifting(backbone)
    try:
        backbone.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"backbone checkpoint {path} does not fit {arch.backbone} with widths "
                              f"'{arch.widths}' ({str(exc).splitlines()[0]})") from None
    if not has_ss:
        add_scaling_shifting(backbone)
    for name, p in backbone.named_parameters():
        p.requires_grad_(cfg.train_ss and (name.endswith(".scale") or name.endswith(".shift")))
    mean, std = blob["model"].get("input_mean"), blob["model"].get("input_std")
    return backbone, ((mean, std) if mean is not None and mean.numel() else None)


def saved_config(values: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config; runs saved before normalisation, augmentation and random query counts existed
    used none of them, and runs saved before the fidelity options existed used the layers egnn had then."""
    values = {"normalize": "off", "augment": "none", "query_max": 0, **values}
    if "graph_slope" not in values:  # written before egnn matched the reference layer for layer
        values = {"encoder_dropout": values.get("dropout", 0.0), "encoder_norm": "batch", "conv4_padding": "same",
                  "graph_slope": 0.2, **values}
    if isinstance(values["normalize"], bool):  # briefly a bool
        values["normalize"] = "on" if values["normalize"] else "off"
    return values


def load_trained(checkpoint: str | Path, device: str = "cpu") -> tuple[FewShotMethod, Config]:
    """Rebuild a trained method from a checkpoint written by :class:`Trainer`."""
    method, cfg, _ = load_trained_with_inputs(checkpoint, device)
    return method, cfg


def load_trained_with_inputs(checkpoint: str | Path, device: str = "cpu") -> tuple[FewShotMethod, Config, tuple[int, int]]:
    """:func:`load_trained`, and the ``(channels, side)`` of the images the model was trained on."""
    blob = load_checkpoint(checkpoint)
    try:
        cfg = make_config(saved_config(blob["config"]))
        inputs = int(blob["in_channels"]), int(blob.get("image_size") or cfg.image_size or 28)
        method = build_method(cfg, *inputs)
    except (KeyError, TypeError) as exc:
        raise UserError(f"checkpoint {checkpoint} lacks its config ({exc}): pass a checkpoint written by egnn train") from None
    load_model_state(method, blob["model"], checkpoint)
    return method.to(resolve_device(device)).eval(), cfg, inputs


def use_sparse_graphs(method: FewShotMethod, knn: int, checkpoint: str | Path, model: str) -> None:
    """``--knn`` on a loaded checkpoint (``egnn eval``, ``egnn predict``): transductive EGNN on kNN graphs of
    ``knn`` neighbours, 0 for dense; a one-line error for a model without sparse graphs."""
    if not method.sparse_graphs:
        raise UserError(f"--knn needs an EGNN checkpoint; {checkpoint} holds a {model} model")
    method.knn = make_config(knn=knn).knn  # validated as a config value
