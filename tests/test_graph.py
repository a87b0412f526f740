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


def test_equal_sized_batches_take_the_sync_free_dense_view_and_compute_the_same():
    """collate's layout lets the dense view be a reshape (no host sync on a GPU). It must equal the padded view
    of the same graphs batched by PyG, and EGNN must compute the same outputs and gradients on both."""
    from torch_geometric.data import Batch

    from egnn.nn.utils import all_real
    from tests.conftest import make_method

    for labeled_shots in (None, 1):
        eps = [make_episode(way=3, shot=2, query=2, labeled_shots=labeled_shots, seed=s) for s in range(4)]
        fast_batch, slow_batch = collate(eps), Batch.from_data_list([episode_to_graph(e) for e in eps])
        slow_batch.nodes_per_episode = 12  # the same encoder statistics per node slot; only the dense view differs
        fast, slow = DenseEpisodes.from_batch(fast_batch), DenseEpisodes.from_batch(slow_batch)
        assert (fast.supports, fast.queries) == (6, 6) and slow.queries is None
        assert all_real(fast.node_mask) and fast.node_mask.is_full and not hasattr(slow.node_mask, "is_full")
        for key in ("init_edges", "node_mask", "support_mask", "query_mask", "labeled_mask", "y"):
            assert torch.equal(getattr(fast, key), getattr(slow, key)), key
        assert fast.way == slow.way == 3 and torch.equal(fast.per_query_index(), slow.per_query_index())
        for transductive in (True, False):
            grads = []
            for batch in (fast_batch, slow_batch):
                method = make_method(seed=3).train()
                out = method(batch, transductive=transductive)
                method.loss(out).backward()
                grads.append((out.logits, [p.grad for p in method.parameters() if p.grad is not None]))
            (a, ga), (b, gb) = grads
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            for x, y in zip(ga, gb):
                torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def test_equal_sized_batches_never_read_a_mask_from_the_device(monkeypatch):
    """On a GPU, reading a mask's values (``bool(mask.all())``) waits for the device inside the training step
    (tests/gpu checks it under torch's sync debug mode; the non-transductive per-query graphs did so until the
    first GPU session found it). On the CPU: with equal-sized episodes, every mask the layers ask about is one
    whose fullness is known without reading it, transductive and not, fully and partly labeled."""
    import egnn.nn.edge_update
    import egnn.nn.utils as utils

    real = utils.all_real

    def known_only(mask):
        assert hasattr(mask, "is_full"), "a mask read from the device"
        return real(mask)

    monkeypatch.setattr(utils, "all_real", known_only)
    monkeypatch.setattr(egnn.nn.edge_update, "all_real", known_only)
    from tests.conftest import make_method

    for labeled_shots in (None, 1):
        batch = collate([make_episode(way=3, shot=2, query=2, labeled_shots=labeled_shots, seed=s) for s in range(4)])
        for transductive in (True, False):
            method = make_method(seed=3).train()
            method.loss(method(batch, transductive=transductive)).backward()


def test_knn_edges_on_a_line_by_hand():
    """Nodes at 0, 1, 2, 10, 11 on a line (one episode) and node 5 at 100 (another); anchors: nodes 0 and 3. With
    k = 1 and k_anchor = 1 each node receives a self-loop, its nearest node of its episode and its nearest anchor
    of its episode; node 5 is alone in its episode."""
    from egnn.graph import knn_edges

    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [100.0]])
    batch = torch.tensor([0, 0, 0, 0, 0, 1])
    anchors = torch.tensor([True, False, False, True, False, False])
    src, dst = knn_edges(x, batch, 1, anchors, 1)
    got = sorted(zip(src.tolist(), dst.tolist()))
    loops = [(i, i) for i in range(6)]
    nearest = [(1, 0), (0, 1), (1, 2), (4, 3), (3, 4)]  # (j -> i): node 1's nearest is 0 (tie with 2: the first)
    nearest_anchor = [(3, 0), (0, 1), (0, 2), (0, 3), (3, 4)]  # node 0's nearest other anchor is 3
    assert got == sorted(set(loops + nearest + nearest_anchor))
    src, dst = knn_edges(x, batch, 1)  # without anchors: only the nearest nodes
    assert sorted(zip(src.tolist(), dst.tolist())) == sorted(set(loops + nearest))
