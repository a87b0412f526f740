"""The two collectives egnn's layers need: this process's place in the group, and a differentiable sum over ranks.

Kept apart from :mod:`egnn.distributed` (process groups, DDP, BatchNorm swapping) so that layers such as
:class:`egnn.nn.SlotBatchNorm` can reduce over ranks without importing the training machinery.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks, differentiable (the gradient is summed over ranks too)."""
    return _AllReduceSum.apply(t)
