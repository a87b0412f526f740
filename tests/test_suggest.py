"""What to label next: the coverage picks by hand, the baselines, and the affinities EGNN gives them."""
import pytest
import torch

from egnn.errors import UserError
from egnn.suggest import coverage, least_confident, random_picks, suggest
from tests.conftest import make_episode, make_method


def test_coverage_by_hand():
    """Three queries: 0 and 1 alike (affinity 0.9) and both unsure, 2 alone and the most unsure of all.
    doubt = 1 - top probability = (0.5, 0.4, 0.6); worth = A @ doubt with a_ii = 1 = (0.5 + 0.9 * 0.4,
    0.9 * 0.5 + 0.4, 0.6) = (0.86, 0.85, 0.6): pick 0. Then doubt *= 1 - A[0] = (0, 0.04, 0.6): pick 2 (worth 0.6
    against 0.04), then 1. Least-confident takes 2, 0, 1; after 0, a pick of 1 would tell nearly nothing new."""
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.2, 0.2], [0.4, 0.3, 0.3]])
    a = torch.tensor([[0.0, 0.9, 0.0], [0.9, 0.0, 0.0], [0.0, 0.0, 0.0]])  # the diagonal is set to 1 inside
    assert coverage(probs, a, 3) == [0, 2, 1]
    assert coverage(probs, a, 1) == [0]
    assert least_confident(probs, a, 3) == [2, 0, 1]
    a[0, 1] = a[1, 0] = 0.5  # less alike: worth (0.7, 0.65, 0.6), pick 0; then doubt (0, 0.2, 0.6), pick 2
    assert coverage(probs, a, 2) == [0, 2]


def test_without_affinities_coverage_is_least_confident_and_random_is_seeded():
    probs = torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3], [0.6, 0.4]])
    assert coverage(probs, None, 2) == least_confident(probs, None, 2) == [1, 3]
    many = torch.rand(50, 2, generator=torch.Generator().manual_seed(0))  # 50!/40! orders: no match by chance
    one = random_picks(many, None, 10, torch.Generator().manual_seed(4))
    assert one == random_picks(many, None, 10, torch.Generator().manual_seed(4)) and len(set(one)) == 10
    assert one != random_picks(many, None, 10, torch.Generator().manual_seed(5))
    assert suggest(probs, None, 10, "least-confident") == [1, 3, 2, 0]  # never more than there are queries
    # the default, what the measurement kept: a random sample, seeded, so the same images give the same picks
    assert suggest(probs, None, 3) == random_picks(probs, None, 3, torch.Generator().manual_seed(0))
    with pytest.raises(UserError, match="unknown suggestion strategy"):
        suggest(probs, None, 2, "entropy")


def test_egnn_query_affinity_is_its_final_query_edges_and_none_without_transduction():
    """Dense transductive: the final layer's query-query similarities, symmetrised. kNN graphs whose k covers
    every node give the same matrix through the sparse path. Non-transductive: no query sees another, None."""
    from egnn.graph import collate

    method = make_method()
    batch = collate([make_episode(way=3, shot=1, query=2, seed=3)])
    with torch.inference_mode():
        out = method(batch, transductive=True)
        sparse_method = make_method()
        sparse_method.knn = 8
        sparse = sparse_method(collate([make_episode(way=3, shot=1, query=2, seed=3)], full_edges=False),
                               transductive=True)
        closed = method(batch, transductive=False)
    e = out.extras["edges"][-1, 0, 3:, 3:, 0]
    torch.testing.assert_close(method.query_affinity(out), (e + e.T) / 2)
    torch.testing.assert_close(sparse_method.query_affinity(sparse), method.query_affinity(out), rtol=1e-4, atol=1e-5)
    assert method.query_affinity(closed) is None
