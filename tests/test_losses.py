import math

import torch

from egnn.losses import edge_accuracy, edge_labeling_loss, layer_weights, mean_ci95, query_accuracy


def test_edge_labeling_loss_on_a_hand_built_case():
    # nodes: 0 support (class 0), 1 support (class 1), 2 query (class 0); 2 layers
    target = torch.tensor([[[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]])
    mask = torch.tensor([[[False, False, True], [False, False, True], [True, True, False]]])
    sim = torch.full((2, 1, 3, 3), 0.5)
    sim[0, 0, 0, 2], sim[0, 0, 2, 0], sim[0, 0, 1, 2], sim[0, 0, 2, 1] = 0.8, 0.6, 0.3, 0.1
    sim[0, 0, 0, 1] = 0.99  # a support-support edge: carries no loss
    layer1 = -(math.log(0.8) + math.log(0.6)) / 2 - (math.log(0.7) + math.log(0.9)) / 2
    layer2 = 2 * math.log(2)
    expected = (0.5 * layer1 + 1.0 * layer2) / 2
    assert math.isclose(edge_labeling_loss(sim, target, mask).item(), expected, rel_tol=1e-6)


def test_loss_is_balanced_between_positive_and_negative_edges():
    # one positive, three negatives all predicted perfectly wrong: each side contributes the same
    mask = torch.zeros(1, 5, 5, dtype=torch.bool)
    mask[0, 1:, 0] = True  # edges 1->0 (positive), 2..4->0 (negative)
    target = torch.zeros(1, 5, 5)
    target[0, 1, 0] = 1
    sim = torch.full((1, 1, 5, 5), 0.5)
    sim[0, 0, 1, 0] = 0.25
    sim[0, 0, 2:, 0] = 0.75
    assert math.isclose(edge_labeling_loss(sim, target, mask, torch.ones(1)).item(), 2 * -math.log(0.25), rel_tol=1e-6)


def test_layer_weights():
    assert layer_weights(3).tolist() == [0.5, 0.5, 1.0]


def test_accuracies_and_ci():
    logits = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.7, 0.3]]])
    labels = torch.tensor([[0, 1], [0, 1]])
    assert query_accuracy(logits, labels).tolist() == [1.0, 0.5]
    sim = torch.tensor([[[0.9, 0.2], [0.6, 0.1]]])
    target = torch.tensor([[[1.0, 0], [0, 1]]])
    assert edge_accuracy(sim, target, torch.ones(1, 2, 2, dtype=torch.bool)).tolist() == [0.5]
    mean, ci = mean_ci95([0.0, 1.0, 0.0, 1.0])
    assert mean == 0.5 and math.isclose(ci, 1.96 * math.sqrt(1 / 3) / 2)
