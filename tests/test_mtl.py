"""MTL's base learner and hard-task (HT) resampling."""
import torch

from egnn.data import FewShotSplit
from egnn.episodes import EpisodeSampler
from egnn.mtl import HardTaskSampler, classify, failure_classes, fit_classifier


def test_failure_class_is_the_one_with_the_lowest_query_accuracy():
    # two tasks, 3-way, 2 queries per class; dataset classes of the episode labels:
    classes = torch.tensor([[10, 11, 12], [20, 21, 22]])
    labels = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2]])
    pred = torch.tensor([[0, 0, 1, 0, 2, 2],    # task 0: label 1 half right -> class 11
                         [1, 2, 1, 1, 2, 2]])   # task 1: label 0 never right -> class 20
    logits = torch.nn.functional.one_hot(pred, 3).float()
    assert failure_classes(logits, labels, classes).tolist() == [11, 20]


def test_hard_tasks_are_drawn_from_the_failure_classes():
    # every image distinct (its pixels spell its index), so equal images mean the same draw
    index = torch.arange(50 * 6)
    pixels = torch.stack([index % 256, index // 256, index % 7, index % 11], 1).to(torch.uint8).view(-1, 1, 2, 2)
    split = FewShotSplit(pixels, torch.arange(50).repeat_interleave(6), [str(c) for c in range(50)])
    hard = HardTaskSampler(EpisodeSampler(split, 3, 1, 2, seed=0))
    pool = torch.tensor([7, 19, 33, 41])
    for i in range(20):
        ep = hard.episode(i, pool)
        assert set(ep.classes.tolist()) <= set(pool.tolist()) and ep.classes.unique().numel() == 3
    small = hard.episode(0, torch.tensor([5]))  # a pool smaller than the way is topped up
    assert 5 in small.classes.tolist() and small.classes.unique().numel() == 3
    assert torch.equal(hard.episode(3, pool).images, hard.episode(3, pool).images)  # seeded...
    again = HardTaskSampler(EpisodeSampler(split, 3, 1, 2, seed=0))
    assert torch.equal(again.episode(3, pool).images, hard.episode(3, pool).images)  # ...by (seed, index) alone
    assert not torch.equal(hard.episode(4, pool).images, hard.episode(3, pool).images)  # another index, another draw
    other = HardTaskSampler(EpisodeSampler(split, 3, 1, 2, seed=1))
    assert not torch.equal(other.episode(3, pool).images, hard.episode(3, pool).images)


def test_base_learner_fits_separable_supports_and_is_differentiable():
    torch.manual_seed(0)
    centres = torch.randn(3, 8) * 3
    support = (centres.repeat_interleave(2, 0) + 0.1 * torch.randn(6, 8))[None].requires_grad_()
    labels = torch.arange(3).repeat_interleave(2)[None]
    w = fit_classifier(support, labels, 3, steps=50, lr=0.5)
    query = centres[None] + 0.1 * torch.randn(1, 3, 8)
    logits = classify(query, w)
    assert logits.argmax(-1).tolist() == [[0, 1, 2]]
    torch.nn.functional.cross_entropy(logits[0], torch.arange(3)).backward()
    assert support.grad is not None and support.grad.abs().sum() > 0


def test_prototype_initialisation_is_the_nearest_prototype_classifier():
    """inner_init prototypes (Proto-MAML): before any inner step the base learner's probabilities are exactly
    ProtoNet's, because w_c.q + b_c = |q|^2 - |q - p_c|^2 differs from -|q - p_c|^2 by a per-query constant; from
    zero, one support per class leaves every bias equal, and the ranking ignores the prototypes' norms."""
    from baselines.protonet import PrototypicalNetworks
    from egnn.backbones import create_backbone
    from egnn.graph import collate
    from egnn.methods.mtl import MTLClassifier
    from egnn.mtl import prototype_classifier
    from tests.conftest import make_episode

    backbone = create_backbone("conv4", in_channels=1, image_size=28, out_features=16).eval()
    batch = collate([make_episode(way=3, shot=2, query=2, seed=s) for s in range(3)])
    proto = PrototypicalNetworks(backbone).eval()(batch)
    mtl = MTLClassifier(backbone, way=3, inner_steps=0, inner_init="prototypes").eval()(batch)
    torch.testing.assert_close(mtl.logits.softmax(-1), proto.logits.softmax(-1), rtol=1e-5, atol=1e-6)
    # by hand, on two classes of one support each: w = 2p, b = -|p|^2
    support = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
    w = prototype_classifier(support, torch.tensor([[0, 1]]), 2)
    assert torch.equal(w, torch.tensor([[[2.0, 0.0, -1.0], [0.0, 6.0, -9.0]]]))
    # from zero, one gradient step leaves the biases equal
    b = fit_classifier(support, torch.tensor([[0, 1]]), 2, steps=1, lr=0.5)[..., -1]
    assert b[0, 0] == b[0, 1]
