"""Speed and memory of egnn, and of the original EGNN code beside it in the same command, on this machine.

The side-by-side rows import the original (``--ref-dir``, unedited) at run time and time both codes on the same
random 84x84x3 images, 40 tasks per iteration, 1 query per class: the original's own ``ModelTrainer.train()``
and ``eval()`` against egnn's ``Trainer.step()`` and ``evaluate()``, end to end and compute alone (a fixed
batch), each code's data loading on its own, medians of repeats after warm-up, synchronised on CUDA, peak
memory from ``torch.cuda.max_memory_allocated`` (max RSS on the CPU). The other rows are egnn alone: the graph
network on random embeddings, its FLOP floor, the sampler, and dense against sparse graphs up to 5000 nodes.
Every measurement runs in a fresh subprocess, so its peak memory is its own.

    python scripts/bench_speed.py --ref-dir ../shared/reference/fewshot-egnn            # CPU, everything
    python scripts/bench_speed.py --ref-dir ../shared/reference/fewshot-egnn --device cuda \
        --kinds ref_train,ours_train,ref_eval,ours_eval --out results/bench_gpu.json     # the GPU rows
    python scripts/bench_speed.py --quick --ref-dir ../shared/reference/fewshot-egnn     # tiny sizes: checks the script
    python scripts/bench_speed.py --kinds roofline,graph   # re-measure some kinds, keep the other rows
    python scripts/bench_speed.py --ref-dir ../shared/reference/fewshot-egnn --kinds ref_train,ours_train \
        --modes transductive --malloc tuned --out results/bench_speed_malloc_tuned.json   # both codes, same allocator
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {"5w1s": (5, 1), "5w5s": (5, 5)}


# -- measurements (each runs in its own process) ------------------------------------------------------------
def _episodes(way, shot, query, tasks, size, channels=3, seed=0, full_edges=True):
    import torch

    from egnn.episodes import Episode
    from egnn.graph import collate

    g = torch.Generator().manual_seed(seed)
    eps = []
    for _ in range(tasks):
        labels = torch.cat([torch.arange(way).repeat_interleave(shot), torch.arange(way).repeat_interleave(query)])
        images = torch.randint(0, 256, (labels.numel(), channels, size, size), generator=g, dtype=torch.uint8)
        eps.append(Episode(images, labels, torch.ones(way * shot, dtype=torch.bool), torch.arange(way), way, shot, query))
    return collate(eps, full_edges=full_edges)


def _method(image_size=84, symmetric=True, knn=0, channels=3):
    import torch

    from egnn.backbones import create_backbone
    from egnn.methods.egnn import EGNNMethod

    torch.manual_seed(0)
    backbone = create_backbone("conv4", in_channels=channels, image_size=image_size, out_features=128)
    method = EGNNMethod(backbone, num_layers=3, node_features=96, edge_features=96, knn=knn)
    for m in method.gnn.edge_updates:
        m.symmetric = symmetric
    return method


def _timeit(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def graph_row(setting, transductive, symmetric=True, repeat=5, tasks=40, precision="fp32"):
    """Graph network only: random 128-d embeddings in, edge-labeling loss, backward, Adam."""
    import torch

    from egnn.graph import DenseEpisodes
    from egnn.losses import edge_labeling_loss
    from egnn.evaluation import autocast

    way, shot = SETTINGS[setting]
    batch = _episodes(way, shot, 1, tasks, size=2, channels=1)
    dense = DenseEpisodes.from_batch(batch)
    method = _method(symmetric=symmetric)
    opt = torch.optim.Adam(method.gnn.parameters(), 1e-3, weight_decay=1e-6)
    v = torch.randn(tasks, dense.node_mask.shape[1], 128, generator=torch.Generator().manual_seed(1))
    target, mask = dense.edge_target(), method.loss_mask(dense, transductive)

    def train_step():
        with autocast("cpu", precision):
            edges = method.propagate(v, dense, transductive)
            loss = edge_labeling_loss(edges[..., 0], target, mask, method.layer_weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def eval_step():
        with torch.inference_mode(), autocast("cpu", precision):
            method.propagate(v, dense, transductive)

    method.train()
    train = _timeit(train_step, repeat)
    method.eval()
    return {"train_s": train, "eval_s": _timeit(eval_step, repeat)}


def roofline_row(setting, transductive, tasks=40):
    """Matrix-multiply work of one graph-network iteration (forward + backward, counted by torch's
    FlopCounterMode) and the time it needs at this machine's measured matmul peak: a floor for any
    implementation of the same math in float32, however well fused."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from egnn.graph import DenseEpisodes
    from egnn.losses import edge_labeling_loss

    way, shot = SETTINGS[setting]
    dense = DenseEpisodes.from_batch(_episodes(way, shot, 1, tasks, size=2, channels=1))
    method = _method()
    v = torch.randn(tasks, dense.node_mask.shape[1], 128, generator=torch.Generator().manual_seed(1))
    target, mask = dense.edge_target(), method.loss_mask(dense, transductive)
    with FlopCounterMode(display=False) as train:
        edges = method.propagate(v, dense, transductive)
        edge_labeling_loss(edges[..., 0], target, mask, method.layer_weights).backward()
    method.eval()
    with FlopCounterMode(display=False) as infer, torch.inference_mode():
        method.propagate(v, dense, transductive)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    peak = 2 * 2048 ** 3 / _timeit(lambda: a @ b, 10)
    x, w = torch.randn(17400, 96), torch.randn(96, 192)  # the edge MLP's first layer at 5w5s transductive
    edge_mlp = 2 * 17400 * 96 * 192 / _timeit(lambda: x @ w, 20)
    flops = train.get_total_flops()
    return {"train_gflop": flops / 1e9, "eval_gflop": infer.get_total_flops() / 1e9, "peak_gflops": peak / 1e9,
            "edge_mlp_gflops": edge_mlp / 1e9, "train_floor_s": flops / peak}


def full_row(setting, transductive, size=84, channels=3, repeat=3, tasks=40, precision="fp32"):
    """Conv-4 + EGNN on uint8 images (84x84x3 as the reference rows; 28x28x1 for Omniglot): one meta-training
    iteration (sampled episodes in, forward, loss, backward, Adam)."""
    import torch

    from egnn.evaluation import autocast

    way, shot = SETTINGS[setting]
    batch = _episodes(way, shot, 1, tasks, size=size, channels=channels)
    method = _method(image_size=size, channels=channels)
    opt = torch.optim.Adam(method.parameters(), 1e-3, weight_decay=1e-6)

    def step():
        with autocast("cpu", precision):
            out = method(batch, transductive=transductive)
            loss = method.loss(out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    method.train()
    seconds = _timeit(step, repeat, warmup=1)
    return {"train_s": seconds, "images_per_s": batch.x.shape[0] / seconds}


def eval15_row(setting, transductive, episodes=10):
    """Full model at test time, 15 queries per class, one episode per forward pass, inference mode."""
    import torch

    way, shot = SETTINGS[setting]
    batch = _episodes(way, shot, 15, 1, size=84)
    method = _method().eval()

    def step():
        with torch.inference_mode():
            method(batch, transductive=transductive)

    return {"seconds_per_episode": _timeit(step, episodes, warmup=1)}


def scale_row(nodes, graph, k=20, repeat=3):
    """One transductive 5-way 5-shot episode of ``nodes`` nodes, graph network only, inference."""
    import torch

    way, shot = 5, 5
    query = max(1, (nodes - way * shot) // way)
    batch = _episodes(way, shot, query, 1, size=2, channels=1, full_edges=graph == "dense")
    n = batch.y.numel()
    method = _method(knn=k if graph == "sparse" else 0).eval()
    v = torch.randn(n, 128, generator=torch.Generator().manual_seed(1))

    def step():
        with torch.inference_mode():
            if graph == "sparse":
                from egnn.graph import edge_init, knn_edges

                ei = knn_edges(v, batch.batch, k, batch.labeled_mask, k)
                method.gnn.forward_sparse(v, ei, edge_init(ei, batch.y, batch.labeled_mask))
            else:
                from egnn.graph import DenseEpisodes

                dense = DenseEpisodes.from_batch(batch)
                method.gnn(v[None], dense.init_edges, dense.node_mask)

    return {"nodes": n, "seconds": _timeit(step, repeat, warmup=1)}


def big_episode_row(k=20, checkpoint=None):
    """A 5000-node transductive episode, images to predictions, on the sparse path: Omniglot test classes
    (250-way 5-shot 15-query) when $EGNN_DATA holds Omniglot, random 28x28 images otherwise."""
    import torch

    from egnn.graph import collate

    way, shot, query = 250, 5, 15
    source = "random"
    try:
        from egnn.data import load_dataset
        from egnn.episodes import EpisodeSampler

        split = load_dataset("omniglot")["test"]
        batch = collate([EpisodeSampler(split, way, shot, query, seed=0).episode(0)], full_edges=False)
        source = "omniglot/test"
    except Exception:  # no Omniglot here: the same shapes from random pixels
        batch = _episodes(way, shot, query, 1, size=28, channels=1, full_edges=False)
    if checkpoint:
        from egnn.models import load_trained

        method, _ = load_trained(checkpoint)
        source += f", {checkpoint}"
    else:
        method = _method(image_size=28, channels=1)
    method.knn = k
    method.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        out = method(batch, transductive=True)
    seconds = time.perf_counter() - start
    acc = float((out.logits.argmax(-1) == out.query_labels).float().mean())
    return {"nodes": int(batch.y.numel()), "edges": int(out.extras["edge_index"].shape[1]), "seconds": seconds,
            "accuracy": acc, "source": source, "knn": k}


def sampler_row(size, channels, augmentation="crop-flip", seconds=5.0):
    """Images per second from in-memory uint8 images through EpisodeSampler, collate and ``augmentation``."""
    import torch

    from egnn.data.transforms import augment
    from egnn.episodes import EpisodeSampler
    from egnn.graph import collate

    split = _random_split(classes=64, per_class=100, size=size, channels=channels)
    sampler = EpisodeSampler(split, 5, 5, 1, seed=0)
    done, it, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = collate(sampler.batch(it * 40, 40))
        batch.x = augment(batch.x, augmentation, torch.Generator().manual_seed(it))
        done += batch.x.shape[0]
        it += 1
    return {"images_per_s": done / (time.perf_counter() - start)}


# -- side by side with the original code (imported at run time from --ref-dir; nothing of it is copied) -------
def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def _median_time(fn, repeat, warmup, device):
    """Median seconds of ``repeat`` calls after ``warmup``, synchronised with the device around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _reset_peak(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device):
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _random_split(classes=64, per_class=20, size=84, channels=3, seed=0):
    """The images both codes read: ``classes x per_class`` random uint8 images (speed does not depend on pixels)."""
    import torch

    from egnn.data import FewShotSplit

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (classes * per_class, channels, size, size), generator=g, dtype=torch.uint8)
    return FewShotSplit(images, torch.arange(classes).repeat_interleave(per_class), [f"c{c}" for c in range(classes)])


def _reference(ref_dir, device, way, shot, tasks, transductive, work):
    """The original's ``ModelTrainer`` on ``device`` with its Conv-4 (emb 128) and GraphNetwork (96/96, 3 layers),
    its ``MiniImagenetLoader`` reading a pickle of the same random images (written to ``work``), validation
    and logging pushed past the run."""
    import pickle

    import torch

    from golden_reference import import_reference

    ref_train, tt = import_reference(ref_dir)
    a = tt.arg
    a.device = torch.device(device)
    a.dataset, a.num_ways, a.num_shots, a.num_unlabeled, a.num_layers = "mini", way, shot, 0, 3
    a.meta_batch_size, a.test_batch_size = tasks, 10
    a.transductive = a.train_transductive = a.test_transductive = transductive
    a.seed, a.num_gpus = 222, 1
    a.num_ways_train = a.num_ways_test = way
    a.num_shots_train = a.num_shots_test = shot
    a.num_edge_features = a.num_node_features = 96
    a.emb_size = 128
    a.train_iteration, a.test_iteration, a.test_interval, a.log_step = 0, 10, 10 ** 9, 10 ** 9
    a.lr, a.grad_clip, a.weight_decay, a.dec_lr, a.dropout = 1e-3, 5, 1e-6, 15000, 0.0
    a.experiment, a.log_dir = "bench", str(work) + "/"
    split = _random_split()
    per_class = {c: [split.images[i].permute(1, 2, 0).numpy() for i in range(c * 20, c * 20 + 20)]
                 for c in range(split.num_classes)}
    folder = Path(work) / "mini-imagenet" / "compacted_datasets"
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("train", "test"):
        with open(folder / f"mini_imagenet_{part}.pickle", "wb") as f:
            pickle.dump(per_class, f)
    loaders = {p: ref_train.MiniImagenetLoader(root=str(work), partition=p) for p in ("train", "test")}
    torch.manual_seed(0)
    enc = ref_train.EmbeddingImagenet(emb_size=128)
    gnn = ref_train.GraphNetwork(in_features=128, node_features=96, edge_features=96, num_layers=3, dropout=0.0)
    trainer = ref_train.ModelTrainer(enc_module=enc, gnn_module=gnn, data_loader=loaders)
    trainer.one_hot_encode = lambda n, idx: torch.eye(n, device=idx.device)[idx]  # its CPU eye() fails on CUDA
    return trainer, tt, loaders


class _FixedLoader:
    """The original's ``get_task_batch`` answering with one batch it drew before: its compute without its loading."""

    def __init__(self, loader, **kw):
        self.batch = loader.get_task_batch(**kw)

    def get_task_batch(self, **kw):
        return self.batch


def ref_train_row(setting, transductive, ref_dir, device="cpu", tasks=40, repeat=3, warmup=1):
    """The original's own ``ModelTrainer.train()``: seconds per meta-training iteration end to end (its loader
    included) and its compute alone (a fixed batch), its loader's share, and peak memory."""
    import tempfile

    way, shot = SETTINGS[setting]
    with tempfile.TemporaryDirectory() as work:
        trainer, tt, loaders = _reference(ref_dir, device, way, shot, tasks, transductive, work)

        def iterations(n):
            tt.arg.train_iteration = trainer.global_step + n
            trainer.train()

        _reset_peak(device)
        end_to_end = _median_time(lambda: iterations(1), repeat, warmup, device)
        loading = _median_time(lambda: loaders["train"].get_task_batch(num_tasks=tasks, num_ways=way, num_shots=shot,
                                                                       seed=1), repeat, 1, device)
        trainer.data_loader["train"] = _FixedLoader(loaders["train"], num_tasks=tasks, num_ways=way, num_shots=shot)
        compute = _median_time(lambda: iterations(1), repeat, 1, device)
        peak = _peak_gb(device)
    return {"code": "original", "train_s": end_to_end, "compute_s": compute, "loading_s": loading, "peak_gb": peak}


def ref_eval_row(setting, transductive, ref_dir, device="cpu", episodes=20):
    """The original's ``ModelTrainer.eval()`` (its only protocol: 1 query per class, 10 episodes per batch):
    seconds per test episode, its loader included."""
    import tempfile

    import torch

    way, shot = SETTINGS[setting]
    with tempfile.TemporaryDirectory() as work:
        trainer, tt, _ = _reference(ref_dir, device, way, shot, 40, transductive, work)
        tt.arg.test_iteration = episodes

        def run():
            with torch.no_grad():
                trainer.eval(partition="test", log_flag=False)

        seconds = _median_time(run, 3, 1, device) / episodes
    return {"code": "original", "query": 1, "seconds_per_episode": seconds}


def ours_train_row(setting, transductive, device="cpu", tasks=40, repeat=3, warmup=1, precision="fp32"):
    """egnn's own ``Trainer.step()`` on the same images (sampling, collate, random crop, transfer, forward, loss,
    backward, Adam), its compute alone on a fixed batch already on the device, its loading alone, peak memory."""
    import tempfile

    import torch

    from egnn.config import make_config
    from egnn.data.transforms import augment
    from egnn.graph import collate
    from egnn.evaluation import autocast
    from egnn.trainer import Trainer

    way, shot = SETTINGS[setting]
    split = _random_split()
    with tempfile.TemporaryDirectory() as out:
        cfg = make_config(dataset="mini-imagenet", way=way, shot=shot, query=1, query_max=0, transductive=transductive,
                          tasks_per_batch=tasks, augment="crop", device=device, precision=precision, out=out,
                          dropout=0.0)
        trainer = Trainer(cfg, splits={"train": split, "val": split, "test": split})
        _reset_peak(device)
        end_to_end = _median_time(trainer.step, repeat, warmup, device)

        def load():
            batch = collate(trainer.sampler.batch(0, tasks))
            batch.x = augment(batch.x, "crop", torch.Generator().manual_seed(0))
            return batch.to(trainer.device)

        loading = _median_time(load, repeat, 1, device)
        batch, method = load(), trainer.method

        def step():
            with autocast(trainer.device, precision):
                loss = method.loss(method(batch, transductive=transductive))
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()

        compute = _median_time(step, repeat, 1, device)
        peak = _peak_gb(device)
    return {"code": "egnn", "train_s": end_to_end, "compute_s": compute, "loading_s": loading, "peak_gb": peak}


def ours_eval_row(setting, transductive, device="cpu", episodes=20, query=1):
    """egnn's ``evaluate()`` on the same images: seconds per test episode, sampling included."""
    import torch

    from egnn.backbones import create_backbone
    from egnn.methods.egnn import EGNNMethod
    from egnn.evaluation import evaluate

    way, shot = SETTINGS[setting]
    split = _random_split()
    torch.manual_seed(0)
    method = EGNNMethod(create_backbone("conv4", in_channels=3, image_size=84, out_features=128)).to(device).eval()
    seconds = _median_time(lambda: evaluate(method, split, way=way, shot=shot, query=query, episodes=episodes,
                                            transductive=transductive, batch_size=10, device=device), 3, 1, device)
    return {"code": "egnn", "query": query, "seconds_per_episode": seconds / episodes}


def side_by_side_table(rows: list[dict]) -> str:
    """Original against egnn, measured in this run: training and evaluation, with speed-ups."""
    lines = ["| setting (84x84x3, 40 tasks, 1 query/class) | original s/it (compute; loading) | egnn s/it (compute; "
             "loading) | speed-up end to end | speed-up compute | peak GB original / egnn |", "|---|---|---|---|---|---|"]
    pick = lambda kind, code, setting, trans, **kw: next((r for r in rows if r["kind"] == kind and r.get("code") == code  # noqa: E731
                                                          and r["setting"] == setting and r["transductive"] == trans
                                                          and all(r.get(k) == v for k, v in kw.items())
                                                          and "error" not in r), None)
    for setting in SETTINGS:
        for trans in (True, False):
            ref, ours = pick("ref_train", "original", setting, trans), pick("ours_train", "egnn", setting, trans)
            if ref and ours:
                mode = "transductive" if trans else "non-transductive"
                lines.append(f"| train {setting} {mode} | {ref['train_s']:.3f} ({ref['compute_s']:.3f}; "
                             f"{ref['loading_s']:.3f}) | {ours['train_s']:.3f} ({ours['compute_s']:.3f}; "
                             f"{ours['loading_s']:.3f}) | {ref['train_s'] / ours['train_s']:.1f}x | "
                             f"{ref['compute_s'] / ours['compute_s']:.1f}x | {ref['peak_gb']:.2f} / {ours['peak_gb']:.2f} |")
    lines += ["", "| evaluation, s/episode | original, 1 query/class | egnn, 1 query/class | speed-up | egnn, 15 queries/class |",
              "|---|---|---|---|---|"]
    for setting in SETTINGS:
        for trans in (True, False):
            ref = pick("ref_eval", "original", setting, trans)
            ours, ours15 = pick("ours_eval", "egnn", setting, trans, query=1), pick("ours_eval", "egnn", setting, trans, query=15)
            if ref and ours:
                mode = "transductive" if trans else "non-transductive"
                q15 = f"{ours15['seconds_per_episode']:.4f}" if ours15 else "-"
                lines.append(f"| {setting} {mode} | {ref['seconds_per_episode']:.4f} | {ours['seconds_per_episode']:.4f} | "
                             f"{ref['seconds_per_episode'] / ours['seconds_per_episode']:.1f}x | {q15} |")
    return "\n".join(lines)


ROWS = {"roofline": roofline_row, "graph": graph_row, "full": full_row, "eval15": eval15_row, "scale": scale_row, "big": big_episode_row,
        "sampler": sampler_row, "ref_train": ref_train_row, "ref_eval": ref_eval_row, "ours_train": ours_train_row,
        "ours_eval": ours_eval_row}
SIDE_BY_SIDE = ("ref_train", "ours_train", "ref_eval", "ours_eval")


# glibc's handling of freed memory, for every measuring process (egnn.devices.keep_freed_host_memory): "egnn" leaves
# each code as it runs (egnn's Trainer keeps freed memory on machines of 16 GB or more, the original and the rows that
# bypass the Trainer use glibc's defaults); "system" puts every process on glibc's defaults, "tuned" has every process,
# the original's too, keep freed memory: a paired comparison of the codes' own work at either setting.
MALLOC_ENV = {"egnn": {}, "system": {"EGNN_MALLOC": "system"}, "tuned": {"EGNN_MALLOC": "tuned", "BENCH_MALLOC": "tuned"}}


def run_one(kind: str, threads: int, **kwargs) -> dict:
    """Run one measurement in a fresh interpreter; add its peak RSS."""
    spec = json.dumps({"kind": kind, "threads": threads, "kwargs": kwargs})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"kind": kind, **kwargs, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def _child(spec: str) -> None:
    import torch

    s = json.loads(spec)
    torch.set_num_threads(s["threads"])
    extra = {}
    if os.environ.get("BENCH_MALLOC") == "tuned":  # before any large allocation, as egnn's Trainer does
        from egnn.devices import keep_freed_host_memory

        extra["malloc_tuned"] = keep_freed_host_memory()
    out = ROWS[s["kind"]](**s["kwargs"])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"kind": s["kind"], **s["kwargs"], **out, **extra, "peak_gb": round(peak_kb / 2**20, 3)}))


# -- report ----------------------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    lines = []
    if any(r["kind"] in SIDE_BY_SIDE for r in rows):
        lines += [side_by_side_table(rows), ""]
    lines += ["| graph network only (random 128-d embeddings, 40 tasks) | all ordered pairs (s/it) | ours (s/it) | "
              "ours, eval (s/it) |", "|---|---|---|---|"]
    for setting in SETTINGS:
        for mode in ("trans", "nontrans"):
            pick = lambda sym, prec="fp32": next((r for r in rows if r["kind"] == "graph" and r["setting"] == setting  # noqa: E731
                                                  and r["transductive"] == (mode == "trans") and r["symmetric"] == sym
                                                  and r.get("precision", "fp32") == prec), None)
            ours, allp, bf16 = pick(True), pick(False), pick(True, "bf16")
            if ours and "train_s" in ours:
                lines.append(f"| {setting} {mode} | {allp['train_s']:.3f} | {ours['train_s']:.3f} | {ours['eval_s']:.3f} |")
            if bf16 and "train_s" in bf16:
                lines.append(f"| {setting} {mode}, bf16 autocast | - | {bf16['train_s']:.3f} | {bf16['eval_s']:.3f} |")
    roof = [r for r in rows if r["kind"] == "roofline" and "train_floor_s" in r]
    if roof:  # the most generous floors: the best matmul throughput any row measured
        peak = max(r["peak_gflops"] for r in roof)
        shape = max(r["edge_mlp_gflops"] for r in roof)
        lines += ["", f"| graph only, float32 floor | matmul GFLOP/it | floor at peak, {peak:.0f} GFLOPS (s/it) | floor at "
                      f"the edge MLP's shape, {shape:.0f} GFLOPS (s/it) |", "|---|---|---|---|"]
        for r in roof:
            mode = "trans" if r["transductive"] else "nontrans"
            gflop = r["train_gflop"]
            lines.append(f"| {r['setting']} {mode} | {gflop:.1f} | {gflop / peak:.3f} | {gflop / shape:.3f} |")
    lines += ["", "| full iteration (Conv-4, 40 tasks, fixed batch) | ours (s/it) | peak GB |", "|---|---|---|"]
    for r in rows:
        if r["kind"] == "full" and "train_s" in r:
            opts = f", {r.get('size', 84)}px" + (", bf16 autocast" if r.get("precision", "fp32") != "fp32" else "")
            lines.append(f"| {r['setting']} {'trans' if r['transductive'] else 'nontrans'}{opts} | {r['train_s']:.2f} | "
                         f"{r['peak_gb']:.2f} |")
    lines += ["", "| data | sampler (images/s) | training consumes (images/s) | ratio |", "|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "sampler" and "images_per_s" in r:
            full = next((f for f in rows if f["kind"] == "full" and f.get("size", 84) == r["size"] and "train_s" in f
                         and f["setting"] == "5w1s" and f["transductive"]), None)
            use = full["images_per_s"] if full else float("nan")
            lines.append(f"| {r['size']}x{r['size']}x{r['channels']}, {r['augmentation']} | {r['images_per_s']:.0f} | {use:.0f} | "
                         f"{r['images_per_s'] / use:.0f}x |")
    big = next((r for r in rows if r["kind"] == "big" and "seconds" in r), None)
    if big:
        lines += ["", f"5000-node episode ({big['source']}, kNN k={big['knn']}, {big['edges']} edges): "
                      f"{big['seconds']:.1f} s, peak {big['peak_gb']:.2f} GB, accuracy {100 * big['accuracy']:.1f}%"]
    return "\n\n".join(_with_rows(block) for block in "\n".join(lines).split("\n\n") if _with_rows(block))


def _with_rows(block: str) -> str:
    """A Markdown table block, or '' when it has a header and no rows (its kinds were not measured)."""
    body = [ln for ln in block.strip().splitlines() if ln.strip()]
    is_table = len(body) >= 2 and body[1].startswith("|---")
    return "" if is_table and len(body) == 2 else "\n".join(body)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for graph, style in (("dense", "o-"), ("sparse", "s--")):
        pts = sorted((r["nodes"], r["seconds"], r["peak_gb"]) for r in rows
                     if r["kind"] == "scale" and r["graph"] == graph and "seconds" in r)
        if pts:
            n, t, m = zip(*pts)
            ax_t.loglog(n, t, style, label=f"{graph}" + (" (kNN, k=20)" if graph == "sparse" else " (all pairs)"))
            ax_m.loglog(n, m, style, label=graph)
    ax_t.set(xlabel="nodes per episode", ylabel="seconds (3 graph layers, inference)", title="time")
    ax_m.set(xlabel="nodes per episode", ylabel="peak memory (GB, whole process)", title="memory")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def _machine(device: str) -> str:
    import torch

    from egnn.devices import cpu_name

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", help="trained Omniglot EGNN for the 5000-node episode (else untrained)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_speed.json"))
    parser.add_argument("--kinds", default=None,
                        help="measure only these kinds; the other rows of --out are kept (with their revision). Default: "
                             "all, the side-by-side kinds (ref_train, ours_train, ref_eval, ours_eval) where --ref-dir is given")
    parser.add_argument("--ref-dir", help="the original EGNN code (e.g. ../shared/reference/fewshot-egnn), imported at run "
                                          "time and timed beside egnn on the same inputs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] for the side-by-side rows")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="side-by-side settings, of: " + ", ".join(SETTINGS))
    parser.add_argument("--modes", default="transductive,non-transductive",
                        help="side-by-side modes, of: transductive, non-transductive")
    parser.add_argument("--malloc", default="egnn", choices=list(MALLOC_ENV),
                        help="glibc's handling of freed memory in every measuring process: egnn (each code as it runs: "
                             "egnn's Trainer keeps freed memory, the rest glibc's defaults), system (glibc's defaults "
                             "everywhere) or tuned (every process, the original's too, keeps freed memory)")
    args = parser.parse_args()
    if args.one:
        return _child(args.one)
    os.environ.update(MALLOC_ENV[args.malloc])  # inherited by every measuring process
    kinds = set(args.kinds.split(",")) if args.kinds else set(ROWS) - (set() if args.ref_dir else set(SIDE_BY_SIDE))
    if kinds & set(SIDE_BY_SIDE) and not args.ref_dir:
        parser.error("the side-by-side kinds need --ref-dir PATH of the original code")
    unknown = kinds - set(ROWS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}: choose from {', '.join(ROWS)}")
    t, q = args.threads, args.quick
    rows = []
    from egnn.provenance import provenance

    made = provenance("python scripts/bench_speed.py")
    revision, command = made["git_revision"], made["command"]
    kept = []
    if kinds != set(ROWS) and Path(args.out).exists():  # a partial re-run replaces only its own kinds
        old = json.loads(Path(args.out).read_text())
        kept = [{"git_revision": old["git_revision"], **r} for r in old["rows"] if r["kind"] not in kinds]
        command = f"{old['command']}; then {command}"

    def add(row: dict) -> None:
        """Keep a measured row and rewrite --out at once (atomically): a run stopped at any point, e.g. at the
        device machine's time limit, leaves every row it measured."""
        rows.append({**row, "git_revision": revision, **({"malloc": args.malloc} if args.malloc != "egnn" else {})})
        out = {"command": command, "git_revision": revision, "uncommitted_changes": made["uncommitted_changes"],
               "threads": t, "torch": __import__("torch").__version__, "machine": _machine(args.device),
               "rows": kept + rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2) + "\n")
        tmp.replace(args.out)

    modes = {"transductive": True, "non-transductive": False}
    if set(args.modes.split(",")) - set(modes):
        parser.error(f"--modes takes transductive and/or non-transductive, got {args.modes}")
    ref = {"ref_dir": str(Path(args.ref_dir).resolve())} if args.ref_dir else {}
    for setting in args.settings.split(","):
        for trans in [modes[m] for m in args.modes.split(",")]:
            size = {"tasks": 2 if q else 40, "repeat": 1 if q else 3}
            if "ref_train" in kinds:
                add(run_one("ref_train", t, setting=setting, transductive=trans, device=args.device, **size, **ref))
            if "ours_train" in kinds:
                add(run_one("ours_train", t, setting=setting, transductive=trans, device=args.device, **size))
            episodes = 10 if q else 50
            if "ref_eval" in kinds:
                add(run_one("ref_eval", t, setting=setting, transductive=trans, device=args.device,
                                    episodes=episodes, **ref))
            for query in (1, 15) if "ours_eval" in kinds else ():
                add(run_one("ours_eval", t, setting=setting, transductive=trans, device=args.device,
                                    episodes=episodes, query=query))
    for setting in SETTINGS:
        for trans in (True, False):
            if "roofline" in kinds:
                add(run_one("roofline", t, setting=setting, transductive=trans, tasks=4 if q else 40))
            for sym, prec in ((True, "fp32"), (False, "fp32"), (True, "bf16")) if "graph" in kinds else ():
                add(run_one("graph", t, setting=setting, transductive=trans, symmetric=sym, precision=prec,
                                    repeat=1 if q else 5, tasks=4 if q else 40))
    for setting in SETTINGS if "full" in kinds else ():
        for trans in (True, False):
            add(run_one("full", t, setting=setting, transductive=trans, repeat=1 if q else 3,
                                tasks=2 if q else 40))
            if setting == "5w5s":  # mixed precision, a separate mode: same math in 16-bit matmuls
                add(run_one("full", t, setting=setting, transductive=trans, repeat=1 if q else 3,
                                    tasks=2 if q else 40, precision="bf16"))
    if "full" in kinds:
        add(run_one("full", t, setting="5w1s", transductive=True, size=28, channels=1, repeat=1 if q else 3,
                            tasks=2 if q else 40))
    for setting in SETTINGS if "eval15" in kinds else ():
        add(run_one("eval15", t, setting=setting, transductive=True, episodes=2 if q else 10))
    sizes = [25, 50, 100] if q else [25, 50, 100, 200, 500, 1000, 2000]
    for n in sizes if "scale" in kinds else ():
        add(run_one("scale", t, nodes=n, graph="dense", repeat=1 if q else 3))
    for n in sizes + ([] if q else [5000]) if "scale" in kinds else ():
        add(run_one("scale", t, nodes=n, graph="sparse", repeat=1 if q else 3))
    if not q and "big" in kinds:
        add(run_one("big", t, checkpoint=args.checkpoint))
    for size, ch, kind in ((84, 3, "crop-flip"), (28, 1, "none")) if "sampler" in kinds else ():
        add(run_one("sampler", t, size=size, channels=ch, augmentation=kind, seconds=1.0 if q else 5.0))
    rows = kept + rows
    if "scale" in kinds:
        plot(rows, ROOT / "docs" / ("scaling_quick.png" if q else "scaling.png"))
    print(table(rows))


if __name__ == "__main__":
    main()
