#!/usr/bin/env python
"""Why MTL's classifier trails nearest prototypes on its own pretrained features (issue 18, item 6).

    python scripts/mtl_base_learner.py --pretrained runs/mtl_pre/best.pt --episodes 300 --json results/mtl_base_learner.json

Embeds fixed Omniglot test episodes (5-way 1-shot, 15 queries) once with a pretrained backbone (``egnn pretrain``;
Scaling-and-Shifting at its identity initialisation, i.e. the pretrained features themselves) and scores the
queries with: nearest prototypes (Euclidean, as ProtoNet and the pretraining's own few-shot validation), cosine
prototypes, and MTL's base learner (``egnn.mtl.fit_classifier``: a linear classifier fitted by gradient steps on
the support set from a zero initialisation, which is where meta-training starts) over a grid of steps and step
sizes, on the raw features and on L2-normalised ones, and from Proto-MAML's prototype initialisation.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrained", required=True)
    p.add_argument("--data-root", default=os.environ.get("EGNN_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args()

    from egnn.config import make_config
    from egnn.data import load_dataset
    from egnn.episodes import EpisodeSampler
    from egnn.graph import collate
    from egnn.losses import mean_ci95
    from egnn.mtl import classify, fit_classifier
    from egnn.data.paths import atomic_write_text
    from egnn.provenance import provenance
    from egnn.models import build_method

    import platform
    import time

    start = time.perf_counter()
    cfg = make_config(dataset="omniglot", model="mtl", backbone="resnet12-mtl", backbone_checkpoint=args.pretrained,
                      way=args.way, shot=args.shot)
    split = load_dataset("omniglot", args.data_root)["test"]
    method = build_method(cfg, 1, 28).eval()
    sampler = EpisodeSampler(split, args.way, args.shot, 15, seed=0)
    feats, labels = [], []
    with torch.inference_mode():
        for first in range(0, args.episodes, 50):
            batch = collate(sampler.batch(first, min(50, args.episodes - first)))
            v, dense = method.embed(batch)  # (B, N, D)
            feats.append(v)
            labels.append(dense.y)
    v, y = torch.cat(feats), torch.cat(labels)
    s = args.way * args.shot
    sup, q, ys, yq = v[:, :s], v[:, s:], y[:, :s], y[:, s:]
    onehot = F.one_hot(ys, args.way).float()
    protos = onehot.transpose(1, 2) @ sup / onehot.sum(1)[..., None]  # (B, way, D)

    def acc(logits):
        return mean_ci95((logits.argmax(-1) == yq).float().mean(1))

    rows = {"nearest prototype (Euclidean)": acc(-torch.cdist(q, protos)),
            "cosine prototype": acc(F.normalize(q, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)),
            "dot-product prototype (what one gradient step from zero computes)": acc(q @ protos.transpose(1, 2))}
    # Proto-MAML's initialisation (Triantafillou et al., ICLR 2020): w_c = 2 p_c, b_c = -|p_c|^2 is exactly the
    # Euclidean nearest-prototype classifier as a linear one; the base learner then starts where prototypes are
    for steps, lr in ((0, 0.1), (20, 0.1), (20, 0.01)):
        init = torch.cat([2 * protos, -protos.square().sum(-1, keepdim=True)], -1)  # (B, way, D + 1), per task
        w = init if steps == 0 else torch.stack([fit_classifier(xs[None], ys_[None], args.way, steps, lr, i)[0]
                                                 for xs, ys_, i in zip(sup, ys, init)])
        rows[f"base learner from the prototype initialisation, {steps} steps, lr {lr}"] = acc(classify(q, w))
    norms = sup.norm(dim=-1)
    for normed in (False, True):
        xs, xq = (F.normalize(sup, dim=-1), F.normalize(q, dim=-1)) if normed else (sup, q)
        for steps in (20, 100):
            for lr in (0.01, 0.1, 1.0, 10.0):
                w = fit_classifier(xs, ys, args.way, steps, lr)
                rows[f"base learner, {steps} steps, lr {lr}{', L2-normalised features' if normed else ''}"] = \
                    acc(classify(xq, w))
    for name, (m, ci) in rows.items():
        print(f"{100 * m:6.2f} ± {100 * ci:.2f}  {name}")
    print(f"support feature norms: mean {float(norms.mean()):.2f}, min {float(norms.min()):.2f}, "
          f"max {float(norms.max()):.2f} (dimension {v.shape[-1]})")
    if args.json:
        from egnn.checkpoint import load_checkpoint

        blob = load_checkpoint(args.pretrained)
        atomic_write_text(args.json, json.dumps({**provenance("python scripts/mtl_base_learner.py"),
                                               "pretrained": args.pretrained, "pretrained_val_acc": blob.get("val_acc"),
                                               "pretrained_iterations": blob["config"].get("iterations"),
                                               "pretrained_widths": blob["config"].get("widths"),
                                               "device": f"cpu ({platform.machine()}, {os.cpu_count()} CPUs)",
                                               "wall_seconds": round(time.perf_counter() - start, 1),
                                               "episodes": args.episodes, "way": args.way, "shot": args.shot,
                                               "accuracy": {k: {"mean": m, "ci95": ci} for k, (m, ci) in rows.items()},
                                               "support_feature_norm_mean": float(norms.mean())}, indent=2) + "\n")


if __name__ == "__main__":
    main()
