"""Small helpers shared by the graph layers."""
from __future__ import annotations

import torch
import torch.nn as nn


class TaskDropout(nn.Module):
    r"""Dropout of whole feature channels per graph: ``torch.nn.Dropout2d`` on the reference's
    ``(tasks, features, nodes, 1)`` / ``(tasks, features, nodes, nodes)`` layout, on egnn's rows.

    Row ``r`` belongs to graph ``group[r]``; every graph draws one keep-mask over the features and all its rows
    (nodes, or node pairs) share it, scaled by :math:`1 / (1 - p)`. Without ``group`` every row is its own graph
    (element-wise dropout). The identity in eval mode or with ``p = 0``.

    Shapes:
        rows ``(R, F)``, ``group (R,)`` long in ``[0, groups)`` -> ``(R, F)``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor, group: torch.Tensor | None = None, groups: int | None = None) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if group is None:
            return torch.nn.functional.dropout(x, self.p, True)
        keep = torch.empty(groups, x.shape[-1], device=x.device, dtype=x.dtype).bernoulli_(1.0 - self.p)
        return x * keep.div_(1.0 - self.p)[group]

    def extra_repr(self) -> str:
        return f"p={self.p}"


# The reference's graph MLPs use nn.LeakyReLU() (slope 0.01); only its Conv-4 encoder uses 0.2.
GRAPH_SLOPE = 0.01


def mlp(dims: list[int], dropout: float = 0.0, dropout_at: str = "every", slope: float = GRAPH_SLOPE) -> nn.Sequential:
    """Linear (no bias) -> BatchNorm -> LeakyReLU per step: the 1x1-conv blocks of the EGNN reference code.

    With ``dropout > 0`` a :class:`TaskDropout` follows every step (``dropout_at="every"``: the reference's edge
    network) or only the last (``"last"``: its node network).
    """
    layers: list[nn.Module] = []
    steps = len(dims) - 1
    for i in range(steps):
        layers += [nn.Linear(dims[i], dims[i + 1], bias=False), nn.BatchNorm1d(dims[i + 1]), nn.LeakyReLU(slope)]
        if dropout > 0 and (dropout_at == "every" or i == steps - 1):
            layers.append(TaskDropout(dropout))
    return nn.Sequential(*layers)


def uses_groups(module: nn.Module) -> bool:
    """Whether ``module`` holds an active :class:`TaskDropout` (training, ``p > 0``): only then do its rows need
    the index of their graph."""
    return any(isinstance(m, TaskDropout) and m.training and m.p > 0 for m in module.modules())


def full_mask(*shape: int, device=None) -> torch.Tensor:
    """An all-``True`` bool mask marked as such, so :func:`all_real` knows it without reading the device."""
    mask = torch.ones(shape, dtype=torch.bool, device=device)
    mask.is_full = True
    return mask


def all_real(mask: torch.Tensor) -> bool:
    """Whether every entry of ``mask`` holds: from the mark of :func:`full_mask` (equal-sized episodes: no host
    synchronisation), else read from the device."""
    known = getattr(mask, "is_full", None)
    return bool(mask.all()) if known is None else known


def row_groups(mask: torch.Tensor) -> torch.Tensor:
    """Graph index ``(R,)`` of each ``True`` entry of ``mask (B, ...)``, in ``mask``'s row-major order."""
    index = torch.arange(mask.shape[0], device=mask.device).view(-1, *[1] * (mask.dim() - 1))
    return index.expand_as(mask).reshape(-1) if all_real(mask) else index.expand_as(mask)[mask]


def masked_apply(module: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply a row-wise ``module`` (e.g. an :func:`mlp`) to the entries of ``x (B, ..., F)`` where ``mask (B, ...)``
    holds, zeros elsewhere. BatchNorm then sees only real nodes or pairs, never padding; a :class:`TaskDropout`
    draws one mask per graph (index 0 of ``x``).
    """
    groups = row_groups(mask) if uses_groups(module) else None
    if all_real(mask):  # episodes of equal size: no padding, no gather
        return weighted_apply(module, x.reshape(-1, x.shape[-1]), None, groups, mask.shape[0]).view(*x.shape[:-1], -1)
    rows = weighted_apply(module, x[mask], None, groups, mask.shape[0])
    out = rows.new_zeros(*x.shape[:-1], rows.shape[-1])
    out[mask] = rows
    return out


def off_diagonal(node_mask: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` node mask -> ``(B, N, N)`` mask of pairs of distinct real nodes."""
    n = node_mask.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=node_mask.device)
    return node_mask[:, :, None] & node_mask[:, None, :] & ~eye


def row_normalize(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L1-normalise ``(B, N, N, C)`` over the neighbour axis, per channel."""
    return e / e.sum(2, keepdim=True).clamp_min(eps)


class _WeightedBNLeaky(torch.autograd.Function):
    r"""Fused training-mode BatchNorm (weighted rows) + LeakyReLU with a hand-written backward.

    With normalised row weights :math:`w_r` (:math:`\sum_r w_r = 1`), :math:`\mu = \sum_r w_r x_r`,
    :math:`\sigma^2 = \sum_r w_r x_r^2 - \mu^2`, :math:`\hat x = (x - \mu) / \sigma` and
    :math:`z = \gamma \hat x + \beta`: :math:`\partial x_r = \frac{\gamma}{\sigma}\big(\partial z_r - w_r
    (\sum_s \partial z_s + \hat x_r \sum_s \partial z_s \hat x_s)\big)`, which for equal weights is the usual
    BatchNorm gradient. :math:`\hat x` is never materialised: the forward pass is one affine map of ``x``
    per channel, the backward pass two, which saves the (rows x channels) passes that dominate at these sizes.
    """

    @staticmethod
    def forward(ctx, x, w, gamma, beta, eps, slope):
        mean = w @ x  # (C,)
        var = (w @ (x * x) - mean.square()).clamp_min_(0.0)  # one pass over x instead of centring it
        rstd = torch.rsqrt(var + eps)
        scale = gamma * rstd
        out = torch.nn.functional.leaky_relu_(torch.addcmul(beta - mean * scale, x, scale), slope)
        ctx.save_for_backward(x, out, w, gamma, rstd, mean)
        ctx.slope = slope
        return out, mean, var

    @staticmethod
    def backward(ctx, dout, _dmean, _dvar):
        x, out, w, gamma, rstd, mean = ctx.saved_tensors
        dz = torch.ops.aten.leaky_relu_backward(dout, out, ctx.slope, True)  # native kernel; out > 0 iff z > 0
        dbeta = dz.sum(0)
        dgamma = ((dz * x).sum(0) - mean * dbeta) * rstd  # sum_r dz_r * xhat_r
        a = gamma * rstd
        c = a * rstd * dgamma
        b = a * dbeta - c * mean
        dx = torch.addcmul(b.neg(), x, c, value=-1.0).mul_(w[:, None])  # -w_r (b + c x_r)
        return dx.addcmul_(dz, a), None, dgamma, dbeta, None, None


def weighted_bn_leaky(bn: nn.BatchNorm1d, x: torch.Tensor, weight: torch.Tensor, slope: float) -> torch.Tensor:
    """Training-mode ``bn`` then LeakyReLU over ``x (R, C)``, as if row ``r`` appeared ``weight[r]`` times.

    Lets a layer evaluate each distinct input once (e.g. one of the two mirror pairs ``|v_i - v_j|``,
    ``|v_j - v_i|``) and still normalise with the statistics of the full batch: mean, variance, running
    statistics and gradients equal those of the expanded rows up to float rounding.
    """
    # statistics in the parameters' precision, as autocast does for BatchNorm
    x, weight = x.to(bn.weight.dtype), weight.to(bn.weight.dtype)
    total = weight.sum()
    with torch.autocast(x.device.type, enabled=False):
        out, mean, var = _WeightedBNLeaky.apply(x, weight / total, bn.weight, bn.bias, bn.eps, slope)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked += 1
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean, m)
            bn.running_var.lerp_(var * total / (total - 1).clamp_min(1), m)  # unbiased, as BatchNorm
    return out


def weighted_apply(seq: nn.Module, x: torch.Tensor, weight: torch.Tensor | None,
                   group: torch.Tensor | None = None, groups: int | None = None) -> torch.Tensor:
    """Run an :func:`mlp` (optionally followed by more row-wise modules) on rows ``x (R, F)``.

    With ``weight (R,)``, its training-mode BatchNorms use weighted statistics (fused with the LeakyReLU that
    follows each of them); with ``group (R,)``, its :class:`TaskDropout` layers draw one mask per graph.
    """
    modules = list(seq.modules())[1:] if isinstance(seq, nn.Sequential) else [seq]
    modules = [m for m in modules if not isinstance(m, nn.Sequential)]
    rows = x.shape[0]
    if (x.device.type == "cpu" and rows > CPU_CHUNK_ROWS and not torch.is_grad_enabled()
            and not any(m.training for m in modules)):
        # inference on a CPU: rows are independent, so run the network a block of rows at a time; each block's
        # activations stay in cache instead of streaming (rows x 2F) tensors through memory at every step
        return torch.cat([_apply(modules, block, None, None, None) for block in x.split(CPU_CHUNK_ROWS)])
    return _apply(modules, x, weight, group, groups)


# rows per block of a CPU inference pass (:func:`weighted_apply`): 1024-4096 measured alike, one pass 1.5-2x
# slower (results/bench_eval_blocks_cpu.json)
CPU_CHUNK_ROWS = 2048


def _apply(modules: list[nn.Module], x: torch.Tensor, weight: torch.Tensor | None, group: torch.Tensor | None,
           groups: int | None) -> torch.Tensor:
    i = 0
    while i < len(modules):
        module = modules[i]
        if (weight is not None and isinstance(module, nn.BatchNorm1d) and module.training and module.affine
                and i + 1 < len(modules) and isinstance(modules[i + 1], nn.LeakyReLU)):
            x = weighted_bn_leaky(module, x, weight, modules[i + 1].negative_slope)
            i += 2
            continue
        if weight is not None and isinstance(module, nn.BatchNorm1d) and module.training:
            raise ValueError("weighted rows need BatchNorm1d (affine) followed by LeakyReLU, as built by mlp()")
        x = module(x, group, groups) if isinstance(module, TaskDropout) else module(x)
        i += 1
    return x
