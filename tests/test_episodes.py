"""The episode sampler: episode ``i`` is a pure function of ``(seed, i)``, and labels are a random permutation of
the episode's classes."""
import torch

from egnn.episodes import EpisodeSampler
from tests.conftest import SPLITS


def test_episode_i_depends_on_the_seed_and_i_alone():
    a, b = EpisodeSampler(SPLITS["train"], 3, 2, 2, seed=5), EpisodeSampler(SPLITS["train"], 3, 2, 2, seed=5)
    for i in (0, 7, 123):
        assert torch.equal(a.episode(i).images, b.episode(i).images)
        assert torch.equal(a.episode(i).classes, b.episode(i).classes)
    assert torch.equal(b.episode(7).images, a.batch(6, 3)[1].images)  # in a batch or alone, the same
    draws = {tuple(a.episode(i).classes.tolist()) + tuple(a.draw(i)[0].tolist()) for i in range(20)}
    assert len(draws) == 20  # every index its own draw
    other = EpisodeSampler(SPLITS["train"], 3, 2, 2, seed=6)
    assert sum(torch.equal(a.episode(i).images, other.episode(i).images) for i in range(20)) == 0


def test_labels_are_a_random_permutation_of_the_classes():
    """Label 0 is not the smallest class id: over 60 episodes of 3 classes (1 in 6 sorted by chance), each label
    goes to each rank of class id, so no model can learn a label from the class index."""
    sampler = EpisodeSampler(SPLITS["train"], 3, 1, 1, seed=0)
    classes = torch.stack([sampler.episode(i).classes for i in range(60)])  # (60, 3): dataset class of each label
    ranks = classes.argsort(1).argsort(1)  # rank of each label's class within its episode
    for label in range(3):
        assert set(ranks[:, label].tolist()) == {0, 1, 2}
    assert (classes.diff(dim=1) > 0).all(1).float().mean() < 0.4  # sorted episodes: about 1 in 6
    ep = sampler.episode(3)
    images, labels = ep.images, ep.labels
    for label in range(3):  # the images of label c are images of class classes[c]
        of_class = SPLITS["train"].images[SPLITS["train"].labels == ep.classes[label]]
        for img in images[labels == label]:
            assert (of_class == img).flatten(1).all(1).any()
