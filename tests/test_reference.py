"""egnn computes what the original EGNN code computes: golden numbers from its own training and evaluation loops;
and ``egnn import-reference`` turns models trained by the original code into egnn runs that predict what the
original predicts.

The fixture is written by ``scripts/golden_reference.py --ref-dir ../shared/reference/fewshot-egnn`` (the original
code, run unedited); these tests read the fixture only. Weights reach egnn through :mod:`egnn.reference`'s
converter, the same one ``egnn import-reference`` uses.
"""
import lzma
import os
import pickle
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from egnn.backbones import create_backbone
from egnn.episodes import Episode, EpisodeSampler
from egnn.graph import collate
from egnn.methods import EGNNMethod
from egnn.reference import convert_state, key_map
from egnn.models import load_trained
from tests.conftest import assert_user_error, cli

FIXTURE = Path(__file__).parent / "fixtures" / "reference_golden.pkl.xz"
ATOL = RTOL = 1e-5


@lru_cache(maxsize=1)
def fixture() -> dict:
    return pickle.loads(lzma.decompress(FIXTURE.read_bytes()))


def weights(grid: dict) -> dict[str, torch.Tensor]:
    """The fixture's float32 weights, computed exactly as the script computed them for the original."""
    return {n: torch.from_numpy(g["k"].astype(np.float32)) * g["scale"] + g["offset"] for n, g in grid.items()}


def build() -> EGNNMethod:
    f, s = fixture(), fixture()["setting"]
    backbone = create_backbone("conv4", in_channels=3, image_size=84, out_features=s["embedding"], dropout=0.0,
                               padding="reference", norm="slot")
    method = EGNNMethod(backbone, num_layers=s["layers"], node_features=s["features"], edge_features=s["features"])
    method.set_normalization(torch.tensor(s["mean"]), torch.tensor(s["std"]))
    enc, gnn = weights(f["enc_weights"]), weights(f["gnn_weights"])
    counters = {k: torch.tensor(0) for k in key_map(method) if k.endswith("num_batches_tracked")}
    enc.update({k[len("enc."):]: v for k, v in counters.items() if k.startswith("enc.")})
    gnn.update({k[len("gnn."):]: v for k, v in counters.items() if k.startswith("gnn.")})
    method.load_state_dict(convert_state(method, enc, gnn))
    return method


def batch():
    s = fixture()["setting"]
    way, shot = s["way"], s["shot"]
    labels = torch.cat([torch.arange(way).repeat_interleave(shot), torch.arange(way)])
    images = torch.from_numpy(fixture()["images"])  # (tasks, N, 84, 84) grey: egnn feeds 1 channel, the model 3
    return collate([Episode(im[:, None], labels, torch.ones(way * shot, dtype=torch.bool), torch.arange(way),
                            way, shot, 1) for im in images])


def record(method: EGNNMethod) -> dict:
    rec = {"enc": [], "nodes": [], "edges": [], "graphs": []}
    method.backbone.register_forward_hook(lambda m, i, o: rec["enc"].append(o.detach()))
    for node, edge in zip(method.gnn.node_updates, method.gnn.edge_updates):
        node.register_forward_hook(lambda m, i, o: rec["nodes"].append(o.detach()))
        edge.register_forward_hook(lambda m, i, o: rec["edges"].append(o.detach()))
    return rec


def close(ours: torch.Tensor, golden: np.ndarray, what: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    golden = torch.from_numpy(np.asarray(golden)).to(ours.dtype)
    assert ours.shape == golden.shape, (what, ours.shape, golden.shape)
    err = (ours - golden).abs().max().item()
    assert torch.allclose(ours, golden, atol=atol, rtol=rtol), f"{what}: max |egnn - original| = {err:.2e}"


MODES = [("transductive", True), ("non_transductive", False)]


def step(golden: dict, transductive: bool, dtype=torch.float32):
    """One training forward and backward of egnn in ``dtype``, with the original's embeddings fed to the graph."""
    method = build().to(dtype).train()
    rec = record(method)
    embedded = torch.from_numpy(golden["enc"]).flatten(0, 1).to(dtype)
    method.backbone.register_forward_hook(lambda m, i, o: o + (embedded - o).detach())  # values in, gradients through
    data = batch()
    data.edge_attr = data.edge_attr.to(dtype)
    out = method(data, transductive=transductive)
    loss = method.loss(out)
    loss.backward()
    rec["loss"] = loss.detach().float()
    return method, rec


@pytest.mark.parametrize("mode, transductive", MODES)
def test_training_step_equals_the_original(mode, transductive):
    """One training iteration of the original's ModelTrainer.train(): the encoder's outputs (BatchNorm statistics
    per node slot); then, fed the original's embeddings, every layer's nodes and edges and the loss; the gradients;
    and every running statistic after the step.

    The encoder in training mode is checked to twice the original's own float32 rounding (its float32 outputs
    against float64, measured by the script: a few 1e-5 here, from 6400-input sums and per-slot BatchNorm over 5
    tasks), the graph network's values to 1e-5; feeding it the original's embeddings keeps that rounding out of
    the later checks. Gradients: both codes' float32 gradients are checked against egnn's float64 gradients of
    the same step (the exact math, if the two codes compute one function): within 5e-3 relative norm in the graph
    network and the encoder head (measured: about 1e-5 transductive; non-transductive, the original is 1.6e-3 off,
    egnn 2e-6, from a few nearly saturated edges), within 2e-2 in the encoder's convolutions, where a max-pool
    window whose two largest inputs differ by less than float32 rounding sends its gradient to either input
    (measured: up to 6e-3). A wrong loss mask or layer is off by 1e-1 or more.
    """
    f, s = fixture(), fixture()["setting"]
    golden = f[mode]["train"]
    method, rec = step(golden, transductive)
    close(rec["enc"][0].view(s["tasks"], -1, s["embedding"]), golden["enc"], "encoder output",
          atol=max(ATOL, 2 * f["encoder_float32_noise"]))
    for l in range(s["layers"]):
        close(rec["nodes"][l], golden["nodes"][l], f"layer {l} node features")
        close(rec["edges"][l], golden["edges"][l].transpose(0, 2, 3, 1), f"layer {l} edges")
    close(rec["loss"], golden["loss"], "edge loss")
    exact, _ = step(golden, transductive, torch.float64)  # the same step in float64: the float32 rounding of each
    params, params64 = dict(method.named_parameters()), dict(exact.named_parameters())  # gradient, to bound ours by
    for src, dst in key_map(method).items():
        if src in golden["grads"]:
            g, stride = torch.from_numpy(golden["grads"][src]["values"]), golden["grads"][src]["stride"]
            ours, truth = params[dst].grad.flatten()[::stride], params64[dst].grad.flatten()[::stride]
            if truth.norm() < 1e-6:  # a bias that BatchNorm cancels: its exact gradient is 0
                assert ours.abs().max() < 1e-5 and g.abs().max() < 1e-5, src
                continue
            scale = truth.norm().item()
            ours_off = (ours.double() - truth).norm().item() / scale  # egnn float32 vs the exact step
            theirs_off = (g.double() - truth).norm().item() / scale  # the original's float32 vs the exact step
            bound = 2e-2 if src.startswith("enc.conv_") else 5e-3  # see the docstring: max-pool ties, saturation
            assert max(ours_off, theirs_off) <= bound, (f"gradient of {src}: egnn {ours_off:.1e} and the original "
                                                        f"{theirs_off:.1e} from the float64 step")
    buffers = dict(method.named_buffers())
    for src, dst in key_map(method).items():
        if src in golden["buffers"]:
            close(buffers[dst].to(torch.float64), golden["buffers"][src].astype(np.float64), f"buffer {src}")


@pytest.mark.parametrize("mode, transductive", MODES)
def test_evaluation_equals_the_original(mode, transductive):
    """Eval mode (running statistics): encoder outputs, layers and the query scores of the similarity vote equal
    the original's ModelTrainer.eval(), so do the predicted classes."""
    golden, s = fixture()[mode]["eval"], fixture()["setting"]
    method = build().eval()
    rec = record(method)
    with torch.no_grad():
        out = method(batch(), transductive=transductive)
    close(rec["enc"][0].view(s["tasks"], -1, s["embedding"]), golden["enc"], "encoder output")
    for l in range(s["layers"]):
        close(rec["nodes"][l], golden["nodes"][l], f"layer {l} node features")
        close(rec["edges"][l], golden["edges"][l].transpose(0, 2, 3, 1), f"layer {l} edges")
    close(out.logits, golden["scores"], "query scores")
    assert torch.equal(out.logits.argmax(-1), torch.from_numpy(golden["predictions"]))


def test_the_fixture_is_small():
    assert FIXTURE.stat().st_size < 400_000


# -- egnn import-reference ------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference" / "fewshot-egnn"


def original_checkpoint(path: Path) -> Path:
    """The fixture's weights in the original's checkpoint layout (what its ModelTrainer.save_checkpoint writes)."""
    f = fixture()
    enc, gnn = weights(f["enc_weights"]), weights(f["gnn_weights"])
    for state in (enc, gnn):
        for k in [k for k in state if k.endswith("running_var")]:
            state[k.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    torch.save({"iteration": 7, "enc_module_state_dict": enc, "gnn_module_state_dict": gnn, "val_acc": 0.5,
                "optimizer": {}}, path)
    return path


@pytest.mark.parametrize("mode, transductive", [("transductive", True), ("non_transductive", False)])
def test_import_round_trip_reproduces_the_originals_scores(tmp_path, mode, transductive):
    """Imported through the CLI, the fixture's original-layout checkpoint scores the fixture's episodes as the
    original's eval() did (mini-imagenet inputs: the original's own normalisation, no inversion)."""
    ckpt = original_checkpoint(tmp_path / "checkpoint.pth.tar")
    proc = cli("import-reference", ckpt, "--out", tmp_path / "run", "--dataset", "mini-imagenet", "--way", 3,
                "--shot", 2)
    assert proc.returncode == 0, proc.stderr
    assert "egnn eval --checkpoint" in proc.stdout
    method, cfg = load_trained(tmp_path / "run" / "best.pt")
    assert (cfg.embedding, cfg.node_features, cfg.edge_features, cfg.layers) == (16, 8, 8, 3)
    with torch.no_grad():
        out = method(batch(), transductive=transductive)
    golden = torch.from_numpy(fixture()[mode]["eval"]["scores"])
    assert torch.allclose(out.logits, golden, atol=1e-5)
    assert (tmp_path / "run" / "imported.json").exists() and (tmp_path / "run" / "config.yaml").exists()


def test_bad_reference_checkpoints_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    assert_user_error(cli("import-reference", junk, "--out", tmp_path / "a"), "not a readable PyTorch checkpoint")
    other = tmp_path / "other.pth"
    torch.save({"model": {}}, other)
    assert_user_error(cli("import-reference", other, "--out", tmp_path / "b"), "not a checkpoint of the original")
    wide = tmp_path / "wide.pth"
    blob = torch.load(original_checkpoint(tmp_path / "c.pth"))
    blob["enc_module_state_dict"]["conv_2.0.weight"] = torch.zeros(128, 64, 3, 3)
    torch.save(blob, wide)
    assert_user_error(cli("import-reference", wide, "--out", tmp_path / "c"), "widths")
    for name in ("a", "b", "c"):
        assert not (tmp_path / name).exists()  # nothing half-written


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the original code is not beside the checkout")
def test_a_checkpoint_written_by_the_original_code_predicts_the_same(tmp_path, omniglot_root):
    """The original trains 3 iterations and saves with its own save_checkpoint; imported, egnn predicts every
    query of the same 50 Omniglot test episodes as the original's eval() does."""
    env = {**os.environ, "EGNN_DATA": str(omniglot_root), "PYTHONPATH": str(REPO)}  # this checkout's egnn
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "reference_roundtrip.py"), "--ref-dir",
                           str(REFERENCE), "--work", str(tmp_path / "ref"), "--episodes", "50", "--tasks", "4"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = torch.load(tmp_path / "ref" / "reference_predictions.pt")
    imported = cli("import-reference", ref["checkpoint"], "--out", tmp_path / "run", "--dataset", "omniglot")
    assert imported.returncode == 0, imported.stderr
    method, cfg = load_trained(tmp_path / "run" / "best.pt")
    from egnn.data import load_dataset

    test = EpisodeSampler(load_dataset("omniglot", str(omniglot_root), 84)["test"], 5, 1, 1, seed=ref["seed"])
    scores = []
    with torch.no_grad():
        for start in range(0, ref["episodes"], 10):
            scores.append(method(collate(test.batch(start, 10)), transductive=True).logits)
    scores = torch.cat(scores)
    assert torch.allclose(scores, ref["scores"], atol=1e-4)
    assert torch.equal(scores.argmax(-1), ref["predictions"])
