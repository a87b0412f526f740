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
        single(collate([make_episode(**e) for e in EPISODES]), transductive=True)
    half = build("slot")  # what a rank would record with statistics of its own half of the batch only
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half(collate([make_episode(**e) for e in EPISODES[:2]]), transductive=True)
    whole, own = dict(single.named_buffers()), dict(half.named_buffers())
    stats = [k for k in out["buffers"] if k.startswith("backbone.") and k.endswith(("running_mean", "running_var"))]
    for k in stats:  # the whole batch's statistics, to bf16 rounding
        assert out["buffers"][k].dtype == torch.float32, k
        assert torch.allclose(out["buffers"][k], whole[k], rtol=2e-2, atol=2e-3), k
    # which the half batch's are not, for most layers: the check can tell the two apart
    apart = [k for k in stats if not torch.allclose(own[k], whole[k], rtol=2e-2, atol=2e-3)]
    assert len(apart) >= len(stats) // 2, apart


def test_torchrun_with_two_processes_trains_to_the_weights_of_one(tmp_path):
    """``egnn train`` under torchrun, 2 CPU processes (gloo) with half of the meta-batch each, takes the step one
    process takes on the whole meta-batch: the BatchNorm running statistics agree to float rounding, and so do the
    weights, but for the few whose gradient is near zero: Adam's first step moves every weight by the learning
    rate times the sign of its gradient, and float32 rounding (reductions split over ranks) flips the sign of a
    near-zero one (about 2% of the weights here, by 2 x lr). A wrong split (gradients not averaged, statistics of
    one rank's half, both ranks on the same half) moves the statistics and flips a large share of the signs."""
    import socket
    import subprocess
    import sys

    from tests.conftest import cli

    args = ["train", "--dataset", "glyphs", "--way", 3, "--shot", 1, "--query", 2, "--query-max", 0, "--iterations", 1,
            "--tasks-per-batch", 8, "--val-every", 1, "--val-episodes", 2, "--test-episodes", 2, "--eval-batch", 2,
            "--embedding", 16, "--node-features", 8, "--edge-features", 8, "--device", "cpu", "--quiet"]
    assert cli(*args, "--out", tmp_path / "one").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "egnn.cli",
                           *map(str, args), "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    # the ranks' own lines come first, torchrun's summary of who failed last: show both ends
    assert proc.returncode == 0, proc.stderr[:3000] + "\n...\n" + proc.stderr[-1500:]
    one, two = (torch.load(tmp_path / r / "last.pt", weights_only=False)["model"] for r in ("one", "two"))
    assert_one_step_agrees(one, two, lr=1e-3)


def assert_one_step_agrees(one: dict, two: dict, lr: float) -> None:
    """The checks of :func:`test_torchrun_with_two_processes_trains_to_the_weights_of_one` on two state dicts."""
    for k, v in one.items():
        if "running" in k:
            assert torch.allclose(v.float(), two[k].float(), rtol=1e-4, atol=1e-6), k
    diffs = torch.cat([(v.float() - two[k].float()).abs().flatten() for k, v in one.items()
                       if v.is_floating_point() and "running" not in k])
    assert diffs.max() <= 2 * lr + 1e-6 and (diffs > 1e-4).float().mean() < 0.05, (diffs.max(), (diffs > 1e-4).float().mean())
