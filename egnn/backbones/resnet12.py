"""ResNet-12 (as in MTL, Sun et al., CVPR 2019, and MetaOptNet) and MTL's Scaling-and-Shifting (SS) wrapper."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from egnn.backbones import register_backbone


class Block(nn.Module):
    """Three 3x3 conv-BN-LeakyReLU(0.1) layers with a 1x1 conv-BN shortcut, then 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        convs, c = [], in_channels
        for _ in range(3):
            convs += [nn.Conv2d(c, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)]
            c = out_channels
        self.conv1, self.bn1, self.conv2, self.bn2, self.conv3, self.bn3 = convs
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        out = F.leaky_relu(self.bn2(self.conv2(out)), 0.1)
        out = self.bn3(self.conv3(out))
        return F.max_pool2d(F.leaky_relu(out + self.shortcut(x), 0.1), 2)


class ResNet12(nn.Module):
    r"""Four residual :class:`Block` s (widths 64-128-256-512 in the MTL paper; narrower for a CPU), global
    average pooling, then a linear map with BatchNorm to ``out_features`` (skipped when ``out_features == 0``,
    leaving the pooled ``widths[-1]``-d features, MTL's own embedding).

    Shapes:
        input ``(B, C, H, W)`` float, output ``(B, out_features or widths[-1])``.
    """

    def __init__(self, in_channels: int = 3, widths=(64, 128, 256, 512), out_features: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        blocks, c = [], in_channels
        for w in widths:
            blocks.append(Block(c, w))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = (nn.Sequential(nn.Linear(c, out_features), nn.BatchNorm1d(out_features)) if out_features
                     else nn.Identity())
        self.out_features = out_features or c
        self.reset_parameters()
        self.blocks.to(memory_format=torch.channels_last)  # oneDNN convolutions are faster channels-last on CPU

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.Linear)):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x.contiguous(memory_format=torch.channels_last))
        return self.head(self.dropout(x.mean((2, 3))))  # (B, C) after global average pooling


class SSConv2d(nn.Module):
    r"""A frozen convolution with MTL's learnable Scaling and Shifting:
    :math:`y = (W \odot \Phi_1) * x + (b + \Phi_2)`, with :math:`\Phi_1` (one scale per output channel)
    initialised to 1 and :math:`\Phi_2` to 0, so at initialisation the layer is exactly the pretrained one.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        for p in self.conv.parameters():
            p.requires_grad_(False)
        self.scale = nn.Parameter(torch.ones(conv.out_channels))
        self.shift = nn.Parameter(torch.zeros(conv.out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        bias = self.shift if c.bias is None else c.bias + self.shift
        return F.conv2d(x, c.weight * self.scale.view(-1, 1, 1, 1), bias, c.stride, c.padding, c.dilation, c.groups)


def add_scaling_shifting(model: nn.Module) -> nn.Module:
    """Freeze every parameter of ``model`` and give every ``Conv2d`` SS parameters, which alone stay trainable.
    BatchNorm keeps normalising with batch statistics in training mode; its affine parameters stay frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, child in model.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(model, name, SSConv2d(child))
        else:
            add_scaling_shifting(child)
    return model


@register_backbone
def resnet12(in_channels: int = 3, image_size: int = 84, out_features: int = 128, dropout: float = 0.0,
             widths=(64, 128, 256, 512)) -> ResNet12:
    return ResNet12(in_channels, widths, out_features, dropout)
