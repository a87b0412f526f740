"""Edge labels evolving through EGNN's layers, as networkx graphs and drawings.

``episode_graphs`` returns one ``networkx.DiGraph`` per stage (the initial edges, then each layer): node
attributes ``label`` (true class), ``role`` (support / query / unlabeled) and ``predicted`` (the vote of that
stage, queries only); edge attribute ``similarity`` is exactly the model's edge output ``e[i, j, 0]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb
from pathlib import Path

import networkx as nx
import torch

from egnn.episodes import Episode
from egnn.graph import DenseEpisodes, collate

ROLE_SHAPES = {"support": "o", "query": "s", "unlabeled": "^"}


@dataclass
class StageSummary:
    stage: str
    within_class_similarity: float
    across_class_similarity: float
    query_accuracy: float
    edge_accuracy: float
    clusters: int
    adjusted_rand_index: float


def adjusted_rand_index(truth: list[int], found: list[int]) -> float:
    """Hubert & Arabie's adjusted Rand index between two partitions of the same items."""
    n = len(truth)
    table: dict[tuple[int, int], int] = {}
    for t, f in zip(truth, found):
        table[t, f] = table.get((t, f), 0) + 1
    rows, cols = {}, {}
    for (t, f), c in table.items():
        rows[t] = rows.get(t, 0) + c
        cols[f] = cols.get(f, 0) + c
    index = sum(comb(c, 2) for c in table.values())
    a, b = sum(comb(c, 2) for c in rows.values()), sum(comb(c, 2) for c in cols.values())
    expected = a * b / comb(n, 2) if n > 1 else 0.0
    top = (a + b) / 2 - expected
    return 1.0 if top == 0 else (index - expected) / top


@torch.inference_mode()
def episode_graphs(method, episode: Episode, transductive: bool = True) -> list[nx.DiGraph]:
    """Graphs of the initial edges and of every layer's edges for one episode, for a method that labels edges
    (its output's ``extras["edges"]``) and votes with them (``method.vote``): EGNN and methods built like it."""
    if not callable(getattr(method, "vote", None)):
        raise TypeError(f"Expected an EGNN method (edge labels to draw), got {type(method).__name__}")
    was_training = method.training
    method.eval()
    batch = collate([episode])
    dense = DenseEpisodes.from_batch(batch)  # on the CPU, for networkx; PyG's .to() below moves batch in place
    out = method(batch.to(method.backbone_device), transductive=transductive)
    method.train(was_training)  # e.g. drawn during training, for TensorBoard
    stages = torch.cat([dense.init_edges[None], out.extras["edges"].cpu()])[:, 0]  # (L+1, N, N, 2)
    mask = out.extras["loss_mask"][0].cpu()
    y, query, labeled = dense.y[0], dense.query_mask[0], dense.labeled_mask[0]
    role = ["query" if q else "support" if lab else "unlabeled" for q, lab in zip(query.tolist(), labeled.tolist())]
    graphs = []
    for i, edges in enumerate(stages):
        sim = edges[..., 0]  # (N, N)
        votes = method.vote(sim[None], dense)[0].argmax(-1)  # (N,)
        g = nx.DiGraph(stage="initial" if i == 0 else f"layer {i}", transductive=transductive)
        for n in range(len(y)):
            g.add_node(n, label=int(y[n]), role=role[n], predicted=int(votes[n]) if query[n] else None)
        for a in range(len(y)):
            for b in range(len(y)):
                if a != b and (transductive or not (query[a] and query[b])):
                    g.add_edge(a, b, similarity=float(sim[a, b]), query_edge=bool(mask[a, b]))
        graphs.append(g)
    return graphs


def summarize(graph: nx.DiGraph, threshold: float = 0.5) -> StageSummary:
    """Per-stage statistics: similarity within / across classes, accuracies, and threshold clusters."""
    label = nx.get_node_attributes(graph, "label")
    within = [d["similarity"] for a, b, d in graph.edges(data=True) if label[a] == label[b]]
    across = [d["similarity"] for a, b, d in graph.edges(data=True) if label[a] != label[b]]
    queries = [n for n, r in graph.nodes(data="role") if r == "query"]
    q_acc = sum(graph.nodes[n]["predicted"] == label[n] for n in queries) / max(len(queries), 1)
    qe = [(d["similarity"] > 0.5) == (label[a] == label[b]) for a, b, d in graph.edges(data=True) if d["query_edge"]]
    strong = nx.Graph()
    strong.add_nodes_from(graph)
    strong.add_edges_from((a, b) for a, b, d in graph.edges(data=True)
                          if d["similarity"] > threshold and graph.has_edge(b, a)
                          and graph[b][a]["similarity"] > threshold)  # both directions agree
    components = list(nx.connected_components(strong))
    found = {n: c for c, comp in enumerate(components) for n in comp}
    nodes = sorted(graph)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return StageSummary(graph.graph["stage"], mean(within), mean(across), q_acc, mean(qe), len(components),
                        adjusted_rand_index([label[n] for n in nodes], [found[n] for n in nodes]))


def _layout(graph: nx.DiGraph) -> dict[int, tuple[float, float]]:
    """Nodes on a circle, grouped by true class, so within-class edges are short chords."""
    order = sorted(graph, key=lambda n: (graph.nodes[n]["label"], graph.nodes[n]["role"] == "query", n))
    return nx.circular_layout(nx.path_graph(order)) if order else {}


def draw(graph: nx.DiGraph, ax, pos=None) -> None:
    """Draw one stage: colour = true class, shape = role, width/alpha = similarity, red = strong wrong edge."""
    import matplotlib.pyplot as plt

    pos = pos or _layout(graph)
    label = nx.get_node_attributes(graph, "label")
    cmap = plt.get_cmap("tab10" if max(label.values(), default=0) < 10 else "tab20")
    seen = set()
    for a, b, d in graph.edges(data=True):
        key = (min(a, b), max(a, b))
        if key in seen:
            continue
        seen.add(key)
        s = (d["similarity"] + graph[b][a]["similarity"]) / 2 if graph.has_edge(b, a) else d["similarity"]
        wrong = label[a] != label[b] and s > 0.5
        ax.plot(*zip(pos[a], pos[b]), color="crimson" if wrong else "0.2", lw=0.3 + 3.0 * s,
                alpha=min(1.0, 0.05 + 0.9 * s), zorder=1)
    for role, marker in ROLE_SHAPES.items():
        nodes = [n for n in graph if graph.nodes[n]["role"] == role]
        if nodes:
            nx.draw_networkx_nodes(graph, pos, nodelist=nodes, node_shape=marker, ax=ax, node_size=120,
                                   node_color=[cmap(label[n] % 20) for n in nodes], edgecolors="black", linewidths=0.6)
    s = summarize(graph)
    ax.set_title(f"{graph.graph['stage']}: within {s.within_class_similarity:.2f}, across "
                 f"{s.across_class_similarity:.2f}\nquery acc {s.query_accuracy:.2f}, ARI {s.adjusted_rand_index:.2f}",
                 fontsize=8)
    ax.set_axis_off()


def grid_figure(graphs: list[nx.DiGraph], pos=None):
    """One matplotlib figure with every stage side by side (the grid PNG, and TensorBoard's image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = pos or _layout(graphs[0])
    fig, axes = plt.subplots(1, len(graphs), figsize=(3.6 * len(graphs), 3.9), dpi=100)
    for g, ax in zip(graphs, axes):
        draw(g, ax, pos)
    return fig


def render(graphs: list[nx.DiGraph], out: str | Path) -> dict[str, Path]:
    """Write one PNG per stage, a grid PNG and an animated GIF; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pos = _layout(graphs[0])
    files: dict[str, Path] = {}
    for i, g in enumerate(graphs):
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        draw(g, ax, pos)
        files[f"stage{i}"] = out / f"stage{i}_{g.graph['stage'].replace(' ', '')}.png"
        fig.savefig(files[f"stage{i}"], bbox_inches="tight")
        plt.close(fig)
    fig = grid_figure(graphs, pos)
    files["grid"] = out / "grid.png"
    fig.savefig(files["grid"], bbox_inches="tight")
    plt.close(fig)
    frames = [Image.open(files[f"stage{i}"]).convert("RGB") for i in range(len(graphs))]
    size = frames[0].size
    frames = [f.resize(size) for f in frames]
    files["gif"] = out / "layers.gif"
    frames[0].save(files["gif"], save_all=True, append_images=frames[1:], duration=900, loop=0)
    return files
