"""Batched image transforms on uint8 tensors: per-dataset normalisation statistics and training-time
augmentation. Everything runs on whole ``(T, C, H, W)`` batches, never image by image, so sampling keeps
far ahead of the model (see ``scripts/bench_speed.py``).
"""
from __future__ import annotations

import torch

from egnn.devices import to_device_of

from egnn.data.registry import dataset_info

AUGMENTATIONS = ("auto", "none", "crop", "crop-flip")


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 ``images (N, C, H, W)``, in ``[0, 1]`` units."""
    c = images.shape[1]
    total, sq, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for start in range(0, images.shape[0], chunk):  # chunks: a float copy of all of miniImageNet is 3 GB
        x = images[start:start + chunk].to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)
        total += x.sum(1)
        sq += x.square().sum(1)
        n += x.shape[1]
    if n == 0:
        return torch.zeros(c), torch.ones(c)
    mean = total / n
    std = (sq / n - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float(), std.float().clamp_min(1e-3)  # a constant channel must not divide by zero


def resolve_augment(kind: str, dataset: str) -> str:
    """``auto`` → ``crop-flip`` for natural-image datasets (the reference code's random crop with padding and a
    horizontal flip), ``none`` for characters: Omniglot's classes already include rotations and the published
    Omniglot numbers use no augmentation."""
    if kind == "auto":
        return "crop-flip" if dataset_info(dataset).natural else "none"
    return kind


def resolve_normalize(kind: str, dataset: str) -> bool:
    """``auto`` → standardise natural images; leave glyphs and Omniglot in ``[0, 1]``. On binary characters,
    standardising moves the background away from the convolutions' zero padding, which cost accuracy in our
    short glyph runs; the published Omniglot models feed raw ``[0, 1]`` pixels."""
    return dataset_info(dataset).natural if kind == "auto" else kind == "on"


def crop_padding(image_size: int) -> int:
    """Padding of the random crop: 8 px at miniImageNet's 84 px (as the reference code), 4 px below 64 px."""
    return 8 if image_size >= 64 else 4


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to ``H x W`` at an independent random offset per image:
    two gathers (rows, then columns) over the whole batch."""
    t, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)  # (T, C, H + 2p, W + 2p)
    dy, dx = to_device_of(torch.randint(0, 2 * padding + 1, (2, t), generator=generator), images)  # (T,) each
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (T, 1, H, 1)
    out = padded.gather(2, rows.expand(t, c, h, w + 2 * padding))  # (T, C, H, W + 2p)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (T, 1, 1, W)
    return out.gather(3, cols.expand(t, c, h, w))  # (T, C, H, W)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    flip = to_device_of(torch.rand(images.shape[0], generator=generator) < 0.5, images)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Apply augmentation ``kind`` (``none``, ``crop`` or ``crop-flip``) to a uint8 batch."""
    if kind == "none":
        return images
    out = random_crop(images, crop_padding(images.shape[-1]), generator)
    return random_flip(out, generator) if kind == "crop-flip" else out
