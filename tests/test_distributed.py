"""Data-parallel training: 2 CPU processes (gloo), each with half of the meta-batch, give the gradients of one
process on the whole meta-batch, and a 2-process Trainer run ends with the weights of a 1-process run."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from egnn.backbones import create_backbone
from egnn.graph import collate
from egnn.methods.egnn import EGNNMethod
from tests.conftest import make_episode

EPISODES = [dict(way=3, shot=2, query=2, seed=s) for s in range(4)]


def build(norm="batch", dtype=torch.float32):
    torch.manual_seed(0)
    backbone = create_backbone("conv4", in_channels=1, image_size=28, out_features=32, norm=norm)
    method = EGNNMethod(backbone, num_layers=2, node_features=16, edge_features=16)
    method.set_normalization(torch.zeros(1), torch.ones(1))  # buffers in dtype: float64 inputs in float64 runs
    return method.to(dtype)


def episodes_batch(episodes, dtype=torch.float32):
    batch = collate([make_episode(**e) for e in episodes])
    batch.edge_attr = batch.edge_attr.to(dtype)
    return batch


def gradients(method, episodes, dtype=torch.float32):
    out = method(episodes_batch(episodes, dtype), transductive=True)
    method.loss(out).backward()
    return {k: p.grad.clone() for k, p in method.named_parameters()}


def _rank(rank, world, store, out, norm="batch", dtype=torch.float32):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    method = build(norm, dtype)
    method.prepare_data_parallel()  # what the trainer does under torchrun
    ddp = torch.nn.parallel.DistributedDataParallel(method)
    share = len(EPISODES) // world
    batch = episodes_batch(EPISODES[rank * share:(rank + 1) * share], dtype)
    loss = method.loss(ddp(batch, transductive=True))
    loss.backward()  # DDP averages the gradients over ranks
    if rank == 0:
        torch.save({"grads": {k: p.grad for k, p in method.named_parameters()},
                    "buffers": dict(method.named_buffers())}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("norm", ["batch", "slot"])
def test_two_processes_match_one_process_on_the_whole_batch(tmp_path, norm):
    """Whole-batch and per-node-slot encoder statistics alike. In float64: with 4 episodes, per-slot BatchNorm
    standardises each slot over 4 images, and float32 rounding alone then moves the encoder's gradients by ~2%
    (one process against itself in float64), which would hide any real difference."""
    dtype = torch.float64
    mp.spawn(_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "rank0.pt"), norm, dtype), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "rank0.pt")
    single = build(norm, dtype)
    expected = gradients(single, EPISODES, dtype)
    for k, g in expected.items():
        assert torch.allclose(ddp["grads"][k], g, atol=1e-9, rtol=1e-7), k
    for k, b in single.named_buffers():  # BatchNorm running statistics saw the whole meta-batch too
        if b.is_floating_point() and b.numel():
            assert torch.allclose(ddp["buffers"][k], b, atol=1e-9), k


def _rank_autocast(rank, world, store, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    method = build("slot")
    method.prepare_data_parallel()
    share = len(EPISODES) // world
    batch = collate([make_episode(**e) for e in EPISODES[rank * share:(rank + 1) * share]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = method.loss(method(batch, transductive=True))
    loss.backward()
    if rank == 0:
        torch.save({"loss": loss.detach().float(), "buffers": dict(method.named_buffers())}, out)
    dist.destroy_process_group()


def test_global_batchnorm_under_bf16_autocast(tmp_path):
    """Statistics stay float32 under autocast (lerp_ into float32 running buffers used to fail on bf16 inputs)."""
    mp.spawn(_rank_autocast, args=(2, str(tmp_path / "store"), str(tmp_path / "rank0.pt")), nprocs=2, join=True)
    out = torch.load(tmp_path / "rank0.pt")
    assert torch.isfinite(out["loss"])
    single = build("slot")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = single.loss(single(collate([make_episode(**e) for e in EPISODES]), transductive=True))
    assert abs(float(out["loss"].detach()) - float(expected.detach())) < 0.05  # bf16 matmuls: agreement to bf16 precision
    for k, b in out["buffers"].items():
        if k.endswith("running_mean"):
            assert b.dtype == torch.float32 and torch.isfinite(b).all(), k
