"""Backbone registry, timm style: ``create_backbone("conv4", in_channels=1, image_size=28)``."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from egnn.errors import ConfigError

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    BACKBONES[fn.__name__.replace("_", "-")] = fn
    return fn


def create_backbone(name: str, **kwargs) -> nn.Module:
    """Build a backbone by name. Every backbone exposes ``out_features``."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}': choose one of {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)


def backbone_from_config(cfg, in_channels: int, image_size: int, out_features: int) -> nn.Module:
    """The backbone ``cfg.backbone`` with the options of ``cfg`` that it takes (widths, dropout, Conv-4's norm and
    padding): see :meth:`egnn.config.Config.backbone_options`."""
    if cfg.backbone not in BACKBONES:
        return create_backbone(cfg.backbone)  # the unknown-backbone error
    return create_backbone(cfg.backbone, in_channels=in_channels, image_size=image_size, out_features=out_features,
                           **cfg.backbone_options(BACKBONES[cfg.backbone]))


from egnn.backbones import conv4, garcia, resnet12  # noqa: E402,F401  (registers)
