"""Refuse episode batches that cannot fit in memory, before they are built, with the fix in the message.

Dense EGNN graphs cost O(B N^2): every ordered pair of nodes goes through the edge MLP in every layer. The
estimate below is deliberately simple (bytes per pair per layer, measured on CPU with the default widths,
scaled by the width); it only has to catch batches that are clearly too big, e.g. 15-query 20-way episodes
evaluated 50 at a time, or a 5000-node episode, which belongs on the sparse path (``--knn``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from egnn.errors import UserError

TRAIN_BYTES_PER_PAIR = 3600  # per ordered pair and layer at 96 edge features: activations kept for backward
EVAL_BYTES_PER_PAIR = 1200  # per ordered pair at 96 edge features, inference: one layer's transients at a time


def available_bytes(device=None) -> int | None:
    """The memory budget: ``$EGNN_MEMORY_GB`` if set; on a CUDA device its free memory (``cudaMemGetInfo``, what
    other processes leave, plus what this process's caching allocator holds unused); else Linux's MemAvailable;
    None if unknown."""
    if os.environ.get("EGNN_MEMORY_GB"):
        return int(float(os.environ["EGNN_MEMORY_GB"]) * 2**30)
    if device is not None and torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        cached = torch.cuda.memory_reserved(torch.device(device)) - torch.cuda.memory_allocated(torch.device(device))
        return int(free + cached)
    from egnn.devices import meminfo

    return meminfo("MemAvailable")


def dense_graph_bytes(graphs: int, nodes: int, layers: int, edge_features: int, training: bool) -> int:
    per_pair = TRAIN_BYTES_PER_PAIR * layers if training else EVAL_BYTES_PER_PAIR
    return int(graphs * nodes * nodes * per_pair * edge_features / 96)


def check_bytes(need: int, what: str, fix: str, device=None) -> None:
    """Raise a :class:`UserError` ``"{what} needs about X GB, more than the Y GB available: {fix}"`` if ``need``
    bytes exceed the memory budget of ``device``."""
    budget = available_bytes(device)
    where = "free on the GPU" if device is not None and torch.device(device).type == "cuda" else "available"
    if budget is not None and need > budget:
        raise UserError(f"{what} needs about {need / 2**30:.1f} GB, more than the {budget / 2**30:.1f} GB {where}: {fix}")


def check_episode_memory(method, *, tasks: int, way: int, shot: int, query: int, transductive: bool, training: bool,
                         batch_flag: str, device=None) -> None:
    """:func:`check_bytes` for a batch of ``tasks`` episodes, with the method's own estimate
    (:meth:`~egnn.methods.FewShotMethod.graph_bytes`) and the fix: a smaller batch or sparse graphs."""
    check_bytes(method.graph_bytes(tasks, way * shot, way * query, transductive, training=training),
                f"a batch of {tasks} {way}-way episodes of {way * (shot + query)} nodes as dense graphs",
                f"lower {batch_flag}, or use sparse graphs with --knn 20", device)


@contextmanager
def out_of_memory_hint(batch_flag: str):
    """Turn an allocation failure into one line that names the fix."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        text = str(exc)
        if not isinstance(exc, (torch.OutOfMemoryError, MemoryError)) and "allocate" not in text and "out of memory" not in text:
            raise
        raise UserError(f"out of memory running an episode batch ({text.splitlines()[0][:80]}): lower {batch_flag}, "
                        f"or use sparse graphs with --knn 20") from None
