"""Does the graph help? An EGNN model's vote against nearest prototypes on its own backbone features.

    python scripts/prototypes_on_features.py --checkpoint CKPT --way 20 --shot 5 [--query 1] [--episodes 1000]
        --out results/prototypes_on_features_20w5s.json

On the same fixed test episodes (seed 0, transductive, as `egnn eval`), each query is classified twice: by the
model's similarity-weighted vote after its graph layers, and by the nearest class mean (Euclidean) of the labeled
supports' backbone features. The paired difference says whether the graph layers add to the embedding or lose.

Where they lose, `variants` says at which step, each paired with the vote: the vote with every layer's edges
(`layer1_vote`..), the last layer's vote by each class's best support (`max_vote`) or by the sum of log-similarities
(`log_vote`, a product: the query must resemble every support of the class), the vote with the last edge update's
own pair similarity before its row normalisation (`raw_similarity_vote`), and nearest prototypes on the node
features after each node update (`node1_prototypes`..). One forward pass per batch; hooks read the inner values.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from egnn.data import load_dataset
from egnn.devices import describe
from egnn.episodes import EpisodeSampler
from egnn.graph import DenseEpisodes, collate
from egnn.losses import mean_ci95
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
    inner = capture_inner_values(method)
    scores: dict[str, list[torch.Tensor]] = {}
    supports = args.way * args.shot
    with torch.no_grad():
        for first in range(0, args.episodes, args.batch):
            inner["nodes"] = []
            batch = collate(sampler.batch(first, min(args.batch, args.episodes - first)), full_edges=True)
            out = method(batch, transductive=True)
            labels, dense = out.query_labels, DenseEpisodes.from_batch(batch)  # (B, Q); supports first

            def vote(similarity: torch.Tensor) -> torch.Tensor:  # the method's own vote, on other edges
                return method.queries(method.vote(similarity, dense), dense).argmax(-1)

            onehot = F.one_hot(dense.y[:, :supports], args.way).float()  # (B, S, way)
            hits = {"graph_vote": out.logits.argmax(-1), "prototypes": nearest_mean(inner["embedding"], onehot)}
            edges = out.extras["edges"][..., 0]  # (L, B, N, N)
            for layer, sim in enumerate(edges, 1):
                hits[f"layer{layer}_vote"] = vote(sim)
            last = edges[-1][:, supports:, :supports, None]  # (B, Q, S, 1)
            hits["max_vote"] = (last * onehot[:, None]).amax(2).argmax(-1)
            hits["log_vote"] = (last.clamp_min(1e-12).log() * onehot[:, None]).sum(2).argmax(-1)
            hits["raw_similarity_vote"] = vote(inner["raw_similarity"])
            for layer, v in enumerate(inner["nodes"], 1):
                hits[f"node{layer}_prototypes"] = nearest_mean(v, onehot)
            for name, pred in hits.items():
                scores.setdefault(name, []).append((pred == labels).float().mean(1))
    acc = {name: torch.cat(values) for name, values in scores.items()}
    result = {"checkpoint": args.checkpoint, "way": args.way, "shot": args.shot, "query": args.query,
              "episodes": args.episodes, "seed": 0, "transductive": True, "device": describe("cpu")}
    acc["graph_minus_prototypes"] = acc["graph_vote"] - acc["prototypes"]
    for name in ("graph_vote", "prototypes", "graph_minus_prototypes"):
        mean, ci = mean_ci95(acc[name])
        result[name] = {"mean": mean * 100, "ci95": ci * 100}
    result["variants"] = {}
    for name, a in acc.items():
        if name in result:
            continue
        (mean, ci), (diff, diff_ci) = mean_ci95(a), mean_ci95(a - acc["graph_vote"])
        result["variants"][name] = {"mean": mean * 100, "ci95": ci * 100, "minus_graph_vote": diff * 100,
                                    "minus_graph_vote_ci95": diff_ci * 100}
    result.update(provenance("python scripts/prototypes_on_features.py", started=started))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.way}w{args.shot}s q{args.query}: graph vote {result['graph_vote']['mean']:.2f} ± "
          f"{result['graph_vote']['ci95']:.2f}, prototypes {result['prototypes']['mean']:.2f} ± "
          f"{result['prototypes']['ci95']:.2f}, graph − prototypes {result['graph_minus_prototypes']['mean']:+.2f} ± "
          f"{result['graph_minus_prototypes']['ci95']:.2f} (paired)")
    for name, r in result["variants"].items():
        print(f"  {name}: {r['mean']:.2f} ± {r['ci95']:.2f}, minus the vote {r['minus_graph_vote']:+.2f} ± "
              f"{r['minus_graph_vote_ci95']:.2f}")


def capture_inner_values(method) -> dict:
    """Hooks that keep, for the last forward pass, the graph network's input (the embedding, ``(B, N, D)``), the
    node features after each node update (``nodes``), and the last edge update's pair similarity before its row
    normalisation (``raw_similarity``, ``(B, N, N)``)."""
    inner: dict = {"nodes": []}
    method.gnn.register_forward_pre_hook(lambda module, args: inner.update(embedding=args[0]))
    for update in method.gnn.node_updates:
        update.register_forward_hook(lambda module, args, out: inner["nodes"].append(out))
    last = method.gnn.edge_updates[-1]
    pair_similarity = last.pair_similarity

    def keep(v: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        sim = pair_similarity(v, node_mask)  # (B, N, N, 1)
        inner["raw_similarity"] = sim[..., 0]
        return sim

    last.pair_similarity = keep  # in eval mode the edge update takes this symmetric path
    return inner


def nearest_mean(v: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Each query's nearest class mean (Euclidean) of the labeled supports' features: ``(B, Q)`` predictions
    from node features ``(B, N, D)`` (supports first) and support labels one-hot ``(B, S, way)``."""
    s = onehot.shape[1]
    means = onehot.transpose(1, 2) @ v[:, :s] / onehot.sum(1)[..., None]  # (B, way, D)
    return torch.cdist(v[:, s:], means).argmin(-1)


if __name__ == "__main__":
    main()
