"""The Omniglot embedding of Garcia & Bruna's node-labeling GNN (ICLR 2018), for like-for-like Omniglot rows."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from egnn.backbones import register_backbone
from egnn.errors import ConfigError
from egnn.nn.slot_norm import batch_norms


class GarciaOmniglot(nn.Module):
    r"""Four 3x3 convolutions of 64 filters (no bias) with BatchNorm and LeakyReLU(0.1); the first two padded
    and followed by 2x2 max-pooling, the last two unpadded (28 -> 14 -> 7 -> 5 -> 3); then a linear layer (no bias)
    to ``out_features`` (64 in their Omniglot runs) with BatchNorm and LeakyReLU(0.01).

    This is the embedding behind the Omniglot numbers of Garcia & Bruna (github vgsatorras/few-shot-gnn,
    ``EmbeddingOmniglot``), which EGNN's Omniglot comparison quotes; pooling precedes the activation, as there.
    ``norm="slot"`` takes training statistics per node slot (their trainer, like EGNN's, encodes one node
    slot of the meta-batch at a time).

    Shapes:
        input ``(B, C, H, W)`` float, output ``(B, out_features)``.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, width: int = 64, out_features: int = 64,
                 norm: str = "slot") -> None:
        super().__init__()
        bn2d, bn1d = batch_norms(norm)
        self.convs = nn.ModuleList([nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1 if i < 2 else 0,
                                              bias=False) for i in range(4)])
        self.norms = nn.ModuleList([bn2d(width) for _ in range(4)])
        s = image_size // 2 // 2 - 4
        if s < 1:
            raise ConfigError(f"{image_size}x{image_size} images are too small for conv4-garcia: pass --image-size 28")
        self.fc = nn.Linear(width * s * s, out_features, bias=False)
        self.fc_norm = bn1d(out_features)
        self.out_features = out_features
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x))
            x = F.leaky_relu(F.max_pool2d(x, 2) if i < 2 else x, 0.1)
        return F.leaky_relu(self.fc_norm(self.fc(x.flatten(1))), 0.01)


@register_backbone
def conv4_garcia(in_channels: int = 1, image_size: int = 28, out_features: int = 64, norm: str = "slot") -> GarciaOmniglot:
    """Garcia & Bruna's Omniglot embedding (``--backbone conv4-garcia --embedding 64``)."""
    return GarciaOmniglot(in_channels, image_size, out_features=out_features or 64, norm=norm)
