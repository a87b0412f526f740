import pytest
import torch

from egnn.nn import EGNN, EdgeUpdate, NodeUpdate


def random_graph(b=2, n=7, f=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, n, f, generator=g)
    e = torch.rand(b, n, n, 2, generator=g) + 0.05
    e = e / e.sum(-1, keepdim=True)
    return v, e, torch.ones(b, n, dtype=torch.bool)


def permute(v, e, mask, p):
    return v[:, p], e[:, p][:, :, p], mask[:, p]


@pytest.mark.parametrize("train_mode", [False, True])
def test_layers_are_equivariant_to_node_permutation(train_mode):
    torch.manual_seed(0)
    v, e, mask = random_graph()
    p = torch.randperm(v.shape[1])
    node, edge, net = NodeUpdate(8, 12), EdgeUpdate(8, 6), EGNN(8, 12, 6, num_layers=3)
    for m in (node, edge, net):
        m.train(train_mode)
    assert torch.allclose(node(*permute(v, e, mask, p)), node(v, e, mask)[:, p], atol=1e-5)
    assert torch.allclose(edge(*permute(v, e, mask, p)), edge(v, e, mask)[:, p][:, :, p], atol=1e-5)
    assert torch.allclose(net(*permute(v, e, mask, p)), net(v, e, mask)[:, :, p][:, :, :, p], atol=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
def test_edge_update_follows_its_equations_computed_by_hand(symmetric):
    """Eqs. 4-5 element by element, with the similarity network replaced by s_ij = sigmoid(-|v_i - v_j|): each
    channel reweighted by s (or 1 - s) and rescaled to keep its row's mass, self-loops [1, 0], then normalised."""
    import math

    layer = EdgeUpdate(1, 1).eval()
    layer.symmetric = symmetric
    layer.similarity = torch.nn.Linear(1, 1)
    with torch.no_grad():
        layer.similarity.weight.fill_(-1.0)
        layer.similarity.bias.zero_()
    v = torch.tensor([[[0.0], [1.0], [3.0]]])
    e = torch.tensor([[[[1, 0], [3, 1], [1, 3]], [[1, 1], [2, 5], [4, 1]], [[2, 2], [1, 2], [5, 5]]]], dtype=torch.float)
    out = layer(v, e, torch.ones(1, 3, dtype=torch.bool))[0]
    s = [[1 / (1 + math.exp(abs(v[0, i, 0] - v[0, j, 0]))) for j in range(3)] for i in range(3)]
    for i in range(3):
        others = [k for k in range(3) if k != i]
        for j in range(3):
            if i == j:
                bar = [1.0, 0.0]
            else:
                bar = []
                for c, weight in ((0, lambda k: s[i][k]), (1, lambda k: 1 - s[i][k])):
                    norm = sum(weight(k) * e[0, i, k, c] for k in others)
                    bar.append(float(weight(j) * e[0, i, j, c] / norm * sum(e[0, i, k, c] for k in others)))
            total = sum(b + layer.eps for b in bar)
            want = torch.tensor([(b + layer.eps) / total for b in bar])
            assert torch.allclose(out[i, j], want, atol=1e-6), (i, j, out[i, j], want)


def test_node_update_ignores_self_loops_and_uses_row_normalised_channels():
    layer = NodeUpdate(1, 1)
    layer.transform = torch.nn.Identity()  # look at what the transform receives
    v = torch.tensor([[[1.0], [2.0], [4.0]]])
    e = torch.tensor([[[[1, 0], [3, 1], [1, 3]],
                       [[1, 1], [9, 9], [1, 1]],
                       [[2, 2], [2, 2], [5, 5]]]], dtype=torch.float)
    out = layer(v, e, torch.ones(1, 3, dtype=torch.bool))  # (1, 3, 3): [v, sim-aggr, dis-aggr]
    # node 0: sim weights 3/4, 1/4 over nodes 1, 2; dis weights 1/4, 3/4
    assert torch.allclose(out[0, 0], torch.tensor([1.0, 0.75 * 2 + 0.25 * 4, 0.25 * 2 + 0.75 * 4]))
    # node 1: the self-loop (9, 9) is ignored
    assert torch.allclose(out[0, 1], torch.tensor([2.0, 2.5, 2.5]))


def test_padding_does_not_change_real_nodes():
    torch.manual_seed(0)
    net = EGNN(8, 12, 6, num_layers=2).eval()
    v, e, mask = random_graph(b=1, n=5)
    vp = torch.cat([v, torch.randn(1, 3, 8)], 1)
    ep = torch.rand(1, 8, 8, 2)
    ep[:, :5, :5] = e
    mp = torch.tensor([[True] * 5 + [False] * 3])
    alone, padded = net(v, e, mask), net(vp, ep, mp)
    assert torch.allclose(padded[:, :, :5, :5], alone, atol=1e-6)
    assert (padded[:, :, 5:] == 0).all() and (padded[:, :, :, 5:] == 0).all()


@pytest.mark.parametrize("padded", [False, True])
def test_symmetric_pairs_equal_every_ordered_pair(padded):
    """The half-cost edge update (one MLP row per unordered pair, weighted BatchNorm) is the same math as
    running the MLP on all N^2 ordered pairs: outputs, gradients and running statistics agree."""
    import copy

    v, e, mask = random_graph(b=3, n=9, f=8, seed=1)
    if padded:
        mask[1, 6:] = False
    fast = EdgeUpdate(8, 6)
    slow = copy.deepcopy(fast)
    slow.symmetric = False
    for _ in range(2):  # twice: the second pass starts from updated running statistics
        va, vb = v.clone().requires_grad_(), v.clone().requires_grad_()
        out_a, out_b = fast(va, e, mask), slow(vb, e, mask)
        assert torch.allclose(out_a, out_b, atol=1e-5)
        w = torch.randn_like(out_a)
        (out_a * w).sum().backward()
        (out_b * w).sum().backward()
        assert torch.allclose(va.grad, vb.grad, atol=1e-5)
        for pa, pb in zip(fast.parameters(), slow.parameters()):
            assert torch.allclose(pa.grad, pb.grad, atol=1e-4)
        for ba, bb in zip(fast.buffers(), slow.buffers()):
            assert torch.allclose(ba.float(), bb.float(), atol=1e-5)
    fast.eval(), slow.eval()
    assert torch.allclose(fast(v, e, mask), slow(v, e, mask), atol=1e-5)


@pytest.mark.parametrize("train_mode", [False, True])
def test_sparse_path_equals_dense_on_a_fully_connected_graph(train_mode):
    """PyG message passing over an edge list (self-loops included) is the dense computation, to 1e-5."""
    torch.manual_seed(0)
    v, e, mask = random_graph(b=2, n=6, f=8, seed=2)
    b, n = mask.shape
    net = EGNN(8, 12, 6, num_layers=3).train(train_mode)
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    # edge (j -> i) carries e_ij; episodes are disjoint blocks of one big graph, as in a PyG Batch
    edge_index = torch.cat([torch.stack([jj.flatten(), ii.flatten()]) + k * n for k in range(b)], 1)
    attr = e[torch.arange(b).repeat_interleave(n * n), ii.flatten().repeat(b), jj.flatten().repeat(b)]
    dense = net(v, e, mask)  # (L, B, N, N, 2)
    sparse = net.forward_sparse(v.flatten(0, 1), edge_index, attr)  # (L, E, 2)
    assert torch.allclose(sparse, dense.flatten(1, 3), atol=1e-5)


def test_cpu_inference_runs_rows_in_blocks_and_training_never_does(monkeypatch):
    """In inference on a CPU the edge network runs ``CPU_CHUNK_ROWS`` rows at a time (2x faster evaluation on
    large graphs, docs/results.md) and gives what one pass gives; with gradients, or in training mode (BatchNorm's
    batch statistics must see every row), it runs all rows in one pass."""
    import egnn.nn.utils as utils

    monkeypatch.setattr(utils, "CPU_CHUNK_ROWS", 5)
    torch.manual_seed(0)
    v, e, mask = random_graph(b=2, n=7)  # 2 x 21 unordered pairs: 42 rows, 9 blocks of 5
    edge = EdgeUpdate(8, 6)
    passes = []
    edge.similarity[0][0].register_forward_hook(lambda m, args, out: passes.append(args[0].shape[0]))
    for m in edge.similarity.modules():  # non-trivial running statistics, so eval BatchNorm is not the identity
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    edge.eval()
    one_pass = edge(v, e, mask)  # gradients on: one pass
    assert passes == [42]
    with torch.inference_mode():
        blocked = edge(v, e, mask)
    assert passes[1:] == [5] * 8 + [2]
    assert torch.allclose(blocked, one_pass, atol=1e-6)
    edge.train()
    passes.clear()
    with torch.no_grad():
        trained = edge(v, e, mask)
    assert passes == [44]  # 42 pairs and each graph's zero self-pair row, in one pass
    assert not torch.allclose(trained, one_pass, atol=1e-3)  # batch statistics, not running ones
