#!/usr/bin/env python
"""Golden numbers from the original EGNN code, for tests/test_reference.py.

    python scripts/golden_reference.py --ref-dir ../shared/reference/fewshot-egnn

imports the original code (github khy0809/fewshot-egnn, unedited) from ``--ref-dir`` at run time, builds its
``EmbeddingImagenet`` and ``GraphNetwork`` with fixed weights, runs *its own* ``ModelTrainer.train()`` for one
iteration and ``ModelTrainer.eval()`` on one fixed batch (through a stub data loader), and records with hooks:
encoder outputs (train mode, one node slot at a time as it encodes, and eval mode), every layer's node features
and edges, the loss, the gradients, the BatchNorm running statistics after the step, and the query scores, for a
transductive and a non-transductive model. It writes ``tests/fixtures/reference_golden.pkl.xz`` (an lzma-compressed pickle of numpy arrays, well
under 1 MB).

Weights are ``offset + scale * k`` with small integers ``k`` (int8; the images have
16 grey levels, and large gradients are kept as strided samples), so the fixture
stays small and both codes compute with bit-identical float32 weights. Run-time adaptations, none editing the
original's files: a discarding TensorBoard writer where tensorboardX is missing; ``sys.argv`` is emptied while ``train.py`` is imported (its option parser reads it); ``tt.arg``
gets the values of its ``__main__`` block for 'mini' (``train_iteration = 1``, validation off); the encoder's
``Dropout2d`` layers get ``p = 0`` (their random masks cannot be matched across codes; egnn tests that layout
separately); ``eval()`` runs under ``torch.no_grad()``; the one-hot of ``one_hot_encode`` is built on the index's
device (as ../shared/reference/ref_egnn_omniglot.py does).
"""
from __future__ import annotations

import argparse
import lzma
import os
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

WAY, SHOT, TASKS, EMB, FEATURES, LAYERS, SEED = 3, 2, 5, 16, 8, 3, 7
MEAN = [x / 255.0 for x in (120.39586422, 115.59361427, 104.54012653)]
STD = [x / 255.0 for x in (70.68188272, 68.27635443, 72.54505529)]


def grid_weights(state: dict[str, torch.Tensor], rng: np.random.RandomState) -> dict[str, dict]:
    """``{name: {"k": int8 array, "scale", "offset"}}`` for every float tensor of a state dict: small-integer
    grids whose float32 values both codes reproduce exactly."""
    out = {}
    for name, t in state.items():
        if not t.is_floating_point():
            continue
        fan_in = int(np.prod(t.shape[1:])) if t.dim() > 1 else 1
        if name.endswith("running_var"):
            k, scale, offset = rng.randint(0, 5, t.shape), 0.25, 0.5
        elif name.endswith("running_mean") or name.endswith("bias"):
            k, scale, offset = rng.randint(-2, 3, t.shape), 0.05, 0.0
        elif t.dim() == 1:  # BatchNorm weight
            k, scale, offset = rng.randint(-2, 3, t.shape), 0.1, 1.0
        else:  # conv / linear weight, ternary (compresses to ~1.6 bits each): std about 1/sqrt(fan_in)
            k, scale, offset = rng.randint(-1, 2, t.shape), float(np.sqrt(1.5 / fan_in)), 0.0
        out[name] = {"k": k.astype(np.int8), "scale": scale, "offset": offset}
    return out


def materialise(grid: dict[str, dict]) -> dict[str, torch.Tensor]:
    """The float32 tensors of :func:`grid_weights` (the test does exactly this)."""
    return {n: torch.from_numpy(g["k"].astype(np.float32)) * g["scale"] + g["offset"] for n, g in grid.items()}


def sample(t: torch.Tensor, keep: int = 400) -> dict:
    """A large tensor as every ``stride``-th element of its flattening (the fixture stays small)."""
    stride = max(1, t.numel() // keep)
    return {"values": t.flatten()[::stride].clone(), "stride": stride, "numel": t.numel()}


def to_numpy(obj):
    """Tensors -> numpy arrays, recursively: one compressed pickle is far smaller than torch.save's zip of
    hundreds of small tensors."""
    if torch.is_tensor(obj):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_numpy(v) for v in obj]
    return obj


def pack(grid: dict[str, dict]) -> dict:
    return {n: {"k": g["k"], "scale": g["scale"], "offset": g["offset"]} for n, g in grid.items()}


def import_reference(ref_dir: str):
    """The original's ``train`` module and ``tt``. Its logger writes TensorBoard files through tensorboardX; where
    that package is missing, a writer that discards the scalars stands in (logging changes no number)."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        import types

        class _Discard:
            def __init__(self, *a, **k):
                self.file_writer = self

            def __getattr__(self, name):
                return lambda *a, **k: None

        sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=_Discard)
    saved = sys.argv
    sys.argv = [saved[0]]
    sys.path.insert(0, os.path.abspath(ref_dir))
    try:
        import train as ref_train  # brings torchtools, data, model
    finally:
        sys.argv = saved
    from torchtools import tt
    return ref_train, tt


def configure(tt, transductive: bool, log_dir: str) -> None:
    a = tt.arg
    a.device = torch.device("cpu")
    a.dataset, a.num_ways, a.num_shots, a.num_unlabeled, a.num_layers = "mini", WAY, SHOT, 0, LAYERS
    a.meta_batch_size, a.test_batch_size = TASKS, TASKS
    a.transductive = a.train_transductive = a.test_transductive = transductive
    a.seed, a.num_gpus = SEED, 1
    a.num_ways_train = a.num_ways_test = WAY
    a.num_shots_train = a.num_shots_test = SHOT
    a.num_edge_features = a.num_node_features = FEATURES
    a.emb_size = EMB
    a.train_iteration, a.test_iteration, a.test_interval, a.log_step = 1, TASKS, 10 ** 9, 10 ** 9
    a.lr, a.grad_clip, a.weight_decay, a.dec_lr, a.dropout = 1e-3, 5, 1e-6, 15000, 0.0
    a.experiment = "golden"
    a.log_dir = log_dir + "/"


class StubLoader:
    """The original's ``get_task_batch`` interface over one fixed batch (its layout: supports then queries, each
    class-major)."""

    def __init__(self, images: torch.Tensor) -> None:  # (TASKS, N, 84, 84) uint8
        x = images.float().div(255)[:, :, None].expand(-1, -1, 3, -1, -1)
        x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        s = WAY * SHOT
        labels = torch.cat([torch.arange(WAY).repeat_interleave(SHOT), torch.arange(WAY)]).float()
        self.batch = [x[:, :s].contiguous(), labels[:s].expand(TASKS, -1).clone(), x[:, s:].contiguous(),
                      labels[s:].expand(TASKS, -1).clone()]

    def get_task_batch(self, num_tasks, num_ways, num_shots, seed=None, num_queries=1):
        assert (num_tasks, num_ways, num_shots, num_queries) == (TASKS, WAY, SHOT, 1)
        return [t.clone() for t in self.batch]


def run(ref_train, tt, enc_grid, gnn_grid, images, transductive: bool) -> dict:
    with tempfile.TemporaryDirectory() as log_dir:
        configure(tt, transductive, log_dir)
        enc = ref_train.EmbeddingImagenet(emb_size=EMB)
        gnn = ref_train.GraphNetwork(in_features=EMB, node_features=FEATURES, edge_features=FEATURES,
                                     num_layers=LAYERS, dropout=0.0)
        enc.load_state_dict({**enc.state_dict(), **materialise(enc_grid)})
        gnn.load_state_dict({**gnn.state_dict(), **materialise(gnn_grid)})
        for m in enc.modules():
            if isinstance(m, torch.nn.Dropout2d):
                m.p = 0.0
        loader = StubLoader(images)
        trainer = ref_train.ModelTrainer(enc_module=enc, gnn_module=gnn, data_loader={"train": loader, "test": loader})
        trainer.one_hot_encode = lambda n, idx: torch.eye(n, device=idx.device)[idx]
        rec: dict = {"enc": [], "nodes": [], "edges": []}
        hooks = [enc.register_forward_hook(lambda m, i, o: rec["enc"].append(o.detach().clone()))]
        for l in range(LAYERS):
            hooks.append(gnn._modules[f"edge2node_net{l}"].register_forward_hook(
                lambda m, i, o: rec["nodes"].append(o.detach().clone())))
            hooks.append(gnn._modules[f"node2edge_net{l}"].register_forward_hook(
                lambda m, i, o: rec["edges"].append(o.detach().clone())))
        backward = torch.Tensor.backward

        def record_loss(self, *a, **k):
            rec["loss"] = self.detach().clone()
            return backward(self, *a, **k)

        step = trainer.optimizer.step

        def record_step(*a, **k):
            rec["grads"] = {f"enc.{n}": p.grad.clone() for n, p in enc.named_parameters()}
            rec["grads"].update({f"gnn.{n}": p.grad.clone() for n, p in gnn.named_parameters()})
            rec["buffers"] = {f"enc.{n}": b.clone() for n, b in enc.named_buffers()}
            rec["buffers"].update({f"gnn.{n}": b.clone() for n, b in gnn.named_buffers()})
            return step(*a, **k)

        torch.Tensor.backward, trainer.optimizer.step = record_loss, record_step
        try:
            trainer.train()
        finally:
            torch.Tensor.backward = backward
        train = {"enc": torch.stack(rec["enc"], 1), "nodes": rec["nodes"], "edges": rec["edges"],
                 "loss": rec["loss"], "grads": {n: sample(g) for n, g in rec["grads"].items()},
                 "buffers": rec["buffers"]}
        # evaluation with the weights of the fixture (running statistics included), not the stepped ones
        enc.load_state_dict({**enc.state_dict(), **materialise(enc_grid)})
        gnn.load_state_dict({**gnn.state_dict(), **materialise(gnn_grid)})
        rec.update(enc=[], nodes=[], edges=[])
        out = {}
        hooks.append(gnn.register_forward_hook(lambda m, i, o: out.update(last=o[-1].detach().clone())))
        with torch.no_grad():
            accuracy = float(trainer.eval(partition="test", log_flag=False))
        for h in hooks:
            h.remove()
        s = WAY * SHOT
        logit = out["last"]
        if transductive:
            qs = logit[:, 0, s:, :s]
        else:
            qs = logit.view(TASKS, WAY, 2, s + 1, s + 1)[:, :, 0, -1, :s]
        onehot = torch.eye(WAY)[loader.batch[1].long()]
        scores = torch.bmm(qs, onehot)  # as its eval() computes query_node_pred
        pred = scores.argmax(-1)
        assert abs(float((pred == loader.batch[3].long()).float().mean()) - accuracy) < 1e-6
        evaluation = {"enc": torch.stack(rec["enc"], 1), "nodes": rec["nodes"], "edges": rec["edges"],
                      "scores": scores, "predictions": pred, "accuracy": accuracy}
        return {"train": train, "eval": evaluation}


def encoder_noise(ref_train, tt, enc_grid, images) -> float:
    """Largest difference between the original's train-mode encoder outputs in float32 and in float64, encoded
    one node slot at a time as its trainer does: the float32 rounding any faithful implementation lives with."""
    configure(tt, True, tempfile.gettempdir())
    loader = StubLoader(images)
    x = torch.cat([loader.batch[0], loader.batch[2]], 1)
    outs = []
    for dtype in (torch.float32, torch.float64):
        enc = ref_train.EmbeddingImagenet(emb_size=EMB)
        enc.load_state_dict({**enc.state_dict(), **materialise(enc_grid)})
        enc = enc.to(dtype).train()
        for m in enc.modules():
            if isinstance(m, torch.nn.Dropout2d):
                m.p = 0.0
        outs.append(torch.stack([enc(x[:, k].to(dtype)) for k in range(x.shape[1])], 1).double())
    return float((outs[0] - outs[1]).abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-dir", required=True, help="the original code (fewshot-egnn folder)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"
                                        / "reference_golden.pkl.xz"))
    args = p.parse_args()
    torch.set_num_threads(1)
    ref_train, tt = import_reference(args.ref_dir)
    torch.manual_seed(SEED)
    rng = np.random.RandomState(SEED)
    enc0 = ref_train.EmbeddingImagenet(emb_size=EMB).state_dict()
    gnn0 = ref_train.GraphNetwork(in_features=EMB, node_features=FEATURES, edge_features=FEATURES,
                                  num_layers=LAYERS, dropout=0.0).state_dict()
    enc_grid, gnn_grid = grid_weights(enc0, rng), grid_weights(gnn0, rng)
    n = WAY * (SHOT + 1)
    # 16 grey levels (compresses well), each image with its own brightness: i.i.d. noise images would make every
    # slot's features nearly equal across tasks, and per-slot BatchNorm would then amplify float32 rounding. No flat
    # regions: exactly equal patches tie in max-pooling, whose gradient then depends on the kernel's tie-breaking.
    brightness = rng.uniform(3.0, 12.0, (TASKS, n, 1, 1))
    levels = np.clip(np.rint(brightness + 2.0 * rng.randn(TASKS, n, 84, 84)), 0, 15)
    images = torch.from_numpy((17 * levels).astype(np.uint8))
    fixture = {"setting": dict(way=WAY, shot=SHOT, tasks=TASKS, embedding=EMB, features=FEATURES, layers=LAYERS,
                               mean=MEAN, std=STD, lr=1e-3, weight_decay=1e-6),
               "enc_weights": pack(enc_grid), "gnn_weights": pack(gnn_grid),
               "images": images,
               "source": "github khy0809/fewshot-egnn @ 205fa80ec7cb12550f7b52a63f921171f92dac4c, run unedited"}
    fixture["encoder_float32_noise"] = encoder_noise(ref_train, tt, enc_grid, images)
    print(f"the original's own float32 encoder output (train mode) is {fixture['encoder_float32_noise']:.1e} "
          f"from float64")
    for mode, transductive in (("transductive", True), ("non_transductive", False)):
        fixture[mode] = run(ref_train, tt, enc_grid, gnn_grid, images, transductive)
        print(f"{mode}: loss {float(fixture[mode]['train']['loss']):.6f}, eval accuracy "
              f"{fixture[mode]['eval']['accuracy']:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(lzma.compress(pickle.dumps(to_numpy(fixture), protocol=4)))
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
