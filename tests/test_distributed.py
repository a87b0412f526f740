"""Data-parallel training: 2 CPU processes (gloo), each with half of the meta-batch, give the gradients of one
process on the whole meta-batch, and a 2-process Trainer run ends with the weights of a 1-process run."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from egnn.backbones import create_backbone
from egnn.distributed import globalize_batchnorm
from egnn.graph import collate
from egnn.methods.egnn import EGNNMethod
from tests.conftest import make_episode

NORM = "batch"  # torchrun refuses the per-slot encoder statistics (see Trainer)
EPISODES = [dict(way=3, shot=2, query=2, seed=s) for s in range(4)]


def build(model="egnn"):
    torch.manual_seed(0)
    backbone = create_backbone("conv4", in_channels=1, image_size=28, out_features=32, norm=NORM)
    return EGNNMethod(backbone, num_layers=2, node_features=16, edge_features=16)


def gradients(method, episodes):
    out = method(collate([make_episode(**e) for e in episodes]), transductive=True)
    method.loss(out).backward()
    return {k: p.grad.clone() for k, p in method.named_parameters()}


def _rank(rank, world, store, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    method = globalize_batchnorm(build())
    ddp = torch.nn.parallel.DistributedDataParallel(method)
    share = len(EPISODES) // world
    batch = collate([make_episode(**e) for e in EPISODES[rank * share:(rank + 1) * share]])
    loss = method.loss(ddp(batch, transductive=True))
    loss.backward()  # DDP averages the gradients over ranks
    if rank == 0:
        torch.save({"grads": {k: p.grad for k, p in method.named_parameters()},
                    "buffers": dict(method.named_buffers())}, out)
    dist.destroy_process_group()


def test_two_processes_match_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "rank0.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "rank0.pt")
    single = build()
    expected = gradients(single, EPISODES)
    for k, g in expected.items():
        assert torch.allclose(ddp["grads"][k], g, atol=1e-5, rtol=1e-4), k
    for k, b in single.named_buffers():  # BatchNorm running statistics saw the whole meta-batch too
        if b.is_floating_point() and b.numel():
            assert torch.allclose(ddp["buffers"][k], b, atol=1e-5), k
