"""Episodic meta-training: the Trainer (steps, validation, checkpoints, resume, time budgets) and ``train``."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from egnn.checkpoint import load_checkpoint, load_model_state, rng_state, run_lock, save_checkpoint, set_rng_state
from egnn.config import Config, make_config
from egnn.data import FewShotSplit, load_dataset
from egnn.data.paths import atomic_write_text
from egnn.data.transforms import augment, resolve_augment, resolve_normalize
from egnn.devices import describe, keep_freed_host_memory, resolve_device, set_deterministic, to_device_of
from egnn.distributed import average, barrier, init_from_env
from egnn.episodes import EpisodeSampler
from egnn.errors import ConfigError, UserError
from egnn.evaluation import EvalResult, autocast, evaluate_config
from egnn.losses import query_accuracy
from egnn.memory import check_episode_memory, out_of_memory_hint
from egnn.models import build_method, saved_config


def to_device(batch, device: torch.device):
    """A batch (PyG ``Batch`` or any object with ``apply``) on ``device``: its host tensors through pinned memory
    without blocking (:func:`egnn.devices.to_device_of`), tensors already there (device-resident images) kept."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.apply(lambda t: to_device_of(t, device))


def data_on_device(choice: str, splits: dict[str, FewShotSplit], device: torch.device) -> bool:
    """Whether the splits' images move to ``device`` (``--data-on-device``): never on the CPU; ``auto``: when
    they take at most a quarter of the GPU's free memory (Omniglot 25 MB, miniImageNet 1.2 GB)."""
    if device.type != "cuda" or choice == "off":
        return False
    if choice == "on":
        return True
    from egnn.memory import available_bytes

    need = sum(split.images.numel() for split in splits.values())  # uint8: one byte per value
    budget = available_bytes(device)
    return budget is not None and need <= budget // 4


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Meta-trains a method on episodes; validates, checkpoints, resumes, and tests the best model.

    Files in ``cfg.out``: ``last.pt`` (everything needed to resume), ``best.pt`` (best validation accuracy),
    ``metrics.jsonl`` (one line per validation), ``config.yaml`` and ``results.json`` (test accuracy).
    """

    def __init__(self, cfg: Config, splits: dict[str, FewShotSplit] | None = None) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        set_deterministic(cfg.deterministic)
        self.rank, self.world = init_from_env(cfg.device)  # first: under torchrun, cuda means cuda:LOCAL_RANK
        self.device = resolve_device(cfg.device)
        keep_freed_host_memory()  # host tensors are reused, not page-faulted anew each step
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision fp16 needs a CUDA device (CPUs lack fast float16): use --precision bf16")
        self.splits = splits or load_dataset(cfg.dataset, cfg.data_root, cfg.image_size)
        self.available = int(self.splits["train"].class_counts.min()) - cfg.shot  # caps the automatic query range
        shapes = {name: ((cfg.train_queries(self.available)[1], cfg.way) if name == "train" else
                         (cfg.eval_query, cfg.test_way or cfg.way)) for name in ("train", "val", "test")}
        for name, (q, way) in shapes.items():  # fail before any work if an episode cannot be built...
            EpisodeSampler(self.splits[name], way, cfg.shot, q, label_ratio=cfg.label_ratio)
        seed_everything(cfg.seed)  # fixes the initialisation
        self.image_shape = self.splits["train"].image_shape  # (C, H, W)
        method = build_method(cfg, self.image_shape[0], self.image_shape[-1])
        for name, (q, way) in shapes.items():  # ...or cannot fit in memory (before any tensor reaches the device)
            tasks, flag = (cfg.tasks_per_batch, "--tasks-per-batch") if name == "train" else (cfg.eval_batch, "--eval-batch")
            check_episode_memory(method, tasks=tasks, way=way, shot=cfg.shot, query=q, transductive=cfg.transductive,
                                 training=name == "train", batch_flag=flag, device=self.device)
        self.method = method.to(self.device)
        if resolve_normalize(cfg.normalize, cfg.dataset) and not cfg.backbone_checkpoint:  # else: the backbone's own
            self.method.set_normalization(*self.splits["train"].channel_stats())
        if data_on_device(cfg.data_on_device, self.splits, self.device):  # after the statistics: the CPU's
            self.splits = {name: split.on(self.device) for name, split in self.splits.items()}
        self.model: torch.nn.Module = self.method  # what the training step calls: the method, or its DDP wrapper
        if self.world > 1:
            if cfg.tasks_per_batch % self.world:
                raise ConfigError(f"tasks-per-batch={cfg.tasks_per_batch} does not split evenly over {self.world} "
                                  f"processes: use a multiple of {self.world}")
            self.method.prepare_data_parallel()
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.method.bind_training_split(self.splits["train"])
        self.augment = resolve_augment(cfg.augment, cfg.dataset)
        self.follow_up = None  # a second meta-batch per iteration, built from the first one's output
        if cfg.hard_tasks:
            from egnn.mtl import hard_task_batch

            self.follow_up = hard_task_batch
        trainable = [p for p in self.method.parameters() if p.requires_grad]  # a frozen backbone stays frozen
        self.optimizer, self.schedule = self.method.optimizer(trainable, cfg)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")  # fp16 gradients underflow
        self.samplers: dict[int, Any] = {}  # one per queries-per-class value
        self.sampler = self.train_sampler(cfg.query)
        self.out = Path(cfg.out)
        self.iteration, self.best_val, self.best_iteration = 0, -1.0, 0
        self.train_seconds = 0.0  # wall-clock of training, validations and checkpoints, summed over resumes
        # the last period's seconds per step and its validation's seconds: what one more step and the closing
        # validation will cost, so a time budget ends with its validation inside it
        self.step_seconds, self.val_seconds = 0.0, 0.0
        self.clock, self.period_first = time.perf_counter(), 0  # start of the period not yet in train_seconds

    # -- checkpoints -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "in_channels": self.image_shape[0], "image_size": self.image_shape[-1],
                # the automatic query range is the code's (it changed once), so the range itself is kept too
                "train_queries": list(self.cfg.train_queries(self.available)),
                "backbone_arch": getattr(self.method.backbone, "arch", None),
                "model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "iteration": self.iteration, "best_val": self.best_val, "best_iteration": self.best_iteration,
                "train_seconds": self.train_seconds, "step_seconds": self.step_seconds,
                "val_seconds": self.val_seconds, "rng": rng_state()}

    def resume(self) -> None:
        path = self.out / "last.pt"
        blob = load_checkpoint(path)
        saved = make_config(saved_config(blob["config"]))
        for key in ("dataset", "way", "shot", "model", "backbone", "layers", "embedding", "node_features",
                    "edge_features", "seed", "transductive", "query", "train_queries", "tasks_per_batch"):
            was, now = (c.train_queries(self.available) if key == "train_queries" else getattr(c, key)
                        for c in (saved, self.cfg))
            if key == "train_queries" and "train_queries" in blob:  # as trained, not as today's code resolves it
                was = tuple(blob["train_queries"])
            if was != now:
                raise UserError(f"cannot resume {path}: it was trained with {key}={was!r}, now {now!r}; use the "
                                f"same settings or another --out")
        size = blob.get("image_size", saved.image_size)
        if size != self.image_shape[-1]:
            raise UserError(f"cannot resume {path}: it was trained on {size}x{size} images, now "
                            f"{self.image_shape[-1]}x{self.image_shape[-1]}; pass --image-size {size}")
        if (saved.normalize, saved.augment) != (self.cfg.normalize, self.cfg.augment):  # keep the run's inputs
            self.cfg = dataclasses.replace(self.cfg, normalize=saved.normalize, augment=saved.augment)
            self.augment = resolve_augment(saved.augment, saved.dataset)
        load_model_state(self.method, blob["model"], path)
        self.optimizer.load_state_dict(blob["optimizer"])  # the learning rate is set again before every step
        if blob.get("scaler"):
            self.scaler.load_state_dict(blob["scaler"])
        self.iteration, self.best_val = blob["iteration"], blob["best_val"]
        self.best_iteration, self.train_seconds = blob["best_iteration"], blob["train_seconds"]
        self.step_seconds, self.val_seconds = blob.get("step_seconds", 0.0), blob.get("val_seconds", 0.0)
        set_rng_state(blob["rng"])
        log = self.out / "metrics.jsonl"
        if log.exists():  # drop lines written after the checkpoint, so the log matches the resumed run
            lines = [ln for ln in log.read_text().splitlines() if json.loads(ln)["iteration"] <= self.iteration]
            atomic_write_text(log, "".join(ln + "\n" for ln in lines))

    def train_sampler(self, query: int):
        """The method's training sampler (episodes, for episodic methods) for ``query`` queries per class."""
        if query not in self.samplers:
            self.samplers[query] = self.method.training_sampler(self.splits["train"], self.cfg, query)
        return self.samplers[query]

    def batch_query(self) -> int:
        """Queries per class of this iteration's batch: fixed, or drawn from ``(seed, iteration)`` with query-max."""
        low, high = self.cfg.train_queries(self.available)
        if high == low:
            return low
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + 5_555_555_555 + self.iteration)
        return int(torch.randint(low, high + 1, (1,), generator=gen))

    # -- loop --------------------------------------------------------------------------------------------
    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One training iteration; returns its loss and query accuracy as 0-d tensors on the device. Nothing here
        waits for the device: the values are read (and checked for NaN) once per validation period."""
        cfg = self.cfg
        sampler = self.train_sampler(self.batch_query())
        local = cfg.tasks_per_batch // self.world  # this rank's share of the meta-batch
        first = self.iteration * cfg.tasks_per_batch + self.rank * local
        episodes = sampler.batch(first, local)
        factor = self.schedule.factor(self.iteration, cfg.progress(self.iteration, self.seconds_spent()))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        loss, acc, out = self.update(episodes)
        if self.follow_up is not None:  # e.g. MTL's hard-task meta-batch, drawn from this one's failures
            self.update(self.follow_up(out, episodes, sampler, first))
        self.iteration += 1
        return loss, acc

    def seconds_spent(self) -> float:
        """Wall-clock of the run so far, summed over resumes. Under torchrun every rank must take the same
        learning rate and stop at the same step, so there it is extrapolated from the last validation's agreed
        time by the agreed seconds per step instead of read from each rank's own clock."""
        if self.world == 1:
            return self.train_seconds + time.perf_counter() - self.clock
        return self.train_seconds + (self.iteration - self.period_first) * self.step_seconds

    def update(self, episodes) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One optimiser step on a training sampler's batch; returns loss and query accuracy (0-d tensors, not
        synchronised) and the method's output."""
        cfg = self.cfg
        # uint8 images travel to the device, then are augmented there (the same gathers, so the same pixels)
        batch = to_device(self.method.collate_training(episodes, cfg.transductive), self.device)
        if self.augment != "none":  # a pure function of (seed, iteration, rank), like the episodes: resumes bitwise
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7_777_777_777 + self.iteration * 997 + self.rank)
            batch.x = augment(batch.x, self.augment, gen)
        with out_of_memory_hint("--tasks-per-batch"):  # the backward pass needs as much again as the forward
            with autocast(self.device, cfg.precision):
                out = self.model(batch, transductive=cfg.transductive)
                loss = self.method.loss(out)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # scaling is the identity unless fp16
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.detach(), query_accuracy(out.logits.detach(), out.query_labels).mean(), out

    def validate(self) -> float:
        return evaluate_config(self.method, self.splits["val"], self.cfg, self.cfg.val_episodes,
                               device=self.device).accuracy

    def fit(self, resume: bool = False, progress: bool = True, wait: bool = False) -> None:
        """Train to ``cfg.iterations``, resuming from ``last.pt`` if asked. The run directory is locked meanwhile;
        ``wait`` waits for another process training the same run, then resumes where it ended."""
        if (self.out / "last.pt").exists() and not resume:
            raise UserError(f"{self.out} already holds a run: pass --resume to continue it, or --out for a new run")
        self.out.mkdir(parents=True, exist_ok=True)
        with run_lock(self.out, wait) if self.rank == 0 else contextlib.nullcontext():
            if resume and (self.out / "last.pt").exists():
                self.resume()
            try:
                self._loop(progress)
            finally:
                if getattr(self, "board", None) is not None:
                    self.board.close()

    def _loop(self, progress: bool) -> None:
        cfg = self.cfg
        self.board = self.tensorboard() if self.stop_reason() is None else None  # a finished run logs nothing more
        if self.board is not None:  # the episode the method's figure draws at every validation
            self.board_episode = EpisodeSampler(self.splits["val"], cfg.test_way or cfg.way, cfg.shot, cfg.eval_query,
                                                seed=cfg.eval_seed, label_ratio=cfg.label_ratio).episode(0)
        if self.rank == 0:
            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            if self.stop_reason() is None:  # which code trained which stretch of the run (a run may span revisions)
                from egnn.provenance import provenance

                made = provenance()
                with open(self.out / "sessions.jsonl", "a") as f:
                    f.write(json.dumps({"from_iteration": self.iteration, "git_revision": made["git_revision"],
                                        "uncommitted_changes": made["uncommitted_changes"],
                                        "device": describe(self.device), "started": time.time()}) + "\n")
            # which classes each split held: a folder dataset's seeded class split, or any dataset's, on record
            atomic_write_text(self.out / "classes.json",
                              json.dumps({k: s.class_names for k, s in self.splits.items()}) + "\n")
        losses, accs = [], []
        self.clock, self.period_first = time.perf_counter(), self.iteration
        lines = progress and not sys.stderr.isatty()  # logs and pipes get one line per validation, not a bar
        bar = _progress(progress and not lines)
        live = self.device.type == "cpu"  # the bar shows each step's loss where reading it costs no device sync
        with bar:
            limit = cfg.iteration_limit()
            task = bar.add_task("train", total=None if math.isinf(limit) else limit, completed=self.iteration,
                                loss=math.nan, acc=math.nan,
                                val=_shown(self.best_val)) if progress and not lines else None
            while self.stop_reason() is None:
                loss, acc = self.step()
                losses.append(loss)
                accs.append(acc)
                shown = (float(loss), float(acc)) if live else None
                if self.iteration % cfg.val_every == 0 or self.iteration >= limit or self.budget_ends():
                    record = self.end_period(losses, accs)
                    shown = record["loss"], record["train_acc"]
                    if lines:
                        print(json.dumps(record), file=sys.stderr, flush=True)
                    losses, accs = [], []
                self.take_snapshots()
                if task is not None:
                    fields = dict(zip(("loss", "acc"), shown)) if shown else {}
                    bar.update(task, completed=self.iteration, val=_shown(self.best_val), **fields)

    def tensorboard(self):
        """The run's TensorBoard log (rank 0, ``--log tensorboard``), else None."""
        if self.cfg.log != "tensorboard" or self.rank != 0:
            return None
        from egnn.tensorboard_log import TensorBoardLog

        return TensorBoardLog(self.out / "tensorboard")

    def take_snapshots(self) -> None:
        """Save the weights at each ``snapshot_minutes`` point the run has reached (``snapshots/<m>min.pt``, like
        ``best.pt``); once the run is over, at the points up to its budget that it stopped short of."""
        if self.rank != 0 or not self.cfg.snapshot_minutes:
            return
        spent = self.seconds_spent() / 60
        over = self.stop_reason() is not None
        for minute in self.cfg.snapshot_points():
            path = self.out / "snapshots" / f"{minute:g}min.pt"
            reached = minute <= spent or (over and minute <= (self.cfg.max_minutes or spent))
            if reached and not path.exists():
                path.parent.mkdir(exist_ok=True)
                save_checkpoint(path, **self.weights(), iteration=self.iteration, minutes=round(spent, 3))

    def weights(self) -> dict[str, Any]:
        """What ``best.pt`` and the snapshots hold: the config, the weights and the input shape."""
        return dict(config=self.cfg.to_dict(), model=self.method.state_dict(), in_channels=self.image_shape[0],
                    image_size=self.image_shape[-1], backbone_arch=getattr(self.method.backbone, "arch", None))

    def stop_reason(self) -> str | None:
        """Why training is over, or None: ``iterations`` done, the ``max-minutes`` budget too short for another
        step and its closing validation, or ``patience`` validations without a new best. A pure function of the
        checkpointed state, so a resumed run that had stopped stays stopped (and one given a larger budget goes on)."""
        cfg = self.cfg
        if self.iteration >= cfg.iteration_limit():
            return "iterations"
        if cfg.max_minutes and self.train_seconds + self.step_seconds + self.val_seconds > 60 * cfg.max_minutes:
            return "max-minutes"
        if self.iteration % cfg.val_every:  # patience is decided at validations only
            return None
        if cfg.patience and self.iteration - self.best_iteration >= cfg.patience * cfg.val_every:
            return "patience"
        return None

    def budget_ends(self) -> bool:
        """Whether one more step and the closing validation would overrun ``max-minutes``: then the period ends
        now, between validations. One process reads its clock after every step; under torchrun the ranks could
        disagree, so the budget is checked at validations only (:meth:`stop_reason`)."""
        if not self.cfg.max_minutes or self.world > 1:
            return False
        now = time.perf_counter() - self.clock
        per_step = now / max(1, self.iteration - self.period_first)
        return self.train_seconds + now + per_step + self.val_seconds > 60 * self.cfg.max_minutes

    def end_period(self, losses: list[torch.Tensor], accs: list[torch.Tensor]) -> dict[str, Any]:
        """Check the period's losses, validate, keep the best model, log, then checkpoint: the log line is written
        before ``last.pt``, so a run killed in between resumes with a log that matches its checkpoint. A
        non-finite loss stops the run here, before anything is saved, naming the iteration it appeared at.
        The period's seconds run from its first step to the checkpoint: the validation counts, the checkpoint's
        writing counts in the next period."""
        period = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in losses]).cpu()  # the one sync
        bad = (~torch.isfinite(period)).nonzero()
        if len(bad):
            at = self.iteration - len(losses) + int(bad[0]) + 1
            raise UserError(f"loss became {float(period[int(bad[0])])} at iteration {at}; the last good checkpoint "
                            f"is kept in {self.out}: lower --lr, or resume with --resume")
        trained = time.perf_counter()
        val = self.validate()
        done = time.perf_counter()
        train_acc = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in accs]).mean()
        # every rank takes rank-averaged timings, so the learning rate and the stop agree across ranks
        seconds, val_seconds = average(done - self.clock), average(done - trained)
        record = {"iteration": self.iteration, "loss": average(period.mean()), "train_acc": average(train_acc),
                  "val_acc": val, "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
                  "val_seconds": round(val_seconds, 2)}
        self.train_seconds += seconds
        steps = max(1, self.iteration - self.period_first)
        self.step_seconds = (seconds - val_seconds) / steps
        self.val_seconds = val_seconds
        self.clock, self.period_first = time.perf_counter(), self.iteration
        if getattr(self, "board", None) is not None:  # inside the budget: counted in the next period
            self.board.validation(record, steps)
            self.board.figure(self.method.figure(self.board_episode, self.cfg.transductive), self.iteration)
        improved = val > self.best_val
        if improved:
            self.best_val, self.best_iteration = val, self.iteration
        if self.rank != 0:  # every rank validates (same episodes, same result); only rank 0 writes
            barrier()
            return record
        if improved:
            save_checkpoint(self.out / "best.pt", **self.weights(), iteration=self.iteration, val_acc=val)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        save_checkpoint(self.out / "last.pt", **self.state())
        barrier()
        return record

    def load_best(self) -> None:
        """Put the weights of ``best.pt`` (best validation accuracy) into ``self.method``."""
        blob = load_checkpoint(self.out / "best.pt")
        load_model_state(self.method, blob["model"], self.out / "best.pt")

    def test(self, queries: list[int] | None = None, provenance: dict[str, Any] | None = None) -> list[EvalResult]:
        """Test the best checkpoint on ``cfg.test_episodes`` fixed episodes, for each queries-per-class value."""
        cfg = self.cfg
        self.load_best()
        results = [evaluate_config(self.method, self.splits["test"], cfg, cfg.test_episodes, q, self.device)
                   for q in (queries or [cfg.eval_query])]
        summary = {**(provenance or {}), "device": describe(self.device), "config": cfg.to_dict(),
                   "best_iteration": self.best_iteration, "iterations_trained": self.iteration,
                   "stopped": self.stop_reason(),
                   "best_val_acc": self.best_val, "train_seconds": self.train_seconds,
                   "test": [r.to_dict() for r in results]}
        atomic_write_text(self.out / "results.json", json.dumps(summary, indent=2) + "\n")
        board = self.tensorboard()
        if board is not None:
            board.test({str(r.protocol['query']): r.accuracy for r in results}, self.iteration)
            board.close()
        return results


def train(cfg: Config, resume: bool = False, progress: bool = True, test_queries: list[int] | None = None,
          provenance: dict[str, Any] | None = None) -> list[EvalResult]:
    """Meta-train ``cfg``, then test its best checkpoint. The notebook entry point behind ``egnn train``."""
    trainer = Trainer(cfg)
    for q in test_queries or []:  # fail now, not after hours of training
        EpisodeSampler(trainer.splits["test"], cfg.test_way or cfg.way, cfg.shot, q, label_ratio=cfg.label_ratio)
    trainer.fit(resume=resume, progress=progress and trainer.rank == 0)
    return trainer.test(test_queries, provenance) if trainer.rank == 0 else []


def _shown(best_val: float) -> str:
    """The progress bar's best validation accuracy: '-' until the first validation (it starts at -1)."""
    return "-" if best_val < 0 else f"{best_val:.3f}"


def _progress(enabled: bool):
    if not enabled:
        return nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}  best val {task.fields[val]}"),
                    TimeRemainingColumn(), transient=False)
