"""In-memory few-shot splits: every image of a split as one uint8 tensor plus a class index."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from egnn.errors import DataError


@dataclass
class FewShotSplit:
    """All images of one split (train / val / test) held in memory.

    Attributes:
        images: ``(num_images, C, H, W)`` uint8, grouped by class.
        labels: ``(num_images,)`` int64 class index in ``[0, num_classes)``, non-decreasing.
        class_names: one name per class, e.g. ``"Greek/character03@rot90"``.
        name: dataset and split, used in error messages.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str = "split"

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"{self.name}: expected uint8 images of shape (N, C, H, W), got "
                            f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.name}: {self.labels.numel()} labels for {self.images.shape[0]} images")
        if self.labels.numel() and (self.labels.diff() < 0).any():
            raise DataError(f"{self.name}: images must be grouped by class (labels non-decreasing)")
        counts = torch.bincount(self.labels, minlength=len(self.class_names))
        if counts.numel() != len(self.class_names):
            raise DataError(f"{self.name}: labels exceed the {len(self.class_names)} class names")
        self.class_counts = counts  # (num_classes,)
        self.class_offsets = torch.cumsum(counts, 0) - counts  # first image of each class

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the split's images in ``[0, 1]`` units (computed once)."""
        if not hasattr(self, "_stats"):
            from egnn.data.transforms import channel_stats

            self._stats = channel_stats(self.images)
        return self._stats

    def on(self, device) -> "FewShotSplit":
        """The same split with its images on ``device`` (labels and class tables stay on the CPU, where episodes
        are drawn); its channel statistics are the CPU split's, so normalisation is the same bit for bit."""
        moved = FewShotSplit(self.images.to(device), self.labels, self.class_names, self.name)
        moved._stats = self.channel_stats()
        return moved

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def check_episode(self, way: int, shot: int, query: int) -> None:
        """Raise a :class:`DataError` naming the problem if this split cannot hold such episodes."""
        if way > self.num_classes:
            raise DataError(f"{self.name} has {self.num_classes} classes, fewer than way={way}: "
                            f"lower --way or use a dataset with more classes")
        need = shot + query
        small = (self.class_counts < need).nonzero().flatten()
        if small.numel():
            worst = int(small[0])
            raise DataError(
                f"{self.name}: class '{self.class_names[worst]}' has {int(self.class_counts[worst])} images, "
                f"fewer than shot + query = {need}: lower --shot or --query, or remove that class")
