"""Data-parallel meta-training with ``torchrun`` and DistributedDataParallel (gloo on CPU, nccl on CUDA).

The tasks of a meta-batch are split evenly across ranks. Two things make the result equal to one process
training on the whole meta-batch:

* BatchNorm must see the whole meta-batch: :class:`GlobalBatchNorm` all-reduces its statistics, with
  gradients (``torch.nn.SyncBatchNorm`` is GPU-only);
* every rank's loss normalises by its own counts, which are exactly ``1 / world`` of the global counts
  (every episode of a batch has the same shape), so DDP's gradient average is the global gradient.

    torchrun --nproc_per_node 2 --no-python egnn train --config configs/omniglot_5w1s.yaml
"""
from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from egnn.collectives import all_reduce_sum, world
from egnn.nn.slot_norm import SlotBatchNorm


def init_from_env(device: str = "auto") -> tuple[int, int]:
    """Join the process group described by torchrun's environment, if there is one: NCCL when this run computes
    on CUDA (each rank on ``cuda:$LOCAL_RANK``), gloo on the CPU; ``$EGNN_DIST_BACKEND`` overrides (gloo also
    reduces CUDA tensors, which lets 2 processes share one GPU in a test)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group(os.environ.get("EGNN_DIST_BACKEND") or ("nccl" if cuda else "gloo"))
        # Leave the group while the interpreter is still whole: a rank that is done first (all but rank 0 skip the
        # test) and exits with the group alive can abort (SIGABRT) when gloo's threads free their tensors during
        # interpreter finalisation (pytorch/pytorch#179291); it happened once in CI.
        atexit.register(leave)
    return world()


def leave() -> None:
    """Destroy the process group this process joined, if it is still there (idempotent)."""
    if dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics cover every rank's rows (two all-reduces: mean, then centred variance).

    Same parameters, buffers and state-dict keys as the ``BatchNorm1d/2d`` it replaces; outside a process
    group, or in eval mode, it is exactly that BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, size = world()
        if not self.training or size == 1:
            return super().forward(x)
        dtype = x.dtype  # statistics in float32 (float64 stays), also under autocast (lerp_ needs one dtype)
        x = x.to(torch.promote_types(dtype, torch.float32))
        dims = [0, *range(2, x.dim())]  # every axis but the channels
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])])
        total = all_reduce_sum(local)
        n = total[-1].detach()
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce_sum(centred.square().sum(dims)) / n
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
            self.running_var.lerp_((var.detach() * n / (n - 1).clamp_min(1)).to(self.running_var.dtype), m)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        out = out * self.weight.to(x.dtype).view(shape) + self.bias.to(x.dtype).view(shape) if self.affine else out
        return out.to(dtype)


def globalize_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm in ``module`` by a :class:`GlobalBatchNorm` holding the same state."""
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, (GlobalBatchNorm, SlotBatchNorm)):  # those sync
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats).to(next(child.buffers()).device)
            if child.affine:
                new = new.to(child.weight.dtype)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            globalize_batchnorm(child)
    return module


def average(value: float | torch.Tensor) -> float:
    """Mean of a scalar over ranks (for logs), reduced on the backend's device (NCCL reduces CUDA tensors only)."""
    _, size = world()
    if size == 1:
        return float(value)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.as_tensor(value, dtype=torch.float64).reshape(1).to(device)
    dist.all_reduce(t)
    return float(t) / size


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


__all__ = ["GlobalBatchNorm", "all_reduce_sum", "average", "barrier", "globalize_batchnorm", "init_from_env", "leave", "world"]
