#!/usr/bin/env python
"""A checkpoint written by the original EGNN code, and its predictions on egnn's test episodes.

    python scripts/reference_roundtrip.py --ref-dir ../shared/reference/fewshot-egnn --work DIR

imports the original code (unedited) from ``--ref-dir``, trains its ``EmbeddingImagenet`` + ``GraphNetwork``
(default widths) with *its own* ``ModelTrainer.train()`` for a few iterations on real Omniglot episodes, saves
them with *its own* ``save_checkpoint`` (``DIR/asset/checkpoints/<experiment>/checkpoint.pth.tar``), then runs its
``eval()`` on egnn's fixed test episodes (5-way 1-shot, 1 query per class, ``--seed``) and writes every query's
scores and predicted class to ``DIR/reference_predictions.pt``. Images reach it as
``../shared/reference/ref_egnn_omniglot.py`` builds them: 84x84, ink dark, 3 equal channels, its miniImageNet
normalisation. ``tests/test_reference.py`` then imports the checkpoint with ``egnn import-reference`` and
checks egnn predicts the same. Run-time adaptations are those of ``scripts/golden_reference.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_reference import MEAN, STD, import_reference  # noqa: E402

from egnn.data import load_dataset  # noqa: E402
from egnn.episodes import EpisodeSampler  # noqa: E402

WAY, SHOT = 5, 1


def reference_batch(sampler: EpisodeSampler, start: int, count: int):
    """Episodes ``start..start+count`` in the original's task-batch format."""
    eps = sampler.batch(start, count)
    x = torch.stack([e.images for e in eps])  # (B, N, 1, 84, 84) uint8, ink bright
    x = (255 - x).float().div(255).expand(-1, -1, 3, -1, -1)  # as the driver: ink dark, 3 channels
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    y = torch.stack([e.labels for e in eps]).float()
    s = WAY * SHOT
    return [x[:, :s].contiguous(), y[:, :s].contiguous(), x[:, s:].contiguous(), y[:, s:].contiguous()]


class Loader:
    def __init__(self, sampler: EpisodeSampler, per_call: int) -> None:
        self.sampler, self.per_call, self.calls = sampler, per_call, 0

    def get_task_batch(self, num_tasks, num_ways, num_shots, seed=None, num_queries=1):
        assert (num_tasks, num_ways, num_shots, num_queries) == (self.per_call, WAY, SHOT, 1)
        batch = reference_batch(self.sampler, self.calls * num_tasks, num_tasks)
        self.calls += 1
        return batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-dir", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--transductive", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(2)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ref_train, tt = import_reference(args.ref_dir)
    splits = load_dataset("omniglot", None, 84)
    a = tt.arg
    a.device, a.dataset, a.num_ways, a.num_shots, a.num_unlabeled, a.num_layers = torch.device("cpu"), "mini", WAY, SHOT, 0, 3
    a.meta_batch_size, a.test_batch_size, a.seed, a.num_gpus = args.tasks, 10, 222, 1
    a.transductive = a.train_transductive = a.test_transductive = bool(args.transductive)
    a.num_ways_train = a.num_ways_test = WAY
    a.num_shots_train = a.num_shots_test = SHOT
    a.num_edge_features = a.num_node_features = 96
    a.emb_size = 128
    a.train_iteration, a.test_iteration, a.test_interval, a.log_step = args.iterations, args.episodes, 10 ** 9, 10 ** 9
    a.lr, a.grad_clip, a.weight_decay, a.dec_lr, a.dropout = 1e-3, 5, 1e-6, 15000, 0.1
    a.experiment = "roundtrip"
    a.log_dir = str(work / "tb") + "/"
    torch.manual_seed(a.seed)
    enc = ref_train.EmbeddingImagenet(emb_size=a.emb_size)
    gnn = ref_train.GraphNetwork(in_features=a.emb_size, node_features=96, edge_features=96, num_layers=3,
                                 dropout=a.dropout)
    test = EpisodeSampler(splits["test"], WAY, SHOT, 1, seed=args.seed)
    loaders = {"train": Loader(EpisodeSampler(splits["train"], WAY, SHOT, 1, seed=1), args.tasks),
               "test": Loader(test, 10)}
    trainer = ref_train.ModelTrainer(enc_module=enc, gnn_module=gnn, data_loader=loaders)
    trainer.one_hot_encode = lambda n, idx: torch.eye(n, device=idx.device)[idx]
    trainer.train()
    os.chdir(work)  # its save_checkpoint writes under asset/checkpoints/<experiment>/
    os.makedirs(f"asset/checkpoints/{a.experiment}", exist_ok=True)
    trainer.save_checkpoint({"iteration": trainer.global_step, "enc_module_state_dict": enc.state_dict(),
                             "gnn_module_state_dict": gnn.state_dict(), "val_acc": 0.0,
                             "optimizer": trainer.optimizer.state_dict()}, 1)
    scores, labels = [], []
    s = WAY * SHOT

    def hook(m, i, o):
        logit = o[-1]
        qs = logit[:, 0, s:, :s] if a.test_transductive else logit.view(-1, WAY, 2, s + 1, s + 1)[:, :, 0, -1, :s]
        scores.append(torch.bmm(qs, torch.eye(WAY)[rec["support"].long()]).detach())

    rec = {}
    get = loaders["test"].get_task_batch

    def remember(*x, **k):
        out = get(*x, **k)
        rec["support"] = out[1]
        labels.append(out[3].long())
        return out

    loaders["test"].get_task_batch = remember
    gnn.register_forward_hook(hook)
    with torch.no_grad():
        accuracy = float(trainer.eval(partition="test", log_flag=False))
    scores, labels = torch.cat(scores), torch.cat(labels)
    pred = scores.argmax(-1)
    assert abs(float((pred == labels).float().mean()) - accuracy) < 1e-6
    checkpoint = work / "asset" / "checkpoints" / a.experiment / "checkpoint.pth.tar"
    torch.save({"scores": scores, "predictions": pred, "labels": labels, "accuracy": accuracy, "seed": args.seed,
                "episodes": args.episodes, "transductive": bool(args.transductive), "checkpoint": str(checkpoint)},
               work / "reference_predictions.pt")
    print(f"original code: {trainer.global_step} iterations, saved {checkpoint}; test accuracy {100 * accuracy:.2f}% "
          f"over {args.episodes} episodes")


if __name__ == "__main__":
    main()
