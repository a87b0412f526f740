"""``egnn`` command line: parse flags into a config, call the Python API, print. No logic lives here."""
from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import fields
from functools import wraps
from pathlib import Path
from typing import Optional

import typer

from egnn.config import Config
from egnn.errors import UserError

warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")  # torch_geometric import noise

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Few-shot learning with Edge-Labeling Graph Neural Networks.")


def user_errors(fn):
    """Turn a :class:`UserError` into one line on stderr and exit code 2; nothing else is printed."""
    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: the last checkpoint is kept; continue with --resume", err=True)
            raise typer.Exit(130) from None
    return run


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} takes whole numbers separated by commas, got '{text}'") from None
    if not values or min(values) < 1:
        raise UserError(f"{flag} takes whole numbers of at least 1, got '{text}'")
    return values


def _queries(text: Optional[str]) -> Optional[list[int]]:
    return None if text is None else parse_int_list(text, "--test-queries")


#: one declaration per config key that commands take as a flag (``--tasks-per-batch`` <-> ``tasks_per_batch``);
#: a command picks its keys with :func:`config_flags`, so the flags cannot drift apart between commands
CONFIG_OPTIONS = {
    "dataset": typer.Option(None, help="glyphs (embedded, default), omniglot, mini-imagenet, "
        "tiered-imagenet, cifar-fs, fc100 or folder."),
    "data_root": typer.Option(None, help="Dataset root; default $EGNN_DATA."),
    "image_size": typer.Option(None, help="Resize images to this size (0: the dataset's own)."),
    "normalize": typer.Option(None, help="Standardise inputs by the training split's channel "
        "mean/std: auto (natural images only), on, off."),
    "augment": typer.Option(None, help="Training augmentation: auto (crop-flip for natural images, "
        "none for glyphs and Omniglot), none, crop, crop-flip."),
    "way": typer.Option(None, help="Classes per episode."),
    "shot": typer.Option(None, help="Labeled examples per class."),
    "query": typer.Option(None, help="Queries per class in training episodes."),
    "query_max": typer.Option(None, help="Draw each training batch's queries per class uniformly "
        "from --query..--query-max (robust to the test query count); 0: fixed "
        "--query; -1 (default): 10 for transductive EGNN/GNN, else fixed."),
    "eval_query": typer.Option(None, help="Queries per class in validation/test episodes."),
    "test_way": typer.Option(None, help="Classes per validation/test episode (default: --way)."),
    "label_ratio": typer.Option(None, help="Fraction of each class's supports that is labeled."),
    "unlabeled": typer.Option(None, help="keep the unlabeled supports as graph nodes, or drop them."),
    "transductive": typer.Option(None, "--transductive/--no-transductive",
                                                    help="Queries share one graph (default) or each sees only the supports."),
    "model": typer.Option(None, help="Few-shot method: egnn, gnn, protonet or mtl."),
    "backbone": typer.Option(None, help="Embedding network: conv4, resnet12, or resnet12-mtl "
        "(with --backbone-checkpoint)."),
    "widths": typer.Option(None, help="Backbone widths, e.g. 64,128,256,512."),
    "backbone_checkpoint": typer.Option(None, help="Pretrained backbone (egnn pretrain or an MTL run): "
        "frozen, with Scaling-and-Shifting parameters."),
    "train_ss": typer.Option(None, "--train-ss/--freeze-ss",
                                                help="With --backbone-checkpoint: meta-train the SS parameters or not."),
    "hard_tasks": typer.Option(None, "--hard-tasks/--no-hard-tasks",
                                                  help="MTL's hard-task meta-batch from each batch's failure classes."),
    "inner_steps": typer.Option(None, help="MTL base learner: gradient steps on the support set."),
    "inner_init": typer.Option(None, help="MTL base learner's start: learned (the paper) or prototypes "
        "(Proto-MAML: the nearest-prototype classifier, then the inner steps)."),
    "inner_lr": typer.Option(None, help="MTL base learner: step size."),
    "layers": typer.Option(None, help="Graph layers."),
    "knn": typer.Option(None, help="Sparse transductive graphs: edges from each node's k nearest "
        "nodes and supports (0: fully connected)."),
    "dropout": typer.Option(None, help="Graph dropout, whole channels per graph (-1: the "
        "reference's, 0.1 on mini-imagenet, else 0)."),
    "encoder_dropout": typer.Option(None, help="Conv-4 Dropout2d after blocks 3, 4 (-1: the "
        "reference's 0.4, 0.5 on 84px inputs, none on smaller)."),
    "encoder_norm": typer.Option(None, help="Conv-4 BatchNorm statistics: slot (per node slot, the "
        "reference) or batch (whole batch)."),
    "conv4_padding": typer.Option(None, help="reference (second convolution unpadded) or same."),
    "graph_slope": typer.Option(None, help="LeakyReLU slope of the graph MLPs (reference: 0.01)."),
    "iterations": typer.Option(None, help="Meta-training iterations (0: 150, or until --max-minutes)."),
    "tasks_per_batch": typer.Option(None, help="Episodes per iteration (images, for --model classifier)."),
    "lr": typer.Option(None, help="Learning rate (Adam; SGD for --model classifier)."),
    "val_every": typer.Option(None, help="Validate and checkpoint every N iterations."),
    "val_episodes": typer.Option(None, help="Validation episodes."),
    "patience": typer.Option(None, help="Stop after N validations without a new best (0: off)."),
    "max_minutes": typer.Option(None, help="Wall-clock budget in minutes, validations and checkpoints "
        "included, summed over resumes (0: off); the learning rate follows it."),
    "snapshot_minutes": typer.Option(None, help="Also save the weights at these minutes of the run, e.g. "
        "5,10,20 (snapshots/<m>min.pt): a time-to-accuracy curve from one run."),
    "test_episodes": typer.Option(None, help="Test episodes."),
    "out": typer.Option(None, help="Run directory."),
    "seed": typer.Option(None, help="Seed for episodes and initialisation."),
    "device": typer.Option(None, help="auto (default: CUDA when available, else CPU), cpu, cuda or "
        "cuda:N."),
    "data_on_device": typer.Option(None, help="Keep the images on the GPU, episodes gathered there: auto (when "
        "they fit in a quarter of its free memory), on, off."),
    "deterministic": typer.Option(None, "--deterministic/--no-deterministic",
                                  help="Repeatable GPU runs (deterministic kernels; slower)."),
    "precision": typer.Option(None, help="fp32, bf16 (autocast, CPU or CUDA) or fp16 (CUDA, loss "
        "scaling)."),
    "threads": typer.Option(None, help="CPU threads (0: torch default)."),
    "log": typer.Option(None, help="tensorboard: also TensorBoard curves and edge-label figures in OUT/tensorboard "
        "(pip install 'egnn[tensorboard]')."),
    "embedding": typer.Option(None, help="Width of the embedding the backbone ends in."),
    "node_features": typer.Option(None, help="Node feature width of the graph layers."),
    "edge_features": typer.Option(None, help="Hidden width of the edge (similarity) network."),
    "weight_decay": typer.Option(None, help="Optimiser weight decay."),
    "lr_halve_every": typer.Option(None, help="Halve the learning rate every N iterations (--lr-schedule step)."),
    "lr_schedule": typer.Option(None, help="Learning-rate curve of the episodic methods: step (halve every "
        "--lr-halve-every iterations), cosine (over the run or its --max-minutes), auto (cosine with --max-minutes)."),
    "eval_batch": typer.Option(None, help="Episodes per forward pass in validation and test."),
    "eval_seed": typer.Option(None, help="Seed of the validation and test episodes (independent of --seed)."),
}


def config_flags(*names: str, help: dict | None = None):
    """Add the flags of the config keys ``names`` to a command (declared once, in :data:`CONFIG_OPTIONS`; the
    type from :class:`~egnn.config.Config`; ``help`` rewords some for this command). The command receives the
    given ones as ``overrides`` (keys whose flag was not passed are left out)."""
    import copy
    import inspect

    defaults = Config()

    def wrap(fn):
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "overrides"]
        extra = []
        for name in names:
            info = copy.copy(CONFIG_OPTIONS[name])
            if help and name in help:
                info.help = help[name]
            value = getattr(defaults, name)
            kind = str if value is None else type(value)
            extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=Optional[kind]))

        @wraps(fn)
        def run(**kwargs):
            overrides = {k: kwargs.pop(k) for k in names if kwargs.get(k) is not None}
            for k in names:
                kwargs.pop(k, None)
            return fn(**kwargs, overrides=overrides)

        run.__signature__ = inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra)
        return run
    return wrap


#: ``egnn train`` takes every config key as a flag
TRAIN_KEYS = tuple(f.name for f in fields(Config))


@app.command()
@user_errors
@config_flags(*TRAIN_KEYS)
def train(
    config: Optional[Path] = typer.Option(None, help="YAML config; flags override its keys."),
    test_queries: Optional[str] = typer.Option(None, help="Queries per class to test with, e.g. 1,15."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    overrides: dict = None,
) -> None:
    """Meta-train a few-shot method, then test its best checkpoint."""
    from egnn.config import load_config
    from egnn.trainer import train as run

    cfg = load_config(config, **overrides)
    from egnn.provenance import provenance as made_by

    provenance = made_by()
    for result in run(cfg, resume=resume, progress=not quiet,
                      test_queries=_queries(test_queries), provenance=provenance):
        typer.echo(f"test: {result}")
    from egnn.distributed import world

    if world()[0] == 0:
        typer.echo(f"run saved in {cfg.out}")


PRETRAIN_KEYS = ("dataset", "data_root", "image_size", "normalize", "augment", "backbone", "widths", "iterations",
                 "lr", "weight_decay", "way", "shot", "eval_query", "val_every", "val_episodes", "test_episodes",
                 "eval_batch", "seed", "eval_seed", "threads", "device", "data_on_device", "precision", "patience",
                 "max_minutes", "out")


@app.command()
@user_errors
@config_flags(*PRETRAIN_KEYS, help={
    "dataset": "Dataset whose training classes are learned.", "backbone": "Backbone to pretrain (default resnet12).",
    "widths": "Backbone widths, e.g. 64,128,256,512 (MTL) or 32,64,96,128.", "iterations": "SGD iterations.",
    "lr": "SGD learning rate (divided by 10 at 50% and 75%).", "way": "Way of the validation episodes.",
    "shot": "Shot of the validation episodes.", "eval_query": "Queries per class of the validation episodes.",
    "test_episodes": "Test episodes for the best checkpoint's features."})
def pretrain(
    config: Optional[Path] = typer.Option(None, help="YAML config; flags override its keys."),
    batch_size: Optional[int] = typer.Option(None, help="Images per iteration (default 128)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    overrides: dict = None,
) -> None:
    """MTL stage 1: pretrain a backbone as a classifier over all training classes (selected by few-shot val);
    the same as ``egnn train --model classifier`` from the defaults of ``egnn.pretrain.PRETRAIN_DEFAULTS``."""
    from egnn.config import read_config_file
    from egnn.pretrain import pretrain as run, pretrain_config
    from egnn.provenance import provenance

    cfg = pretrain_config(read_config_file(config) if config else {}, tasks_per_batch=batch_size, **overrides)
    result = run(cfg, resume=resume, progress=not quiet, provenance=provenance())
    for tested in result["test"]:
        typer.echo(f"test (nearest prototypes of the features): {tested}")
    typer.echo(f"pretrained {cfg.backbone}: best validation {cfg.way}-way {cfg.shot}-shot accuracy "
               f"{100 * result['best_val_acc']:.2f}% -> {result['checkpoint']}")


META_TRANSFER_KEYS = ("dataset", "data_root", "way", "shot", "query", "hard_tasks", "inner_steps", "inner_lr",
                      "inner_init", "iterations", "tasks_per_batch", "lr", "val_every", "val_episodes",
                      "test_episodes", "eval_batch", "seed", "eval_seed", "threads", "device", "data_on_device",
                      "precision", "patience", "max_minutes", "out")


@app.command("meta-transfer")
@user_errors
@config_flags(*META_TRANSFER_KEYS, help={
    "hard_tasks": "MTL's hard-task meta-batch (HT; default on here).",
    "lr": "Adam learning rate of the SS parameters."})
def meta_transfer(
    pretrained: str = typer.Option(..., help="best.pt of egnn pretrain: its weights are frozen."),
    config: Optional[Path] = typer.Option(None, help="YAML config; flags override its keys."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    overrides: dict = None,
) -> None:
    """MTL stage 2: meta-train Scaling-and-Shifting on a frozen pretrained backbone with MTL's own classifier."""
    from egnn.config import make_config, read_config_file
    from egnn.provenance import provenance
    from egnn.trainer import train as run

    defaults = {"out": "runs/meta_transfer", "hard_tasks": True}  # MTL's recipe: with hard tasks
    cfg = make_config({**defaults, **(read_config_file(config) if config else {})}, **overrides,
                      model="mtl", backbone_checkpoint=pretrained, transductive=False)
    for result in run(cfg, resume=resume, progress=not quiet, provenance=provenance()):
        typer.echo(f"test: {result}")
    typer.echo(f"meta-transfer run saved in {cfg.out}; use it with: egnn train --backbone resnet12-mtl "
               f"--backbone-checkpoint {cfg.out}/best.pt")


@app.command("eval")
@user_errors
def evaluate(
    checkpoint: Path = typer.Option(..., help="best.pt or last.pt of a run."),
    dataset: Optional[str] = typer.Option(None, help="Default: the checkpoint's dataset."),
    data_root: Optional[str] = typer.Option(None),
    split: str = typer.Option("test", help="train, val or test."),
    way: Optional[int] = typer.Option(None),
    shot: Optional[int] = typer.Option(None),
    query: Optional[int] = typer.Option(None, help="Queries per class; default: the checkpoint's eval-query."),
    label_ratio: Optional[float] = typer.Option(None),
    unlabeled: Optional[str] = typer.Option(None, help="keep or drop the unlabeled supports."),
    transductive: Optional[bool] = typer.Option(None, "--transductive/--no-transductive"),
    episodes: int = typer.Option(1000, help="Fixed evaluation episodes."),
    seed: Optional[int] = typer.Option(None, help="Episode seed; default: the checkpoint's eval-seed."),
    batch: int = typer.Option(50, help="Episodes per forward pass."),
    device: str = typer.Option("auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N."),
    precision: Optional[str] = typer.Option(None, help="fp32, bf16 or fp16 (CUDA); default: the checkpoint's."),
    knn: Optional[int] = typer.Option(None, help="Sparse kNN graphs for transductive EGNN (0: fully connected)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the result as JSON here."),
) -> None:
    """Evaluate a checkpoint on fixed episodes; prints mean ± 95% CI with its protocol."""
    from egnn.config import make_config
    from egnn.data import load_dataset
    from egnn.evaluation import evaluate_config as run
    from egnn.models import load_trained, use_sparse_graphs

    if split not in ("train", "val", "test"):
        raise UserError(f"--split must be train, val or test, got '{split}'")
    method, cfg = load_trained(checkpoint, device)
    if knn is not None:
        use_sparse_graphs(method, knn, checkpoint, cfg.model)
    proto = make_config(cfg.to_dict(), dataset=dataset, data_root=data_root, test_way=way, shot=shot, eval_query=query,
                        label_ratio=label_ratio, unlabeled=unlabeled, transductive=transductive, eval_seed=seed,
                        test_episodes=episodes, eval_batch=batch, device=device, precision=precision)
    splits = load_dataset(proto.dataset, proto.data_root, proto.image_size)
    result = run(method, splits[split], proto, proto.test_episodes, device=device)
    typer.echo(str(result))
    if output is not None:
        from egnn.data.paths import atomic_write_text
        from egnn.provenance import provenance

        atomic_write_text(output, json.dumps({**provenance(), "checkpoint": str(checkpoint), **result.to_dict()},
                                             indent=2) + "\n")


@app.command()
@user_errors
def visualize(
    checkpoint: Path = typer.Option(..., help="best.pt of an EGNN run."),
    dataset: Optional[str] = typer.Option(None, help="Default: the checkpoint's dataset."),
    data_root: Optional[str] = typer.Option(None),
    split: str = typer.Option("test"),
    way: Optional[int] = typer.Option(None),
    shot: Optional[int] = typer.Option(None),
    query: Optional[int] = typer.Option(None, help="Queries per class; default: the checkpoint's eval-query."),
    label_ratio: Optional[float] = typer.Option(None),
    transductive: Optional[bool] = typer.Option(None, "--transductive/--no-transductive"),
    episode: int = typer.Option(0, help="Index of the fixed evaluation episode to draw."),
    seed: Optional[int] = typer.Option(None, help="Episode seed; default: the checkpoint's eval-seed."),
    out: Path = typer.Option(Path("viz"), help="Output folder."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Draw one episode's edge labels after each EGNN layer (PNG per layer, grid, GIF, summary.json)."""
    from dataclasses import asdict

    from egnn.config import make_config
    from egnn.data import load_dataset
    from egnn.data.paths import atomic_write_text
    from egnn.episodes import EpisodeSampler
    from egnn.methods import EGNNMethod
    from egnn.models import load_trained
    from egnn.visualize import episode_graphs, render, summarize

    method, cfg = load_trained(checkpoint, make_config(device=device).device)
    if not isinstance(method, EGNNMethod):
        raise UserError(f"{checkpoint} holds a '{cfg.model}' model, which has no edge labels: pass an EGNN checkpoint")
    if split not in ("train", "val", "test") or episode < 0:
        raise UserError("--split must be train, val or test and --episode at least 0")
    p = make_config(cfg.to_dict(), dataset=dataset, data_root=data_root, test_way=way, shot=shot, eval_query=query,
                    label_ratio=label_ratio, transductive=transductive, eval_seed=seed)
    splits = load_dataset(p.dataset, p.data_root, p.image_size)
    ep = EpisodeSampler(splits[split], p.test_way or p.way, p.shot, p.eval_query, seed=p.eval_seed,
                        label_ratio=p.label_ratio).episode(episode)
    graphs = episode_graphs(method, ep, transductive=p.transductive)
    files = render(graphs, out)
    summary = [asdict(summarize(g)) for g in graphs]
    atomic_write_text(out / "summary.json", json.dumps({"checkpoint": str(checkpoint), "episode": episode,
                                                        "transductive": p.transductive, "stages": summary},
                                                       indent=2) + "\n")
    for s in summary:
        typer.echo(f"{s['stage']:>8s}: within {s['within_class_similarity']:.3f}  across "
                   f"{s['across_class_similarity']:.3f}  query acc {s['query_accuracy']:.3f}  edge acc "
                   f"{s['edge_accuracy']:.3f}  clusters {s['clusters']}  ARI {s['adjusted_rand_index']:.3f}")
    typer.echo(f"wrote {files['grid']}, {files['gif']} and {len(graphs)} stage PNGs in {out}")


@app.command()
@user_errors
def compare(
    config: Path = typer.Option(..., help="Comparison spec, e.g. configs/compare_omniglot_5w1s.yaml."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Only train and test this model (repeatable), "
                                             "no report: parts of a comparison in parallel processes."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train or load several models and evaluate them on identical episodes, with paired differences."""
    from egnn.compare import compare as run, load_spec, table, write

    started = time.time()
    spec = load_spec(config)
    summary = run(spec, progress=not quiet, only=only)
    if only:
        typer.echo(f"trained and tested {', '.join(only)}; run without --only to report")
        return
    from egnn.provenance import provenance

    summary.update(provenance(started=started))
    typer.echo(table(summary))
    files = write(summary, spec.get("output", f"results/compare_{config.stem}"))
    typer.echo(f"wrote {', '.join(str(f) for f in files.values())}")


@app.command()
@user_errors
def sweep(
    spec: Path = typer.Argument(..., help="Sweep spec, e.g. configs/sweep_query_protocol_5w.yaml."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Only train and test the runs with this name or "
                                             "shell pattern (repeatable), no report: parts of a sweep in parallel."),
    runs: Optional[Path] = typer.Option(None, help="Where the runs train (default: the spec's runs_dir, else "
                                        "runs/sweep/<spec name>)."),
    set_values: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE (repeatable): a config key "
                                                   "for every run, over the spec's base, runs and grid."),
    output: Optional[Path] = typer.Option(None, help="The report's path prefix (default: the spec's output)."),
    list_runs: bool = typer.Option(False, "--list", help="Print the names of the runs, one per line, and stop "
                                   "(e.g. to start one --only process per run)."),
    report: bool = typer.Option(False, "--report", help="With --only: report on those runs alone (JSON, Markdown, "
                                "PNG), e.g. the part of a sweep one GPU call could train."),
    merge: bool = typer.Option(False, "--merge", help="Add the rows of these runs to the spec's existing report, "
                               "keeping its other rows, each with the command and revision that made it: a sweep "
                               "whose parts ran in different sessions or on different machines, reported whole."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train every run of a grid of configs, test all on the same fixed episodes, write JSON, Markdown and PNG."""
    from egnn.sweep import (chosen_runs, kept_rows, load_sweep, merge as merge_into, parse_set, sweep as run, table,
                            write)

    started = time.time()
    parsed = load_sweep(spec, parse_set(set_values or []))
    if list_runs:
        typer.echo("\n".join(chosen_runs(parsed, only)))
        return
    if runs is not None:
        parsed["runs_dir"] = str(runs)
    if output is not None:
        parsed["output"] = str(output)
    previous = Path(parsed["output"]).with_suffix(".json")
    kept = kept_rows(parsed, previous, chosen_runs(parsed, only)) if merge else {}  # checked before training
    summary = run(parsed, progress=not quiet, only=only)
    if only and not (report or merge):
        typer.echo(f"trained and tested {', '.join(summary['runs'])} in {parsed['runs_dir']}; run without --only "
                   f"(or with --report or --merge) to report")
        return
    from egnn.provenance import provenance

    made = provenance(started=started)
    if merge:
        summary = merge_into(summary, parsed, kept, {k: made[k] for k in made if k != "wall_seconds"})
        if kept:
            typer.echo(f"kept from {previous}: {', '.join(kept)}")
    summary.update(made)
    typer.echo(table(summary))
    files = write(summary, parsed["output"])
    typer.echo(f"wrote {', '.join(str(f) for f in files.values())}")


@app.command("label-ratio")
@user_errors
def label_ratio(
    config: Path = typer.Option(..., help="Sweep spec, e.g. configs/label_ratio_omniglot_20w5s.yaml."),
    runs: Path = typer.Option(Path("runs/label_ratio"), help="Where the sweep's runs are trained or resumed."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Only train this model of the spec (repeatable), "
                                             "no test or report: to train a sweep in parallel processes."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Semi-supervised sweep over label ratios, models and modes on identical test episodes."""
    from egnn.label_ratio import label_ratio_sweep, load_sweep, table, write

    started = time.time()
    spec = load_sweep(config)
    summary = label_ratio_sweep(spec, progress=not quiet, runs=runs, only=only)
    if only:
        typer.echo(f"trained {', '.join(only)} in {runs}; run without --only to test and report")
        return
    from egnn.provenance import provenance

    summary.update(provenance(started=started))
    typer.echo(table(summary))
    files = write(summary, spec.get("output", f"results/label_ratio_{summary['dataset']}"))
    typer.echo(f"wrote {', '.join(str(f) for f in files.values())}")


@app.command()
@user_errors
def predict(
    checkpoint: Path = typer.Option(..., help="best.pt of a run (egnn train, or egnn import-reference)."),
    support: Path = typer.Option(..., help="One subfolder per class, each with a few example images."),
    query: Path = typer.Option(..., help="The images to label (subfolders included)."),
    out: Path = typer.Option(Path("predictions.csv"), help="CSV: path, predicted, confidence, runner_up, "
                             "runner_up_confidence."),
    transductive: Optional[bool] = typer.Option(None, "--transductive/--no-transductive",
                                                help="Label all queries together; default: the checkpoint's mode."),
    knn: Optional[int] = typer.Option(None, help="Transductive on sparse kNN graphs, for thousands of images "
                                      "(0: one dense graph); default: the checkpoint's."),
    query_batch: int = typer.Option(256, help="Queries per forward pass, non-transductive."),
    report: Optional[Path] = typer.Option(None, help="Also write DIR/contact_sheet.png: supports and predicted "
                                          "queries per class, least confident flagged."),
    flag: float = typer.Option(0.1, help="Fraction of queries flagged in the report (least confident)."),
    device: str = typer.Option("auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N."),
    unknown: bool = typer.Option(False, "--unknown", help="Answer 'unknown' for images of none of the classes "
                                 "(threshold calibrated on the checkpoint's validation classes, saved beside it)."),
    unknown_rate: float = typer.Option(0.05, help="False-unknown rate the threshold is calibrated to."),
    unknown_threshold: Optional[float] = typer.Option(None, help="Use this known-score threshold instead."),
    suggest: int = typer.Option(0, help="Also name this many images to label next (CSV column 'suggested')."),
    data_root: Optional[str] = typer.Option(None, help="Where the checkpoint's dataset is, to calibrate "
                                            "--unknown; default $EGNN_DATA."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Label a folder of images from a few labeled examples per class; one CSV row per image."""
    from egnn.predict import contact_sheet, predict as run
    from egnn.unknowns import check_rate

    if not 0 <= flag <= 1:
        raise UserError(f"--flag is a fraction of the queries in [0, 1], got {flag}")
    check_rate(unknown_rate, "--unknown-rate")
    result = run(checkpoint, support, query, transductive=transductive, knn=knn, query_batch=query_batch,
                 device=device, progress=not quiet and sys.stderr.isatty(), unknown=unknown or unknown_threshold
                 is not None, rate=unknown_rate, threshold=unknown_threshold, suggest=suggest, data_root=data_root)
    result.write_csv(out)
    typer.echo(f"{result}; wrote {out}")
    if report is not None:
        drawn = contact_sheet(result, report / "contact_sheet.png", flag_fraction=flag)
        typer.echo(f"wrote {report / 'contact_sheet.png'} ({len(drawn['flagged'])} flagged, confidence <= "
                   f"{drawn['flag_threshold']:.3f})")


@app.command()
@user_errors
def calibrate(
    checkpoint: Path = typer.Option(..., help="best.pt of a run."),
    way: str = typer.Option("5", help="Classes the labeled examples will have; a list calibrates each: 5,10,20."),
    shot: str = typer.Option("1", help="Labeled examples per class; a list calibrates each: 1,5."),
    rate: float = typer.Option(0.05, help="False-unknown rate: the share of images of known classes called unknown."),
    episodes: int = typer.Option(200, help="Open-set validation episodes per shape."),
    transductive: Optional[bool] = typer.Option(None, "--transductive/--no-transductive",
                                                help="The mode predict will use; default: the checkpoint's."),
    data_root: Optional[str] = typer.Option(None, help="Dataset root; default $EGNN_DATA."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Calibrate the unknown threshold of egnn predict --unknown on the checkpoint's validation classes."""
    from egnn.classifier import FewShotClassifier
    from egnn.data import load_dataset
    from egnn.unknowns import calibrate as run, calibration_file, check_rate, save_calibration

    ways, shots = parse_int_list(way, "--way"), parse_int_list(shot, "--shot")
    check_rate(rate, "--rate")
    clf = FewShotClassifier.load(checkpoint, device, transductive)
    val = load_dataset(clf.cfg.dataset, data_root, clf.size)["val"]
    for w in ways:
        for k in shots:
            found = run(clf, val, w, k, rate, episodes=episodes)
            save_calibration(checkpoint, found)
            typer.echo(f"{found.key()}: threshold {found.threshold:.4f} ({found.known_queries} known queries of "
                       f"{found.split})")
    typer.echo(f"wrote {calibration_file(checkpoint)}")


@app.command("app")
@user_errors
def app_command(
    checkpoint: str = typer.Option("", help="best.pt of a run (can also be chosen on the page)."),
    support: str = typer.Option("", help="Example images: one subfolder per class."),
    images: str = typer.Option("", help="The folder of images to label."),
    out: Path = typer.Option(Path("egnn_labels"), help="Where labels.csv (and the page's cache) is written."),
    port: int = typer.Option(7860, help="Local port of the page."),
    suggest: int = typer.Option(5, help="Images suggested for labeling next after each pass."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    browser: bool = typer.Option(True, "--browser/--no-browser", help="Open the page in a browser."),
) -> None:
    """A local web page to label a folder: accept or correct the model's labels, the rest relabels (Gradio)."""
    from egnn.app import launch

    launch(checkpoint, support, images, str(out), port, suggest, device, open_browser=browser)


@app.command("import-reference")
@user_errors
def import_reference(
    checkpoint: Path = typer.Argument(..., help="A checkpoint saved by the original EGNN code (khy0809/fewshot-egnn)."),
    out: Path = typer.Option(..., help="Run directory to create (best.pt, config.yaml, imported.json)."),
    dataset: str = typer.Option("omniglot", help="What it was trained on: omniglot (as ../shared/reference's driver "
                                "builds it), mini-imagenet or tiered-imagenet."),
    way: int = typer.Option(5, help="Classes per episode it was trained with (the default for egnn eval)."),
    shot: int = typer.Option(1, help="Shots it was trained with."),
    transductive: bool = typer.Option(True, "--transductive/--no-transductive", help="Its mode."),
) -> None:
    """Turn a model trained by the original EGNN code into an egnn run, for eval, visualize and compare."""
    from egnn.reference import import_reference as run

    from egnn.provenance import provenance as made_by

    provenance = made_by()
    best = run(checkpoint, out, dataset=dataset, way=way, shot=shot, transductive=transductive, provenance=provenance)
    typer.echo(f"imported {checkpoint} as {best}: egnn eval --checkpoint {best}")


@app.command()
@user_errors
def datasets(data_root: Optional[str] = typer.Option(None, help="Dataset root; default $EGNN_DATA.")) -> None:
    """List the datasets, where each is looked for, and whether it is there."""
    from egnn.data import DATASETS, data_root as resolve

    root = resolve(data_root)
    for info in sorted(DATASETS.values(), key=lambda i: i.name):
        path = info.where(root)
        if path is None:
            status = "embedded" if info.embedded else "your --data-root"
        else:
            status = f"present at {path}" if path.is_dir() else f"missing at {path} (downloads where a network exists)"
        typer.echo(f"{info.name:10s} {status}\n{'':10s} {info.description}")


def main() -> None:
    """Entry point: flag errors from click become one line and exit code 2, like every other user error."""
    try:  # recent typer vendors click
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover
        from click.exceptions import UsageError

    try:
        code = app(standalone_mode=False, prog_name="egnn")
    except UsageError as exc:
        if not exc.format_message():  # bare `egnn`: the help was the answer
            raise SystemExit(0) from None
        command = exc.ctx.command_path if exc.ctx else "egnn"
        typer.echo(f"error: {exc.format_message()} (see {command} --help)", err=True)
        raise SystemExit(2) from None
    except typer.Abort:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
