"""TensorBoard curves of a run (``--log tensorboard``), beside ``metrics.jsonl``: every validation's scalars and the
method's figure of a fixed validation episode, then the test results. The event files live in the run directory
(``<out>/tensorboard``), so ``tensorboard --logdir`` on a sweep's or a comparison's runs folder shows its runs
side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from egnn.errors import ConfigError


class TensorBoardLog:
    """A ``SummaryWriter`` with egnn's tags: ``train/loss``, ``train/accuracy``, ``val/accuracy``, ``lr``,
    ``seconds_per_iteration``, ``figure/edge_labels``, ``test/accuracy_<q>q``."""

    def __init__(self, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'egnn[tensorboard]'") from None
        self.writer = SummaryWriter(str(folder))

    def validation(self, record: dict[str, Any], steps: int) -> None:
        step = record["iteration"]
        for tag, key in (("train/loss", "loss"), ("train/accuracy", "train_acc"), ("val/accuracy", "val_acc"),
                         ("lr", "lr")):
            self.writer.add_scalar(tag, record[key], step)
        self.writer.add_scalar("seconds_per_iteration", (record["seconds"] - record["val_seconds"]) / max(steps, 1),
                               step)
        self.writer.flush()

    def figure(self, fig, step: int) -> None:
        if fig is not None:
            self.writer.add_figure("figure/edge_labels", fig, step, close=True)
            self.writer.flush()

    def test(self, accuracies: dict[str, float], step: int) -> None:
        """Test accuracies by queries per class, as a sweep labels them (``{"1": 0.99, "15/seed1": 0.98}``):
        ``test/accuracy_1q``, ``test/accuracy_15q/seed1``."""
        for label, accuracy in accuracies.items():
            queries, _, seed = label.partition("/")
            self.writer.add_scalar(f"test/accuracy_{queries}q" + (f"/{seed}" if seed else ""), accuracy, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
