import dataclasses

import pytest
import torch

from egnn.graph import DenseEpisodes, collate
from tests.conftest import make_episode, make_method


def run(method, episodes, transductive=True):
    with torch.no_grad():
        return method(collate(episodes), transductive=transductive)


def relabel(ep, perm):
    return dataclasses.replace(ep, labels=perm[ep.labels])


@pytest.mark.parametrize("transductive", [True, False])
def test_relabelling_classes_leaves_predictions_unchanged(transductive):
    method, ep = make_method(), make_episode(way=3, shot=2, query=2)
    perm = torch.tensor([2, 0, 1])
    a, b = run(method, [ep], transductive), run(method, [relabel(ep, perm)], transductive)
    assert torch.allclose(a.extras["edges"], b.extras["edges"])
    assert torch.equal(perm[a.logits.argmax(-1)], b.logits.argmax(-1))
    assert torch.allclose(a.logits, b.logits[..., perm])


@pytest.mark.parametrize("transductive", [True, False])
def test_permuting_nodes_permutes_outputs(transductive):
    method, ep = make_method(), make_episode(way=3, shot=2, query=2)
    s = ep.way * ep.shot
    # permute within supports and within queries (the graph keeps supports first)
    p = torch.cat([torch.randperm(s, generator=torch.Generator().manual_seed(1)),
                   s + torch.randperm(ep.labels.numel() - s, generator=torch.Generator().manual_seed(2))])
    perm_ep = dataclasses.replace(ep, images=ep.images[p], labels=ep.labels[p], labeled=ep.labeled[p[:s]])
    a, b = run(method, [ep], transductive), run(method, [perm_ep], transductive)
    assert torch.allclose(a.extras["edges"][:, :, p][:, :, :, p], b.extras["edges"], atol=1e-5)
    q = p[s:] - s
    assert torch.allclose(a.logits[:, q], b.logits, atol=1e-5)


@pytest.mark.parametrize("transductive", [True, False])
def test_changing_a_query_label_changes_no_output(transductive):
    method, ep = make_method(), make_episode(way=3, shot=2, query=2)
    labels = ep.labels.clone()
    labels[-1] = (labels[-1] + 1) % ep.way
    a, b = run(method, [ep], transductive), run(method, [dataclasses.replace(ep, labels=labels)], transductive)
    assert torch.equal(a.extras["edges"], b.extras["edges"])
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("transductive", [True, False])
def test_hidden_labels_of_unlabeled_supports_reach_neither_predictions_nor_loss(transductive):
    method = make_method()
    ep = make_episode(way=3, shot=3, query=2, labeled_shots=1)
    labels = ep.labels.clone()
    hidden = torch.nonzero(torch.cat([~ep.labeled, torch.zeros(6, dtype=torch.bool)])).flatten()
    labels[hidden] = labels[hidden][torch.randperm(hidden.numel(), generator=torch.Generator().manual_seed(0))]
    labels[hidden[0]] = (labels[hidden[0]] + 1) % 3  # make sure something changed
    a = run(method, [ep], transductive)
    b = run(method, [dataclasses.replace(ep, labels=labels)], transductive)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(method.loss(a), method.loss(b))


def test_non_transductive_query_sees_only_the_supports():
    method, ep = make_method(), make_episode(way=3, shot=2, query=2)
    images = ep.images.clone()
    images[-1] = 255 - images[-1]  # change another query's image
    a = run(method, [ep], transductive=False)
    b = run(method, [dataclasses.replace(ep, images=images)], transductive=False)
    assert torch.allclose(a.logits[:, :-1], b.logits[:, :-1], atol=1e-6)
    assert (a.logits[:, -1] - b.logits[:, -1]).abs().max() > 1e-6
    # and equals a transductive graph holding the supports and that query alone
    s = ep.way * ep.shot
    single = dataclasses.replace(ep, images=torch.cat([ep.images[:s], ep.images[s:s + 1]]),
                                 labels=torch.cat([ep.labels[:s], ep.labels[s:s + 1]]), query=1)
    alone = run(method, [single], transductive=True)
    assert torch.allclose(alone.logits[:, 0], a.logits[:, 0], atol=1e-5)


def test_transductive_queries_do_interact():
    method, ep = make_method(), make_episode(way=3, shot=2, query=2)
    images = ep.images.clone()
    images[-1] = 255 - images[-1]
    a, b = run(method, [ep]), run(method, [dataclasses.replace(ep, images=images)])
    # the first query's edges to the supports move when another query changes
    s = ep.way * ep.shot
    moved = (a.extras["edges"][-1, 0, s, :s] - b.extras["edges"][-1, 0, s, :s]).abs().max()
    assert moved > 1e-6


def test_vote_counts_only_labeled_supports():
    method = make_method()
    ep = make_episode(way=2, shot=2, query=1, labeled_shots=1)
    out = run(method, [ep])
    sim = out.extras["edges"][-1, 0, ..., 0]  # (N, N)
    # labeled supports are nodes 0 (class 0) and 2 (class 1); queries are nodes 4 and 5
    assert torch.allclose(out.logits[0], sim[4:, [0, 2]])


@pytest.mark.parametrize("train_mode", [False, True])
def test_sparse_knn_path_with_every_neighbour_equals_dense(train_mode):
    """With k >= N - 1 the kNN graph is the complete graph: same scores, loss and gradients as the dense path."""
    import copy

    dense = make_method()
    sparse = copy.deepcopy(dense)
    sparse.knn = 100
    eps = [make_episode(way=3, shot=2, query=2, seed=s) for s in range(3)]
    for m in (dense, sparse):
        m.train(train_mode)
    torch.manual_seed(0)  # the encoder's Dropout2d draws the same masks on both paths
    a = dense(collate(eps))
    torch.manual_seed(0)
    b = sparse(collate(eps))
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(dense.loss(a), sparse.loss(b), atol=1e-6)
    if train_mode:
        dense.loss(a).backward()
        sparse.loss(b).backward()
        for (name, pa), pb in zip(dense.named_parameters(), sparse.parameters()):
            assert torch.allclose(pa.grad, pb.grad, atol=1e-4, rtol=1e-3), name


def test_sparse_knn_path_hides_query_and_unlabeled_labels():
    """Shuffling the labels of queries and unlabeled supports changes no score on the kNN graph."""
    method = make_method()
    method.knn = 3
    ep = make_episode(way=3, shot=3, query=2, labeled_shots=1, seed=4)
    hidden = torch.cat([~ep.labeled, torch.ones(ep.labels.numel() - ep.labeled.numel(), dtype=torch.bool)])
    shuffled = ep.labels.clone()
    shuffled[hidden] = ep.labels[hidden][torch.randperm(int(hidden.sum()), generator=torch.Generator().manual_seed(0))]
    a = run(method, [ep])
    b = run(method, [dataclasses.replace(ep, labels=shuffled)])
    assert torch.equal(a.logits, b.logits)
    shuffled[0] = (shuffled[0] + 1) % 3  # a labeled support's label does reach the scores: the check can tell
    assert not torch.equal(a.logits, run(method, [dataclasses.replace(ep, labels=shuffled)]).logits)


def test_loss_mask_keeps_query_self_loops_when_transductive_as_the_reference():
    """Transductive: every edge touching a query, the query self-loops included (the reference's query_edge_mask);
    non-transductive: no query-query edge at all; never a support-support edge or a support self-loop."""
    method = make_method()
    dense = DenseEpisodes.from_batch(collate([make_episode(way=2, shot=1, query=2)]))
    s, n = 2, 6
    trans, nontrans = method.loss_mask(dense, True)[0], method.loss_mask(dense, False)[0]
    assert trans[s:, s:].all() and not trans[:s, :s].any() and trans[:s, s:].all() and trans[s:, :s].all()
    assert not nontrans[s:, s:].any() and nontrans[:s, s:].all() and nontrans[s:, :s].all()
    assert trans.sum() == n * n - s * s


def test_checkpoints_from_before_the_fidelity_options_keep_their_layers():
    from egnn.models import saved_config

    old = saved_config({"dropout": 0.0, "way": 5})
    assert (old["encoder_norm"], old["conv4_padding"], old["graph_slope"], old["encoder_dropout"]) == \
        ("batch", "same", 0.2, 0.0)
    new = saved_config({"graph_slope": 0.01, "encoder_norm": "slot"})
    assert new["encoder_norm"] == "slot" and "conv4_padding" not in new
