"""Checkpoints: written atomically, versioned, carrying their full config and every RNG state."""
from __future__ import annotations

import pickle
import random
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egnn.data.paths import atomic_save
from egnn.errors import CheckpointError, UserError

FORMAT = "egnn-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **payload: Any) -> None:
    atomic_save({"format": FORMAT, "version": VERSION, **payload}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint; any problem becomes one :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: check the --checkpoint path")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}): "
                              f"use another checkpoint, e.g. last.pt or best.pt of the run") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an egnn checkpoint: pass a best.pt or last.pt written by egnn train")
    if blob.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {blob.get('version')}, this egnn reads "
                              f"{VERSION}: re-train or use a matching egnn release")
    return blob


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"checkpoint {path} does not fit this model ({first}): pass the model, backbone "
                              f"and widths it was trained with") from None


@contextmanager
def run_lock(run_dir: str | Path, wait: bool = False):
    """Hold an exclusive lock on a run directory while training in it: a second process that trains the same
    run would interleave its checkpoints with ours. ``wait`` blocks until the other process is done (it then
    resumes the finished run); otherwise that is a user error. A no-op where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(Path(run_dir) / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UserError(f"another process is training in {run_dir}: wait for it to finish, or pass another "
                            f"--out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
