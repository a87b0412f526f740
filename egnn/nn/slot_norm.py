"""BatchNorm with the reference code's encoder statistics: one batch per node slot."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


class SlotBatchNorm(_BatchNorm):
    r"""BatchNorm whose training statistics are taken per *node slot* of an episode batch.

    The reference EGNN code encodes a meta-batch of ``B`` episodes one node slot at a time (slot ``k`` = the
    ``k``-th node of every episode), so each BatchNorm normalises slot ``k``'s ``B`` images with their own
    mean and variance and updates its running statistics once per slot. With ``slots = S`` set (see
    :func:`node_slots`), this layer computes exactly that for the whole ``(B * S, C, ...)`` batch at once, laid
    out episode-major (row ``b * S + k``):

    .. math::
        \mu_{k} = \operatorname{mean}_{b, \text{space}} x_{b k}, \qquad
        y_{bk} = \gamma \frac{x_{bk} - \mu_k}{\sqrt{\sigma^2_k + \epsilon}} + \beta,

    and the running statistics take the ``S`` sequential momentum updates in closed form,
    :math:`r \leftarrow (1 - m)^S r + \sum_k m (1 - m)^{S - 1 - k} \mu_k` (unbiased variance likewise).
    Statistics are computed in float32 (or float64 for float64 inputs), also under autocast; across ``torchrun`` ranks they are all-reduced, so
    data-parallel training normalises exactly as one process with the whole meta-batch. With ``slots = 1``, in
    eval mode, or for inputs that do not split into slots, it is a plain BatchNorm (same state-dict keys).

    Shapes:
        ``(B * S, C)`` or ``(B * S, C, H, W)`` -> same.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.slots = 1

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4, 5):
            raise ValueError(f"expected 2-D to 5-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from egnn.distributed import all_reduce_sum, world

        ranks = world()[1]
        slots = self.slots if x.shape[0] % max(self.slots, 1) == 0 else 1
        if not self.training or (slots == 1 and ranks == 1):
            return super().forward(x)
        c = x.shape[1]
        g = x.to(torch.promote_types(x.dtype, torch.float32)).reshape(-1, slots, c, *x.shape[2:])  # (B, S, C, ...)
        dims = [0, *range(3, g.dim())]  # episodes and space
        shape = (1, slots, c) + (1,) * (g.dim() - 3)
        n = g.numel() // (slots * c)  # rows per slot statistic on this rank
        total = g.sum(dims)  # (S, C)
        if ranks > 1:
            count = all_reduce_sum(g.new_tensor([float(n)])).detach()
            total = all_reduce_sum(total)
        else:
            count = g.new_tensor([float(n)])
        mean = total / count
        centred = g - mean.view(shape)
        sq = centred.square().sum(dims)
        var = (all_reduce_sum(sq) if ranks > 1 else sq) / count  # (S, C), biased
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            affine = (1, 1, c, *[1] * (g.dim() - 3))
            out = out * self.weight.to(g.dtype).view(affine) + self.bias.to(g.dtype).view(affine)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach() * count / (count - 1).clamp_min(1))
        return out.reshape(x.shape).to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """``S`` sequential BatchNorm updates of the running statistics, one per slot, in closed form."""
        s = mean.shape[0]
        if self.momentum is None:  # cumulative average over every batch seen
            seen = self.num_batches_tracked.float()
            keep, w = seen / (seen + s), torch.full((s,), 1.0, device=mean.device, dtype=mean.dtype) / (seen + s)
        else:
            m = self.momentum
            keep = (1 - m) ** s
            w = m * (1 - m) ** torch.arange(s - 1, -1, -1, device=mean.device, dtype=torch.float64)
            w = w.to(mean.dtype)
        self.running_mean.mul_(keep).add_((w @ mean).to(self.running_mean.dtype))
        self.running_var.mul_(keep).add_((w @ var).to(self.running_var.dtype))
        self.num_batches_tracked.add_(s)


@contextmanager
def node_slots(module: nn.Module, slots: int):
    """Within the block, every :class:`SlotBatchNorm` of ``module`` takes its statistics per node slot, for
    batches of episodes with ``slots`` nodes each laid out episode-major."""
    layers = [m for m in module.modules() if isinstance(m, SlotBatchNorm)]
    saved = [m.slots for m in layers]
    for m in layers:
        m.slots = max(int(slots), 1)
    try:
        yield
    finally:
        for m, s in zip(layers, saved):
            m.slots = s
