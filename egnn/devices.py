"""Where runs compute: ``--device auto`` (CUDA when available, else CPU), and how a device is reported."""
from __future__ import annotations

import os

import torch

from egnn.errors import ConfigError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` if a GPU is visible, else ``cpu``. Under ``torchrun``, a bare ``cuda`` (or ``auto``)
    means this process's GPU, ``cuda:$LOCAL_RANK``."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' requested but CUDA is not available: use --device cpu (or auto)")
        if name == "cuda":  # modulo the visible GPUs: ranks may share one (gloo), e.g. in tests
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', torch.cuda.current_device())) % torch.cuda.device_count()}"
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}' requested but only {torch.cuda.device_count()} GPU(s) are visible: "
                              f"use --device cuda:0")
    return torch.device(name)


def keep_freed_host_memory() -> bool:
    """Have glibc keep freed blocks for reuse instead of returning each large one to the kernel. By default every
    allocation over 32 MB (a Conv-4 activation of an episode batch) is a fresh ``mmap`` whose pages the kernel
    zeroes on first touch; on the CPU that page-faulting costs more than some of the layers themselves (an
    elementwise op on 240 MB: 67 ms by default, 22 ms with reuse). The price: the process keeps its peak heap
    until it exits, about a third more resident memory (the quick start: 6.5 GB against 4.9 GB, 1.24x faster),
    so it is on by default only on machines with at least 16 GB of memory. ``EGNN_MALLOC=tuned`` turns it on
    anywhere, ``EGNN_MALLOC=system`` off. Returns whether the setting took."""
    import ctypes
    import ctypes.util
    import sys

    choice = os.environ.get("EGNN_MALLOC", "")
    if not sys.platform.startswith("linux") or choice == "system":
        return False
    if choice != "tuned" and (meminfo("MemTotal") or 0) < 16 * 2**30:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 2 ** 31 - 1))


def meminfo(field: str) -> int | None:
    """Bytes of a field of Linux's /proc/meminfo (``MemTotal``, ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The processor as results record it, e.g. ``AMD EPYC (family 25 model 1), AVX2, 2 CPUs``: its model (Linux
    names it in /proc/cpuinfo; ``platform.processor()`` is empty there), the vector instructions torch's kernels
    use (which set their float rounding: the same code gives other bits on another of these) and the cores."""
    import platform

    info: dict[str, str] = {}
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            key, sep, value = line.partition(":")
            if not sep:
                break  # the first processor's block is enough
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        model += f" (family {info['cpu family']} model {info['model']})"
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs"


def describe(device: str | torch.device) -> str:
    """``cpu (AMD EPYC (family 25 model 1), AVX2, 2 CPUs)``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``: what results
    record next to every number."""
    device = resolve_device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_name()})"


def set_deterministic(enabled: bool) -> None:
    """Repeatable GPU runs: deterministic kernels (cuBLAS needs its workspace setting before first use) and no
    cuDNN autotuning. The CPU kernels egnn uses are deterministic already."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)  # an op without a deterministic kernel warns, once


def to_device_of(t: torch.Tensor, like: torch.Tensor | torch.device) -> torch.Tensor:
    """``t`` on the device of ``like`` (a tensor or a device). A CPU tensor goes to a GPU through pinned memory,
    without the host waiting for the copy (a copy from pageable memory synchronises); a tensor already there
    is returned as it is."""
    device = like.device if isinstance(like, torch.Tensor) else torch.device(like)
    if t.device == device:
        return t
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
