"""BatchNorm with the reference code's encoder statistics: one batch per node slot."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from egnn.collectives import all_reduce_sum, world
from egnn.errors import ConfigError


def _slot_view(x: torch.Tensor, slots: int):
    """``x (B*S, C[, H, W])`` as a ``(B, S, C, P)`` view without copying (channels-last or contiguous), and the
    function that views a tensor of that layout back as ``x``'s shape; None when ``x`` has another layout."""
    n, c = x.shape[0], x.shape[1]
    b = n // slots
    if x.dim() == 2 and x.is_contiguous():
        return x.view(b, slots, c, 1), lambda t: t.reshape(n, c)
    if x.dim() == 4:
        h, w = x.shape[2:]
        if x.is_contiguous():
            return x.view(b, slots, c, h * w), lambda t: t.view(n, c, h, w)
        if x.is_contiguous(memory_format=torch.channels_last):
            view = x.permute(0, 2, 3, 1).view(b, slots, h * w, c).permute(0, 1, 3, 2)
            return view, lambda t: t.permute(0, 1, 3, 2).reshape(n, h, w, c).permute(0, 3, 1, 2)
    return None


class _SlotNorm(torch.autograd.Function):
    """Training-mode BatchNorm with statistics per (slot, channel) of ``x4 (B, S, C, P)``: two-pass statistics and
    an affine pass forward; backward two passes, with the per-(slot, channel) coefficients of the BatchNorm
    gradient (gamma and beta are shared by the slots).

    Every reduction runs over the pixel axis first, then over episodes: on the CPU that is several times faster
    than one reduction over ``(0, 3)``, whose order is slow (``var_mean`` there cost more than the rest of the
    layer). The centred input is kept for the backward pass in place of the input (the same memory)."""

    @staticmethod
    def forward(ctx, x4, gamma, beta, eps):
        n = x4.shape[0] * x4.shape[3]
        mean = x4.sum(3, keepdim=True).sum(0, keepdim=True) / n  # (1, S, C, 1)
        centred = x4 - mean
        var = torch.linalg.vector_norm(centred, dim=3, keepdim=True).square_().sum(0, keepdim=True) / n
        rstd = torch.rsqrt(var + eps)
        out = torch.addcmul(beta.view(1, 1, -1, 1), centred, gamma.view(1, 1, -1, 1) * rstd)
        ctx.save_for_backward(centred, gamma, rstd)
        return out, mean, var

    @staticmethod
    def backward(ctx, dout, _dmean, _dvar):
        centred, gamma, rstd = ctx.saved_tensors
        n = centred.shape[0] * centred.shape[3]
        sum_dy = dout.sum(3, keepdim=True).sum(0, keepdim=True)  # (1, S, C, 1)
        sum_dy_xhat = (dout * centred).sum(3, keepdim=True).sum(0, keepdim=True) * rstd
        g = gamma.view(1, 1, -1, 1) * rstd
        b = -g * rstd * sum_dy_xhat / n
        dx = torch.addcmul(-g * sum_dy / n, dout, g).addcmul_(centred, b)  # g*dy + b*(x - mean) - g*mean(dy)
        return dx, sum_dy_xhat.sum((0, 1, 3)), sum_dy.sum((0, 1, 3)), None


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
    Contiguous and channels-last float inputs take a copy-free path (a hand-written forward and backward over a
    ``(B, S, C, H*W)`` view).

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
        ranks = world()[1]
        slots = self.slots if x.shape[0] % max(self.slots, 1) == 0 else 1
        if not self.training or (slots == 1 and ranks == 1):
            return super().forward(x)
        c = x.shape[1]
        view = _slot_view(x, slots) if ranks == 1 and self.affine and x.dtype in (torch.float32, torch.float64) else None
        if view is not None:  # the fast path: no copies of x, reductions in a fast order
            x4, back = view
            out4, mean, var = _SlotNorm.apply(x4, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)
            if self.track_running_stats:
                n = x4.shape[0] * x4.shape[3]
                self._update_running(mean.detach().view(slots, c), var.detach().view(slots, c) * n / max(n - 1, 1))
            return back(out4)
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


def batch_norms(norm: str) -> tuple[type[_BatchNorm], type[_BatchNorm]]:
    """The (2-D, 1-D) BatchNorm classes of a backbone for ``norm``: ``slot`` (per node slot, the reference's
    statistics) or ``batch`` (plain BatchNorm over the whole batch)."""
    if norm == "slot":
        return SlotBatchNorm, SlotBatchNorm
    if norm == "batch":
        return nn.BatchNorm2d, nn.BatchNorm1d
    raise ConfigError(f"encoder-norm must be slot or batch, got '{norm}'")


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
