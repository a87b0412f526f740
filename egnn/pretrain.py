"""Stage 1 of Meta-Transfer Learning: a backbone pretrained as a plain classifier over every training class.

SGD with Nesterov momentum, weight decay 5e-4, learning rate divided by 10 at 50% and 75% of the iterations,
training-time augmentation as configured. Model selection: few-shot accuracy on validation episodes with the
backbone's features and nearest prototypes (ProtoNet without meta-training), the usual proxy for transfer.
Checkpoints are atomic and carry every RNG state; ``resume=True`` continues from ``last.pt``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from egnn.backbones import backbone_from_config
from egnn.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from egnn.config import Config
from egnn.data import load_dataset
from egnn.data.transforms import augment, resolve_augment, resolve_normalize
from egnn.errors import UserError
from egnn.devices import resolve_device
from egnn.trainer import evaluate, seed_everything


def pretrain(cfg: Config, batch_size: int = 128, resume: bool = False, log=print,
             stop_at: int | None = None) -> dict[str, Any]:
    """Train ``cfg.backbone`` on all images of the training classes; write ``best.pt`` / ``last.pt`` in ``cfg.out``.
    ``stop_at`` ends the run early at that iteration (as an interruption would), keeping the full schedule."""
    from baselines.protonet import PrototypicalNetworks

    out = Path(cfg.out)
    if (out / "last.pt").exists() and not resume:
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or --out for a new run")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    splits = load_dataset(cfg.dataset, cfg.data_root, cfg.image_size)
    train = splits["train"]
    seed_everything(cfg.seed)
    c, size = train.image_shape[0], train.image_shape[-1]
    backbone = backbone_from_config(cfg, c, size, 0)
    method = PrototypicalNetworks(backbone)  # holds the normalisation and scores validation episodes
    if resolve_normalize(cfg.normalize, cfg.dataset):
        method.set_normalization(*train.channel_stats())
    head = torch.nn.Linear(backbone.out_features, train.num_classes)
    device = resolve_device(cfg.device)
    method, head = method.to(device), head.to(device)
    params = [*backbone.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [cfg.iterations // 2, cfg.iterations * 3 // 4], 0.1)
    kind = resolve_augment(cfg.augment, cfg.dataset)
    it, best, seconds = 0, -1.0, 0.0
    if resume and (out / "last.pt").exists():
        blob = load_checkpoint(out / "last.pt")
        method.load_state_dict(blob["model"])  # load_state_dict copies into the device's tensors
        head.load_state_dict(blob["head"])
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
        it, best, seconds = blob["iteration"], blob["best_val"], blob["train_seconds"]
        set_rng_state(blob["rng"])
    out.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    while it < min(cfg.iterations, stop_at or cfg.iterations):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it)  # batch i is a function of (seed, i)
        idx = torch.randint(0, train.labels.numel(), (batch_size,), generator=gen)
        x = augment(train.images[idx], kind, gen).to(device, non_blocking=True)
        method.train(), head.train()
        loss = F.cross_entropy(head(method.backbone(method.normalize(x))), train.labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        it += 1
        if it % cfg.val_every == 0 or it == cfg.iterations:
            val = evaluate(method, splits["val"], way=cfg.way, shot=cfg.shot, query=cfg.eval_query,
                           episodes=cfg.val_episodes, transductive=False, seed=cfg.eval_seed, device=device,
                           batch_size=cfg.eval_batch).accuracy
            seconds += time.perf_counter() - tick
            tick = time.perf_counter()
            record = {"iteration": it, "loss": loss.item(), "val_acc": val, "lr": opt.param_groups[0]["lr"],
                      "seconds": round(seconds, 2)}
            log(json.dumps(record))
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            common = {"kind": "pretrain", "config": cfg.to_dict(), "in_channels": c, "image_size": size,
                      "model": method.state_dict(), "iteration": it}
            if val > best:
                best = val
                save_checkpoint(out / "best.pt", **common, val_acc=val)
            save_checkpoint(out / "last.pt", **common, head=head.state_dict(), optimizer=opt.state_dict(),
                            scheduler=sched.state_dict(), best_val=best, train_seconds=seconds, rng=rng_state())
    return {"best_val_acc": best, "iterations": it, "train_seconds": seconds, "checkpoint": str(out / "best.pt")}
