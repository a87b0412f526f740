"""Procedural glyphs: an embedded few-shot dataset that needs no download.

Each class is a random glyph of 2-4 pen strokes (quadratic Bezier curves). An instance of a class is that
glyph drawn again with its control points jittered, a random affine distortion (rotation, scale, shear,
shift) and a random pen width, like a new drawer writing the same character. Classes are generated from
disjoint seeds per split, so test classes are never seen in training: a real few-shot task, Omniglot-like
in shape (1x28x28, 20 images per class).
"""
from __future__ import annotations

import math

import torch

from egnn.data.base import FewShotSplit
from egnn.data.images import decode_ink
from egnn.data.paths import atomic_save, cache_dir
from egnn.data.registry import DatasetInfo, register_dataset

SPLIT_CLASSES = {"train": 1000, "val": 100, "test": 400}
IMAGES_PER_CLASS = 20
SEGMENTS_PER_STROKE = 8
MAX_STROKES = 4
VERSION = 1  # bump when the generator changes, so caches are rebuilt


def _class_strokes(gen: torch.Generator, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Control points ``(classes, MAX_STROKES, 3, 2)`` and a stroke mask ``(classes, MAX_STROKES)``."""
    ctrl = 0.15 + 0.7 * torch.rand(num_classes, MAX_STROKES, 3, 2, generator=gen)
    strokes = torch.randint(2, MAX_STROKES + 1, (num_classes, 1), generator=gen)
    return ctrl, torch.arange(MAX_STROKES) < strokes


def _render(ctrl: torch.Tensor, active: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """Rasterise strokes by distance to their polyline: ``(n, S, 3, 2)`` -> ``(n, size, size)`` in [0, 1]."""
    t = torch.linspace(0, 1, SEGMENTS_PER_STROKE + 1)[:, None]  # (T, 1)
    p0, p1, p2 = ctrl.unbind(-2)  # each (n, S, 2)
    curve = ((1 - t) ** 2) * p0[..., None, :] + 2 * (1 - t) * t * p1[..., None, :] + (t ** 2) * p2[..., None, :]
    a, b = curve[..., :-1, :].flatten(1, 2), curve[..., 1:, :].flatten(1, 2)  # (n, S*T, 2) segment ends
    seg_active = active.repeat_interleave(SEGMENTS_PER_STROKE, 1)  # (n, S*T)
    axis = (torch.arange(size) + 0.5) / size
    pix = torch.stack(torch.meshgrid(axis, axis, indexing="ij")[::-1], -1).view(1, -1, 1, 2)  # (1, P, 1, 2) as (x, y)
    ab = (b - a)[:, None]  # (n, 1, S*T, 2)
    ap = pix - a[:, None]  # (n, P, S*T, 2)
    h = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-9)).clamp(0, 1)
    dist = (ap - h[..., None] * ab).norm(dim=-1)  # (n, P, S*T)
    dist = dist.masked_fill(~seg_active[:, None], math.inf).amin(-1)  # (n, P)
    ink = ((width[:, None] - dist) / (0.6 / size) + 0.5).clamp(0, 1)  # anti-aliased pen edge
    return ink.view(-1, size, size)


def _instances(gen: torch.Generator, ctrl: torch.Tensor, active: torch.Tensor, size: int) -> torch.Tensor:
    """Distorted instances of each class: ``(classes, IMAGES_PER_CLASS, size, size)`` uint8."""
    c, k = ctrl.shape[0], IMAGES_PER_CLASS
    pts = ctrl[:, None].expand(c, k, *ctrl.shape[1:]).reshape(c * k, *ctrl.shape[1:])
    pts = pts + 0.035 * torch.randn(pts.shape, generator=gen)  # a drawer's own hand
    angle = (torch.rand(c * k, generator=gen) - 0.5) * math.radians(30)
    scale = 0.85 + 0.3 * torch.rand(c * k, 2, generator=gen)
    shear = (torch.rand(c * k, generator=gen) - 0.5) * 0.4
    shift = (torch.rand(c * k, 2, generator=gen) - 0.5) * 0.12
    cos, sin = angle.cos(), angle.sin()
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    shr = torch.eye(2).repeat(c * k, 1, 1)
    shr[:, 0, 1] = shear
    affine = rot @ shr * scale[:, None, :]
    centred = pts.view(c * k, -1, 2) - 0.5
    pts = (centred @ affine.transpose(1, 2) + 0.5 + shift[:, None]).view_as(pts)
    width = 0.03 + 0.025 * torch.rand(c * k, generator=gen)
    act = active[:, None].expand(c, k, MAX_STROKES).reshape(c * k, MAX_STROKES)
    out = torch.cat([_render(p, a, w, size) for p, a, w in
                     zip(pts.split(256), act.split(256), width.split(256))])  # chunks bound memory
    return (out * 255).round().to(torch.uint8).view(c, k, size, size)


def make_glyphs(num_classes: int, seed: int, image_size: int = 28) -> torch.Tensor:
    """``(num_classes, 20, 1, size, size)`` uint8 glyph images, fully determined by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    ctrl, active = _class_strokes(gen, num_classes)
    return _instances(gen, ctrl, active, image_size).unsqueeze(2)


def load_glyphs(root=None, image_size: int = 28) -> dict[str, FewShotSplit]:
    """Train / val / test splits of procedural glyphs, built once and cached. ``root`` is unused."""
    cache = cache_dir() / f"glyphs_v{VERSION}_{image_size}.pt"
    try:
        blob = torch.load(cache, weights_only=True)
    except Exception:
        # distinct seeds per split: classes of one split never occur in another
        blob = {split: make_glyphs(n, seed=1000 + i, image_size=image_size)
                for i, (split, n) in enumerate(SPLIT_CLASSES.items())}
        atomic_save(blob, cache)
    splits = {}
    for split, imgs in blob.items():
        n = imgs.shape[0]
        splits[split] = FewShotSplit(imgs.flatten(0, 1).contiguous(), torch.arange(n).repeat_interleave(IMAGES_PER_CLASS),
                                     [f"glyph{split}{c:04d}" for c in range(n)], name=f"glyphs/{split}")
    return splits


register_dataset(DatasetInfo(
    "glyphs", load_glyphs, native_size=28, channels=1, natural=False, location=None, decode=decode_ink, embedded=True,
    description="procedural glyphs, embedded (no download); 1000/100/400 classes x 20 images, 1x28x28"))
