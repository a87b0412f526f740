"""ResNet-12 and MTL's Scaling-and-Shifting (SS) parameters."""
import copy

import torch

from egnn.backbones import create_backbone
from egnn.backbones.resnet12 import SSConv2d, add_scaling_shifting


def small():
    torch.manual_seed(0)
    return create_backbone("resnet12", in_channels=1, image_size=28, out_features=16, widths=(8, 12, 16, 20))


def test_ss_at_initialisation_reproduces_the_frozen_network():
    net = small()
    x = torch.randn(6, 1, 28, 28)
    net(x)  # a training step's worth of BatchNorm statistics
    ss = add_scaling_shifting(copy.deepcopy(net))
    assert sum(isinstance(m, SSConv2d) for m in ss.modules()) == 4 * 4  # 3 convs + shortcut per block
    for mode in (False, True):
        net.train(mode), ss.train(mode)
        assert torch.equal(ss(x), net(x))


def test_only_ss_parameters_receive_gradients():
    ss = add_scaling_shifting(small())
    ss(torch.randn(4, 1, 28, 28)).square().sum().backward()
    for name, p in ss.named_parameters():
        trainable = name.endswith(".scale") or name.endswith(".shift")
        assert p.requires_grad == trainable, name
        assert (p.grad is not None and p.grad.abs().sum() > 0) if trainable else p.grad is None, name
