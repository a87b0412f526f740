import torch

from egnn.graph import DenseEpisodes, collate, episode_to_graph, init_edge_attr
from tests.conftest import make_episode

S, D, H = [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]


def test_edge_initialisation_is_exact_on_a_hand_built_episode():
    # 2-way 2-shot, second shot of each class unlabeled, 1 query per class.
    # nodes: 0 (c0, labeled), 1 (c0, unlabeled), 2 (c1, labeled), 3 (c1, unlabeled), 4 (c0 query), 5 (c1 query)
    ep = make_episode(way=2, shot=2, query=1, labeled_shots=1)
    data = episode_to_graph(ep)
    expected = torch.tensor([
        [S, H, D, H, H, H],
        [H, S, H, H, H, H],
        [D, H, S, H, H, H],
        [H, H, H, S, H, H],
        [H, H, H, H, S, H],
        [H, H, H, H, H, S],
    ])
    assert torch.equal(data.edge_attr.view(6, 6, 2), expected)
    assert data.edge_index.shape == (2, 36)
    src, dst = data.edge_index
    assert torch.equal(data.edge_label, (ep.labels[src] == ep.labels[dst]).float())
    assert data.support_mask.tolist() == [True] * 4 + [False] * 2
    assert data.labeled_mask.tolist() == [True, False, True, False, False, False]


def test_edges_never_depend_on_query_or_unlabeled_labels():
    labels = torch.tensor([0, 1, 0, 1, 0])
    labeled = torch.tensor([True, True, False, False, False])
    scrambled = torch.tensor([0, 1, 1, 0, 1])  # hidden labels changed
    assert torch.equal(init_edge_attr(labels, labeled), init_edge_attr(scrambled, labeled))


def test_batch_dense_view_matches_each_graph():
    eps = [make_episode(seed=i) for i in range(3)]
    dense = DenseEpisodes.from_batch(collate(eps))
    n = eps[0].labels.numel()
    assert dense.init_edges.shape == (3, n, n, 2)
    for i, ep in enumerate(eps):
        assert torch.equal(dense.init_edges[i], episode_to_graph(ep).edge_attr.view(n, n, 2))
        assert torch.equal(dense.y[i], ep.labels)
    assert dense.way == 3


def test_fast_collate_equals_pyg_batching():
    """The whole-batch collate builds exactly the tensors of Batch.from_data_list, semi-supervised included."""
    from torch_geometric.data import Batch

    from egnn.graph import collate, episode_to_graph
    from tests.conftest import make_episode

    for labeled_shots in (None, 1):
        eps = [make_episode(way=3, shot=2, query=2, labeled_shots=labeled_shots, seed=s) for s in range(4)]
        fast, slow = collate(eps), Batch.from_data_list([episode_to_graph(e) for e in eps])
        for key in ("x", "y", "support_mask", "query_mask", "labeled_mask", "edge_index", "edge_attr", "edge_label",
                    "way", "batch", "ptr"):
            a, b = getattr(fast, key), getattr(slow, key)
            assert a.dtype == b.dtype and torch.equal(a, b), key
