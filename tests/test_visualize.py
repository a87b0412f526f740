import networkx as nx
import pytest
import torch

from egnn.graph import collate
from egnn.visualize import adjusted_rand_index, episode_graphs, render, summarize
from tests.conftest import make_episode, make_method


@pytest.mark.parametrize("transductive", [True, False])
def test_graphs_hold_the_model_edges_and_node_roles(transductive):
    method = make_method()
    ep = make_episode(way=3, shot=2, query=2, labeled_shots=1)
    graphs = episode_graphs(method, ep, transductive=transductive)
    with torch.no_grad():
        edges = method(collate([ep]), transductive=transductive).extras["edges"][:, 0, ..., 0]  # (L, N, N)
    assert [g.graph["stage"] for g in graphs] == ["initial", "layer 1", "layer 2", "layer 3"]
    n = ep.labels.numel()
    for layer, g in enumerate(graphs[1:]):
        for a, b, d in g.edges(data=True):
            assert d["similarity"] == pytest.approx(float(edges[layer, a, b]), abs=0)
    assert graphs[0][0][1]["similarity"] == 0.5 and graphs[0][0][2]["similarity"] == 0.0  # unlabeled / other class
    roles = [graphs[0].nodes[i]["role"] for i in range(n)]
    assert roles == ["support", "unlabeled"] * 3 + ["query"] * 6
    assert [graphs[0].nodes[i]["label"] for i in range(n)] == ep.labels.tolist()
    query_pairs = [(a, b) for a, b in graphs[1].edges if a >= 6 and b >= 6]
    assert bool(query_pairs) == transductive  # non-transductive graphs have no query-query edges
    votes = method.vote(edges[-1:], _dense(ep))[0].argmax(-1)
    assert [graphs[-1].nodes[i]["predicted"] for i in range(6, n)] == votes[6:].tolist()


def _dense(ep):
    from egnn.graph import DenseEpisodes
    return DenseEpisodes.from_batch(collate([ep]))


def test_summary_on_a_hand_built_graph():
    g = nx.DiGraph(stage="layer 1")
    for n, (label, role, pred) in enumerate([(0, "support", None), (0, "query", 0), (1, "support", None),
                                              (1, "query", 0)]):
        g.add_node(n, label=label, role=role, predicted=pred)
    sims = {(0, 1): 0.9, (1, 0): 0.8, (2, 3): 0.2, (3, 2): 0.3, (0, 2): 0.1, (2, 0): 0.1, (1, 3): 0.6, (3, 1): 0.7,
            (0, 3): 0.4, (3, 0): 0.4, (1, 2): 0.1, (2, 1): 0.1}
    for (a, b), s in sims.items():
        g.add_edge(a, b, similarity=s, query_edge=g.nodes[a]["role"] == "query" or g.nodes[b]["role"] == "query")
    s = summarize(g)
    assert s.within_class_similarity == pytest.approx((0.9 + 0.8 + 0.2 + 0.3) / 4)
    assert s.across_class_similarity == pytest.approx((0.1 * 4 + 0.6 + 0.7 + 0.4 * 2) / 8)
    assert s.query_accuracy == 0.5
    assert s.clusters == 2  # {0, 1, 3} joined through the wrong strong edge 1-3, and {2}
    # clusters {0, 1, 3}, {2} against classes {0, 1}, {2, 3}: pairs together in both 1 (0-1); in the classes 2, in
    # the clusters 3, of 6 pairs; expected 2 * 3 / 6 = 1, so the adjusted index is (1 - 1) / ((2 + 3) / 2 - 1) = 0
    assert s.adjusted_rand_index == 0.0


def test_adjusted_rand_index():
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7]) == 1.0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    # by hand: contingency {2, 1, 1, 2} -> index 2; rows (3, 3) -> 6; columns (2, 2, 2) -> 3; expected 6 * 3 / 15;
    # (2 - 1.2) / (4.5 - 1.2) = 8 / 33
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(8 / 33)


def test_render_writes_layers_grid_and_gif(tmp_path):
    graphs = episode_graphs(make_method(), make_episode(way=2, shot=1, query=1))
    files = render(graphs, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files.values())
    from PIL import Image
    assert Image.open(files["gif"]).n_frames == len(graphs)
