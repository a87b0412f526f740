"""Every method behind the one interface: no label leakage, correct modes, the same trainer."""
import dataclasses

import pytest
import torch

from egnn.config import make_config
from egnn.graph import collate
from egnn.trainer import Trainer
from tests.conftest import make_episode, make_method
from tests.conftest import SPLITS

MODELS = ["egnn", "gnn", "protonet"]


def run(method, ep, transductive=True):
    with torch.no_grad():
        return method(collate([ep]), transductive=transductive)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("transductive", [True, False])
def test_no_label_leaks_from_queries_or_unlabeled_supports(model, transductive):
    method = make_method(model=model)
    ep = make_episode(way=3, shot=3, query=2, labeled_shots=2)
    labels = ep.labels.clone()
    labels[2] = (labels[2] + 1) % 3  # an unlabeled support
    labels[-1] = (labels[-1] + 2) % 3  # a query
    a, b = run(method, ep, transductive), run(method, dataclasses.replace(ep, labels=labels), transductive)
    assert torch.equal(a.logits, b.logits)
    labels[0] = (labels[0] + 1) % 3  # a labeled support's label does reach the scores: the check can tell
    assert not torch.equal(a.logits, run(method, dataclasses.replace(ep, labels=labels), transductive).logits)


@pytest.mark.parametrize("model", MODELS)
def test_non_transductive_queries_are_independent(model):
    method, ep = make_method(model=model), make_episode(way=3, shot=2, query=2)
    images = ep.images.clone()
    images[-1] = 255 - images[-1]
    a, b = run(method, ep, False), run(method, dataclasses.replace(ep, images=images), False)
    assert torch.allclose(a.logits[:, :-1], b.logits[:, :-1], atol=1e-6)
    assert (a.logits[:, -1] - b.logits[:, -1]).abs().max() > 1e-4  # the changed query's own scores do move


def test_gnn_transductive_queries_interact():
    method, ep = make_method(model="gnn"), make_episode(way=3, shot=2, query=2)
    images = ep.images.clone()
    images[-1] = 255 - images[-1]
    a, b = run(method, ep), run(method, dataclasses.replace(ep, images=images))
    assert (a.logits[:, 0] - b.logits[:, 0]).abs().max() > 1e-6


def test_protonet_prototypes_are_class_means_of_labeled_supports():
    method = make_method(model="protonet")
    ep = make_episode(way=2, shot=2, query=1, labeled_shots=1)
    out = run(method, ep)
    with torch.no_grad():
        emb = method.backbone(ep.images.float() / 255)
    protos = emb[[0, 2]]  # the labeled support of each class
    assert torch.allclose(out.logits[0], -torch.cdist(emb[4:], protos).pow(2), atol=1e-4)


@pytest.mark.parametrize("model, iterations", [("gnn", 200), ("protonet", 30)])  # the GNN has a longer plateau
def test_baselines_train_with_the_shared_trainer(model, iterations, tmp_path):
    cfg = make_config(model=model, way=3, shot=1, query=2, query_max=0, eval_query=2, iterations=iterations, tasks_per_batch=8,
                      val_every=iterations, val_episodes=4, test_episodes=30, eval_batch=10, embedding=16, node_features=16,
                      out=str(tmp_path), seed=3)
    trainer = Trainer(cfg, SPLITS)
    trainer.fit(progress=False)
    assert trainer.test()[0].accuracy > 0.5  # chance is 1/3; 0.5 is more than 2 CIs above it
