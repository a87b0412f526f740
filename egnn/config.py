"""Run configuration: one dataclass, filled from YAML in ``configs/`` and then from command-line flags."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from egnn.errors import ConfigError


# the automatic range of training queries per class for transductive graph methods: 1..10 keeps the accuracy of
# 1..15 at 15 test queries and costs about 0.7 of its step, so the same time buys more steps
# (results/quickstart_recipe_cpu.md: +0.60 +- 0.41 at 1 query, -0.02 +- 0.15 at 15, in the quick start's time)
AUTO_QUERY_MAX = 10
AUTO_ITERATIONS = 150  # iterations of a run without --iterations or a time budget: the quick start's


@dataclass
class Config:
    """Everything that defines a run. Defaults are the EGNN reference hyper-parameters, except the iteration
    count and tasks per batch (reference: 40), which are sized so the quick start on the embedded dataset
    finishes in minutes on a 2-core CPU; the configs in ``configs/`` set them per benchmark.
    """

    # data
    dataset: str = "glyphs"
    data_root: str | None = None
    image_size: int = 0  # 0: the dataset's native size
    normalize: str = "auto"  # standardise inputs by the training split's channel mean/std: auto (natural images), on, off
    augment: str = "auto"  # training-time augmentation: auto (crop-flip for natural images), none, crop, crop-flip
    # episodes
    way: int = 5
    shot: int = 1
    query: int = 1  # queries per class in training episodes
    # > query: every training batch draws its queries per class uniformly from query..query_max; 0: always query;
    # -1 (auto): query..max(query, 10) for transductive graph methods, whose accuracy otherwise collapses when
    # the test query count differs from training (results/query_protocol_omniglot.json), else fixed
    query_max: int = -1
    eval_query: int = 1  # queries per class in validation and test episodes
    test_way: int = 0  # classes per validation and test episode; 0: the training way
    label_ratio: float = 1.0
    unlabeled: str = "keep"  # unlabeled supports: "keep" them as graph nodes (semi-supervised) or "drop" them
    transductive: bool = True
    # model
    model: str = "egnn"
    backbone: str = "conv4"
    widths: str = ""  # backbone widths, e.g. "64,128,256,512" (ResNet-12, MTL paper); empty: the backbone's default
    backbone_checkpoint: str = ""  # pretrained backbone (egnn pretrain, or a run's best.pt): frozen, with SS parameters
    train_ss: bool = True  # with backbone_checkpoint: meta-train the Scaling-and-Shifting parameters (else frozen too)
    hard_tasks: bool = False  # MTL's hard-task meta-batch: re-sample tasks from each batch's failure classes
    inner_steps: int = 20  # MTL base learner: gradient steps on the support set
    inner_lr: float = 0.1
    inner_init: str = "learned"  # MTL base learner's start: learned (the paper: zero, then meta-learned) or prototypes (Proto-MAML)
    embedding: int = 128
    layers: int = 3
    node_features: int = 96
    edge_features: int = 96
    dropout: float = -1.0  # graph dropout (whole channels per graph); -1 (auto): the reference's, 0.1 on mini-imagenet, else 0
    encoder_dropout: float = -1.0  # Conv-4 Dropout2d; -1 (auto): the reference's 0.4 / 0.5 after blocks 3 / 4 on >= 84px inputs, none on smaller; p >= 0: p after both
    encoder_norm: str = "slot"  # Conv-4 BatchNorm statistics: per node slot (the reference) or over the whole batch
    conv4_padding: str = "reference"  # reference: second convolution unpadded (84 -> 5x5 maps); same: every one padded
    graph_slope: float = 0.01  # LeakyReLU slope of the node and edge MLPs (the reference's nn.LeakyReLU() default)
    knn: int = 0  # > 0: transductive EGNN on sparse graphs, edges from each node's knn nearest nodes and supports
    # optimisation
    iterations: int = 0  # 0 (auto): 150, or as many as the time budget allows when max_minutes is set
    tasks_per_batch: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-6
    lr_halve_every: int = 15000
    # learning-rate curve over the run's progress (egnn.schedules): step (the reference: halve every lr_halve_every
    # iterations), cosine, or auto: cosine under a time budget, else step
    lr_schedule: str = "auto"
    patience: int = 0  # stop after this many validations without a new best (0: train all iterations)
    # wall-clock budget of training, validations and checkpoints included, summed over resumes (0: off): the run
    # ends with a last validation before the budget is spent, and the learning-rate schedule follows the time spent
    max_minutes: float = 0.0
    snapshot_minutes: str = ""  # e.g. "5,10,20": also save the weights when the run has spent these many minutes
    # validation, test and bookkeeping
    val_every: int = 50
    val_episodes: int = 200
    test_episodes: int = 1000
    eval_batch: int = 50  # episodes per forward pass in evaluation
    seed: int = 0
    eval_seed: int = 0  # fixes validation and test episodes independently of the training seed
    device: str = "auto"  # auto: CUDA when available, else CPU; cpu; cuda; cuda:N
    data_on_device: str = "auto"  # keep the splits' images on the GPU: auto (when they fit in a quarter of its free memory), on, off
    deterministic: bool = False  # repeatable GPU runs (deterministic kernels, no cuDNN autotuning), somewhat slower
    precision: str = "fp32"  # fp32; bf16: autocast (CPU or CUDA); fp16: autocast with loss scaling (CUDA)
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    log: str = ""  # tensorboard: also TensorBoard curves and the method's figure at each validation (<out>/tensorboard)
    out: str = "runs/egnn"

    def validate(self) -> "Config":
        if self.image_size < 0:
            raise ConfigError(f"image-size must be at least 1 (or 0 for the dataset's own), got {self.image_size}")
        if self.iterations < 0:
            raise ConfigError(f"iterations must be at least 1 (or 0: 150, or until --max-minutes), got {self.iterations}")
        positive = ["way", "shot", "query", "eval_query", "layers", "tasks_per_batch",
                    "val_every", "val_episodes", "test_episodes", "eval_batch", "embedding", "node_features",
                    "edge_features", "lr_halve_every"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.way < 2 or self.test_way == 1 or self.test_way < 0:
            raise ConfigError(f"way and test-way must be at least 2, got {self.way} and {self.test_way}")
        if self.query_max < -1 or 0 < self.query_max < self.query:
            raise ConfigError(f"query-max must be -1 (auto), 0 (fixed queries) or at least query={self.query}, "
                              f"got {self.query_max}")
        if not 0 < self.label_ratio <= 1:
            raise ConfigError(f"label-ratio must be in (0, 1], got {self.label_ratio}")
        if self.normalize not in ("auto", "on", "off"):
            raise ConfigError(f"normalize must be auto, on or off, got '{self.normalize}'")
        if self.augment not in ("auto", "none", "crop", "crop-flip"):
            raise ConfigError(f"augment must be auto, none, crop or crop-flip, got '{self.augment}'")
        if self.unlabeled not in ("keep", "drop"):
            raise ConfigError(f"unlabeled must be keep or drop, got '{self.unlabeled}'")
        if self.widths and not all(w.strip().isdigit() and int(w) > 0 for w in self.widths.split(",")):
            raise ConfigError(f"widths must be positive integers separated by commas, got '{self.widths}'")
        if self.backbone == "resnet12-mtl" and not self.backbone_checkpoint:
            raise ConfigError("backbone resnet12-mtl needs --backbone-checkpoint PATH: the best.pt of egnn pretrain "
                              "or of an MTL meta-transfer run (egnn train --model mtl --backbone-checkpoint ...)")
        if self.patience < 0 or self.max_minutes < 0:
            raise ConfigError(f"patience and max-minutes must be 0 (off) or positive, got {self.patience} and "
                              f"{self.max_minutes}")
        try:
            marks = self.snapshot_points()
        except ValueError:
            marks = None
        if marks is None or any(m <= 0 for m in marks):
            raise ConfigError(f"snapshot-minutes must be positive numbers separated by commas, e.g. 5,10,20, got "
                              f"'{self.snapshot_minutes}'")
        if self.log not in ("", "tensorboard"):
            raise ConfigError(f"log must be tensorboard (or empty: metrics.jsonl alone), got '{self.log}'")
        if self.lr_schedule not in ("auto", "step", "cosine"):
            raise ConfigError(f"lr-schedule must be auto, step or cosine, got '{self.lr_schedule}'")
        if self.knn < 0:
            raise ConfigError(f"knn must be 0 (dense graphs) or at least 1, got {self.knn}")
        if self.lr <= 0 or self.weight_decay < 0 or not (self.dropout == -1 or 0 <= self.dropout < 1):
            raise ConfigError("lr must be > 0, weight-decay >= 0 and dropout in [0, 1) (or -1: the reference's)")
        if not (self.encoder_dropout == -1 or 0 <= self.encoder_dropout < 1):
            raise ConfigError(f"encoder-dropout must be in [0, 1) or -1 (the reference's), got {self.encoder_dropout}")
        if self.encoder_norm not in ("slot", "batch"):
            raise ConfigError(f"encoder-norm must be slot or batch, got '{self.encoder_norm}'")
        if self.conv4_padding not in ("reference", "same"):
            raise ConfigError(f"conv4-padding must be reference or same, got '{self.conv4_padding}'")
        if not 0 <= self.graph_slope < 1:
            raise ConfigError(f"graph-slope must be in [0, 1), got {self.graph_slope}")
        if self.device not in ("auto", "cpu", "cuda") and not (self.device.startswith("cuda:")
                                                                  and self.device[5:].isdigit()):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        if self.data_on_device not in ("auto", "on", "off"):
            raise ConfigError(f"data-on-device must be auto, on or off, got '{self.data_on_device}'")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16 or fp16, got '{self.precision}'")
        if self.precision == "fp16" and self.device == "cpu":
            raise ConfigError("precision fp16 needs --device cuda (CPUs lack fast float16): use --precision bf16")
        from egnn.methods import method_class  # late: the methods import the config's users

        method_class(self.model).check_config(self)  # the method's own settings: e.g. MTL's inner loop
        return self

    def train_queries(self, available: int | None = None) -> tuple[int, int]:
        """Range of queries per class in training batches, ``query_max`` resolved; ``available`` (images of the
        smallest training class minus the shot) caps the automatic range to what every class can serve."""
        if self.query_max == -1:
            from egnn.methods import method_class

            robust = self.transductive and method_class(self.model).varied_queries
            cap = AUTO_QUERY_MAX if available is None else min(AUTO_QUERY_MAX, available)
            return self.query, max(self.query, cap) if robust else self.query
        return self.query, max(self.query, self.query_max)

    def iteration_limit(self) -> float:
        """Iterations the run may take: ``iterations``, or for 0 (auto) ``AUTO_ITERATIONS`` without a time budget
        and no limit with one."""
        if self.iterations:
            return self.iterations
        return math.inf if self.max_minutes else AUTO_ITERATIONS

    def progress(self, iteration: int, seconds: float) -> float:
        """Share of the run done after ``iteration`` iterations and ``seconds`` of its time budget, in ``[0, 1]``:
        whichever of the two limits is closer to its end drives the learning-rate schedule."""
        done = iteration / self.iteration_limit()
        if self.max_minutes:
            done = max(done, seconds / (60 * self.max_minutes))
        return min(done, 1.0)

    def snapshot_points(self) -> list[float]:
        """``snapshot_minutes`` as sorted minutes."""
        return sorted(float(m) for m in self.snapshot_minutes.split(",") if m.strip())

    def graph_dropout(self) -> float:
        """The graph network's dropout, ``dropout`` resolved: the reference uses 0.1 on miniImageNet, else 0."""
        if self.dropout >= 0:
            return self.dropout
        return 0.1 if self.dataset == "mini-imagenet" else 0.0

    def backbone_options(self, factory) -> dict[str, Any]:
        """Keyword arguments of ``factory`` (a registered backbone) that this config sets: widths, the encoder
        dropout, and the Conv-4 options where the factory takes them."""
        import inspect

        accepted = inspect.signature(factory).parameters
        options = {"dropout": self.encoder_dropout, "norm": self.encoder_norm, "padding": self.conv4_padding,
                   **self.backbone_widths()}
        return {k: v for k, v in options.items() if k in accepted}

    def backbone_widths(self) -> dict[str, Any]:
        """``{"widths": (...)}`` for :func:`egnn.backbones.create_backbone`, or nothing for the default."""
        return {"widths": tuple(int(w) for w in self.widths.split(","))} if self.widths else {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key '{key}' appears twice at line {key_node.start_mark.line + 1}: keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str):
    """Parse YAML with :class:`_UniqueKeyLoader`: a duplicate key is a :class:`ConfigError`."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _coerce(name: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if value is None or default is None or isinstance(value, kind):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"config key '{name}' expects {kind.__name__}, got {value!r}")


def make_config(base: dict[str, Any] | None = None, **overrides: Any) -> Config:
    """A validated :class:`Config` from a dict (e.g. parsed YAML) and overrides; ``None`` overrides are ignored."""
    known = {f.name: f for f in fields(Config)}
    values = dict(base or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}: valid keys are {', '.join(known)}")
    defaults = Config()
    typed = {k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()}
    return dataclasses.replace(defaults, **typed).validate()


def read_config_file(path: str | Path, kind: str = "config", seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a YAML config file, its ``include`` (a path, or a list of paths, relative to the file)
    merged under it: included files first, in order, then this file's own keys, which win. Any problem (missing
    file, bad YAML, a duplicate key, an include cycle) is one :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} file {path} not found: check the path")
    if path.resolve() in seen:
        raise ConfigError(f"{kind} file {path} includes itself (through {' -> '.join(str(p) for p in seen)}): "
                          f"remove the cycle")
    try:
        values = read_yaml(path.read_text()) or {}
    except ConfigError as exc:
        raise ConfigError(f"{kind} file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{kind} file {path} is not valid YAML{where}: fix the syntax") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{kind} file {path} must be a mapping of keys to values")
    return expand_includes(values, path.parent, kind, (*seen, path.resolve()))


def expand_includes(values: dict[str, Any], relative_to: str | Path, kind: str = "config",
                    seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``values`` with its ``include`` key replaced by the included files' keys (``values``' own keys win)."""
    if "include" not in values:
        return values
    values = dict(values)
    include = values.pop("include")
    files = [include] if isinstance(include, str) else include
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"include expects a file path or a list of them, got {include!r}")
    merged: dict[str, Any] = {}
    for file in files:
        merged.update(read_config_file(Path(relative_to) / file, kind, seen))
    return {**merged, **values}


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read a YAML config (if given, with its includes), apply flag overrides, validate."""
    base = read_config_file(path) if path is not None else {}
    return make_config(base, **overrides)
