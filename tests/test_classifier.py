"""The classifier object: fit a few labeled images, predict new ones, equal to ``egnn eval`` on the same episodes."""
import pytest
import torch
from PIL import Image

from egnn import FewShotClassifier
from egnn.data import load_dataset
from egnn.episodes import EpisodeSampler
from egnn.errors import DataError
from egnn.graph import collate
from egnn.evaluation import evaluate
from egnn.models import load_trained
from tests.conftest import REPO

CHECKPOINT = REPO / "results" / "checkpoints" / "omniglot_5w1s.pt"


@pytest.fixture(scope="module")
def glyphs():
    return load_dataset("glyphs")["test"]


def episode_parts(episode):
    s = episode.way * episode.shot
    return episode.images[:s], episode.labels[:s], episode.images[s:], episode.labels[s:]


@pytest.mark.parametrize("transductive", [True, False])
def test_fit_and_predict_give_egnn_evals_episodes(glyphs, transductive):
    """The same 8 episodes through ``evaluate`` and through fit / predict with string labels: the same per-episode
    accuracies, and the probabilities are the method's on each episode."""
    clf = FewShotClassifier.load(CHECKPOINT, device="cpu", transductive=transductive)
    method, _ = load_trained(CHECKPOINT)
    sampler = EpisodeSampler(glyphs, 5, 1, 3, seed=4)
    names = [f"class {c}" for c in "ABCDE"]
    accs = []
    for i in range(8):
        episode = sampler.episode(i)
        support, support_labels, query, query_labels = episode_parts(episode)
        clf.fit(support, [names[int(y)] for y in support_labels])
        got = clf.predict(query)
        accs.append(sum(g == names[int(y)] for g, y in zip(got, query_labels)) / len(got))
        with torch.inference_mode():
            out = method(collate([episode]), transductive=transductive)
        want = method.class_probabilities(out.logits[0], torch.ones(5, dtype=torch.long))
        torch.testing.assert_close(clf.predict_proba(query), want, rtol=1e-5, atol=1e-6)
    ref = evaluate(method, glyphs, way=5, shot=1, query=3, episodes=8, transductive=transductive, seed=4,
                   batch_size=4)
    assert accs == pytest.approx(ref.per_episode)


def test_labels_of_any_kind_uneven_shots_and_pil_images(glyphs, tmp_path):
    """Integer labels given in any order are sorted into classes_; a class with 3 examples beside one with 1 is
    compared by its mean similarity (read off the edges in test_unknowns.py); PIL images and files are read as the dataset reads them (ink inverted), so
    they give the tensor's answer."""
    clf = FewShotClassifier.load(CHECKPOINT, device="cpu")
    images = glyphs.images[glyphs.labels < 3].view(3, 20, 1, 28, 28)
    support = torch.cat([images[0, :3], images[1, :1], images[2, :2]])
    labels = [7, 7, 7, 2, 5, 5]
    clf.fit(support, labels)
    assert clf.classes_ == [2, 5, 7] and clf._shots.tolist() == [1, 2, 3]
    queries = torch.cat([images[0, 10:12], images[1, 10:12], images[2, 10:12]])
    probs = clf.predict_proba(queries)
    assert probs.shape == (6, 3)
    # the files a user has: dark ink on white, as Omniglot's PNGs; read back, the same pixels as the tensor
    paths = []
    for k, img in enumerate(queries):
        path = tmp_path / f"q{k}.png"
        Image.fromarray((255 - img[0]).numpy()).save(path)
        paths.append(path)
    torch.testing.assert_close(clf.predict_proba(paths), probs)
    pil = [Image.open(p) for p in paths]
    assert clf.predict(pil) == clf.predict(queries)
    # other labels in the same sorted order name the same columns: the same probabilities
    clf.fit(support, ["z", "z", "z", "x", "y", "y"])
    torch.testing.assert_close(clf.predict_proba(queries), probs)


def test_misuse_is_named(glyphs):
    clf = FewShotClassifier.load(CHECKPOINT, device="cpu")
    x = glyphs.images[:4]
    with pytest.raises(DataError, match="one class"):
        clf.fit(x, ["a"] * 4)
    with pytest.raises(ValueError, match="one label per support image"):
        clf.fit(x, ["a", "b"])
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, 1, 28, 28\)"):
        clf.fit(torch.zeros(4, 3, 28, 28, dtype=torch.uint8), ["a", "b", "a", "b"])
    with pytest.raises(Exception, match="call fit"):
        FewShotClassifier.load(CHECKPOINT, device="cpu").predict(x)
