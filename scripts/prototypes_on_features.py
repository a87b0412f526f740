"""Does the graph help? An EGNN model's vote against nearest prototypes on its own backbone features.

    python scripts/prototypes_on_features.py --checkpoint CKPT --way 20 --shot 5 [--query 1] [--episodes 1000]
        --out results/prototypes_on_features_20w5s.json

On the same fixed test episodes (seed 0, transductive, as `egnn eval`), each query is classified twice: by the
model's similarity-weighted vote after its graph layers, and by the nearest class mean (Euclidean) of the labeled
supports' backbone features. The paired difference says whether the graph layers add to the embedding or lose.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from egnn.data import load_dataset
from egnn.devices import describe
from egnn.episodes import EpisodeSampler
from egnn.graph import collate
from egnn.losses import mean_ci95, query_accuracy
from egnn.models import load_trained
from egnn.provenance import provenance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--way", type=int, required=True)
    p.add_argument("--shot", type=int, required=True)
    p.add_argument("--query", type=int, default=1)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    started = time.time()
    method, cfg = load_trained(args.checkpoint, "cpu")
    split = load_dataset(cfg.dataset, None, cfg.image_size)["test"]
    sampler = EpisodeSampler(split, args.way, args.shot, args.query, seed=0)
    method.eval()
    graph, protos = [], []
    supports = args.way * args.shot
    with torch.no_grad():
        for first in range(0, args.episodes, args.batch):
            batch = collate(sampler.batch(first, min(args.batch, args.episodes - first)), full_edges=True)
            out = method(batch, transductive=True)
            graph.append(query_accuracy(out.logits, out.query_labels))
            v, dense = method.embed(batch)  # (B, N, D), supports first
            onehot = torch.nn.functional.one_hot(dense.y[:, :supports], args.way).float()  # (B, S, way)
            means = onehot.transpose(1, 2) @ v[:, :supports] / onehot.sum(1)[..., None]  # (B, way, D)
            nearest = torch.cdist(v[:, supports:], means).argmin(-1)
            protos.append((nearest == dense.y[:, supports:]).float().mean(1))
    graph, protos = torch.cat(graph).float(), torch.cat(protos)
    result = {"checkpoint": args.checkpoint, "way": args.way, "shot": args.shot, "query": args.query,
              "episodes": args.episodes, "seed": 0, "transductive": True, "device": describe("cpu")}
    for name, acc in (("graph_vote", graph), ("prototypes", protos), ("graph_minus_prototypes", graph - protos)):
        mean, ci = mean_ci95(acc)
        result[name] = {"mean": mean * 100, "ci95": ci * 100}
    result.update(provenance("python scripts/prototypes_on_features.py", started=started))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.way}w{args.shot}s q{args.query}: graph vote {result['graph_vote']['mean']:.2f} ± "
          f"{result['graph_vote']['ci95']:.2f}, prototypes {result['prototypes']['mean']:.2f} ± "
          f"{result['prototypes']['ci95']:.2f}, graph − prototypes {result['graph_minus_prototypes']['mean']:+.2f} ± "
          f"{result['graph_minus_prototypes']['ci95']:.2f} (paired)")


if __name__ == "__main__":
    main()
