"""How a query's vote should be normalised on a sparse kNN graph when classes have uneven numbers of examples.

On a dense graph every query is joined to every labeled example, and EGNN's class probabilities compare each
class's *mean* similarity to its examples (so a class with 5 examples does not outvote one with 1 by count). On a
kNN graph (``--knn k``) a query is joined only to its nearest nodes and its ``k`` nearest labeled examples, so a
class's vote sums over the examples that reach the query, not all of them. Three ways to normalise it, measured on
the same episodes of Omniglot's test characters with a trained checkpoint:

- ``sum``: the raw vote (what evaluation's argmax uses);
- ``shots``: divided by the class's number of examples (the dense rule, the current one);
- ``reach``: divided by the number of the class's examples joined to that query (the mean over what it sees).

    python scripts/knn_vote.py --checkpoint results/checkpoints/omniglot_5w1s.pt --episodes 300

Writes ``results/knn_vote_omniglot.{json,md}`` (accuracy ± 95% CI per rule, shot pattern and k; paired
differences against ``shots``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from egnn.data import load_dataset  # noqa: E402
from egnn.data.paths import atomic_write_text  # noqa: E402
from egnn.devices import describe  # noqa: E402
from egnn.episodes import EpisodeSampler  # noqa: E402
from egnn.graph import support_query_graph  # noqa: E402
from egnn.losses import mean_ci95  # noqa: E402
from egnn.models import load_trained  # noqa: E402
from egnn.provenance import provenance  # noqa: E402

RULES = ("sum", "shots", "reach")
PATTERNS = {"1-5 random": (1, 5), "1 or 10": (1, 10), "5 each": (5, 5)}


def shots_of(pattern: str, way: int, gen: torch.Generator) -> torch.Tensor:
    low, high = PATTERNS[pattern]
    if pattern == "1 or 10":
        return torch.where(torch.rand(way, generator=gen) < 0.5, low, high)
    return torch.randint(low, high + 1, (way,), generator=gen)


def episode_scores(method, ep, shots: torch.Tensor, knn: int):
    """The query votes of one episode with ``shots[c]`` examples of class ``c``; with ``knn``, the number of each
    class's examples joined to each query."""
    from torch_geometric.data import Batch

    way, max_shot = ep.way, ep.shot
    keep = torch.cat([torch.arange(way * max_shot).view(way, max_shot)[c, :int(shots[c])] for c in range(way)])
    x = torch.cat([ep.images[keep], ep.images[way * max_shot:]])
    s = keep.numel()
    y = torch.cat([ep.labels[keep], torch.full((x.shape[0] - s,), -1)])
    truth = ep.labels[way * max_shot:]
    labeled = torch.arange(x.shape[0]) < s
    method.knn = knn
    graph = support_query_graph(x, y, s, labeled, way, full_edges=knn == 0)
    with torch.inference_mode():
        out = method(Batch.from_data_list([graph]), transductive=True)
    votes = out.logits[0].float()  # (Q, way)
    if knn == 0:
        reach = shots.float().expand_as(votes)
    else:
        src, dst = out.extras["edge_index"]
        joined = labeled[src] & ~labeled[dst]
        reach = torch.zeros(x.shape[0], way)
        reach.index_put_((dst[joined], y[src[joined]]), torch.ones(int(joined.sum())), accumulate=True)
        reach = reach[s:]
    return votes, reach, truth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "results" / "checkpoints" / "omniglot_5w1s.pt"))
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--query", type=int, default=10, help="queries per class")
    p.add_argument("--knn", default="0,4,8,20", help="0: the dense graph")
    p.add_argument("--data-root", default=os.environ.get("EGNN_DATA"))
    p.add_argument("--out", default=str(ROOT / "results" / "knn_vote_omniglot"))
    args = p.parse_args()
    started = time.time()
    torch.set_num_threads(2)
    method, cfg = load_trained(args.checkpoint)
    method.eval()
    split = load_dataset(cfg.dataset, args.data_root, cfg.image_size)["test"]
    sampler = EpisodeSampler(split, args.way, 10, args.query, seed=0)
    ks = [int(k) for k in args.knn.split(",")]
    acc = {(pat, k, rule): [] for pat in PATTERNS for k in ks for rule in RULES}
    for i in range(args.episodes):
        ep = sampler.episode(i)
        gen = torch.Generator().manual_seed(i)
        for pat in PATTERNS:
            shots = shots_of(pat, args.way, gen)
            for k in ks:
                votes, reach, truth = episode_scores(method, ep, shots, k)
                for rule, scores in (("sum", votes), ("shots", votes / shots.float()),
                                     ("reach", votes / reach.clamp_min(1))):
                    acc[pat, k, rule].append(float((scores.argmax(-1) == truth).float().mean()))
    rows = []
    for (pat, k, rule), per in acc.items():
        mean, ci = mean_ci95(per)
        diff = torch.tensor(per) - torch.tensor(acc[pat, k, "shots"])
        d_mean, d_ci = mean_ci95(diff.tolist())
        rows.append({"shots": pat, "knn": k, "rule": rule, "accuracy": mean, "ci95": ci,
                     "minus_shots": d_mean, "minus_shots_ci95": d_ci})
    lines = [f"# kNN vote normalisation, {args.way}-way, {args.query} queries/class, {args.episodes} episodes "
             f"of Omniglot test characters ({Path(args.checkpoint).name})", "",
             "| examples per class | graph | sum | shots (current) | reach | reach - shots (paired) |",
             "|---|---|---|---|---|---|"]
    for pat in PATTERNS:
        for k in ks:
            r = {row["rule"]: row for row in rows if row["shots"] == pat and row["knn"] == k}
            cell = lambda x: f"{100 * x['accuracy']:.2f} ± {100 * x['ci95']:.2f}"  # noqa: E731
            lines.append(f"| {pat} | {'dense' if k == 0 else f'knn{k}'} | {cell(r['sum'])} | {cell(r['shots'])} | "
                         f"{cell(r['reach'])} | {100 * r['reach']['minus_shots']:+.2f} ± "
                         f"{100 * r['reach']['minus_shots_ci95']:.2f} |")
    made = provenance("python scripts/knn_vote.py", started=started)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(f"{args.out}.json", json.dumps({**made, "checkpoint": args.checkpoint, "device": describe("cpu"), "rows": rows}, indent=1))
    atomic_write_text(f"{args.out}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
