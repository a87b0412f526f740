"""Embedding networks laid out as the codes they come from, and the reference's per-slot BatchNorm."""
import torch
import torch.nn as nn

from egnn.backbones import create_backbone
from egnn.nn.slot_norm import SlotBatchNorm, node_slots
from egnn.nn.utils import TaskDropout


def shapes(net, x):
    seen = []
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            m.register_forward_hook(lambda mod, i, o: seen.append((type(mod).__name__, tuple(o.shape[1:]))))
    return net(x), seen


def test_conv4_is_the_references_embedding_imagenet():
    """84x84: conv (pad 1) 84, pool 42, conv (no pad) 40, pool 20, 10, 5; Dropout2d 0.4 and 0.5 after blocks 3, 4;
    LeakyReLU 0.2 after each pool; a 6400-input linear layer with BatchNorm."""
    net = create_backbone("conv4", in_channels=3, image_size=84, out_features=128)
    out, seen = shapes(net.eval(), torch.randn(2, 3, 84, 84))
    assert [s[1][-1] for s in seen] == [84, 42, 40, 20, 20, 10, 10, 5]
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout2d)] == [0.4, 0.5]
    assert {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}
    assert net.head[1].in_features == 6400 and out.shape == (2, 128)
    order = [type(m).__name__ for m in net.features[:4]]
    assert order == ["Conv2d", "SlotBatchNorm", "MaxPool2d", "LeakyReLU"]  # pooling before the activation


def test_conv4_on_small_inputs_has_no_encoder_dropout_by_default():
    net = create_backbone("conv4", in_channels=1, image_size=28, out_features=64)
    assert not any(isinstance(m, nn.Dropout2d) for m in net.modules())
    same = create_backbone("conv4", in_channels=1, image_size=28, out_features=64, padding="same", dropout=0.3)
    assert [m.p for m in same.modules() if isinstance(m, nn.Dropout2d)] == [0.3, 0.3]


def test_conv4_garcia_is_garcia_and_bruna_omniglot_embedding():
    net = create_backbone("conv4-garcia", in_channels=1, image_size=28)
    out, seen = shapes(net.eval(), torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 64)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.padding for c in convs] == [(1, 1), (1, 1), (0, 0), (0, 0)]
    assert all(c.out_channels == 64 and c.bias is None for c in convs)
    assert net.fc.in_features == 64 * 3 * 3 and net.fc.bias is None  # 28 -> 14 -> 7 -> 5 -> 3
    assert sum(p.numel() for p in net.parameters()) == 576 + 3 * 36864 + 576 * 64 + 4 * 128 + 128


def test_slot_batchnorm_equals_the_reference_encoding_one_slot_at_a_time():
    """Statistics per node slot, gradients and the S sequential running-statistic updates, against plain
    BatchNorm called once per slot as the reference's trainer does."""
    torch.manual_seed(0)
    b, s = 6, 5
    cases = (((b * s, 4, 7, 7), nn.BatchNorm2d(4), torch.contiguous_format),
             ((b * s, 4, 7, 7), nn.BatchNorm2d(4), torch.channels_last),  # Conv-4's layout: the copy-free fast path
             ((b * s, 4), nn.BatchNorm1d(4), torch.contiguous_format))
    for shape, plain, layout in cases:
        slot = SlotBatchNorm(4)
        with torch.no_grad():
            slot.weight.uniform_(0.5, 1.5), slot.bias.uniform_(-1, 1)
        plain.load_state_dict(slot.state_dict())
        x, w = (torch.randn(*shape) * 3 + 1).contiguous(memory_format=layout), torch.randn(*shape)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        with node_slots(slot, s):
            ya = slot(xa)
        yb = torch.stack([plain(xb.view(b, s, *shape[1:])[:, k]) for k in range(s)], 1).flatten(0, 1)
        assert torch.allclose(ya, yb, atol=1e-5)
        (ya * w).sum().backward()
        (yb * w).sum().backward()
        assert torch.allclose(xa.grad, xb.grad, atol=1e-5)
        assert torch.allclose(slot.weight.grad, plain.weight.grad, atol=1e-4)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.allclose(getattr(slot, name).double(), getattr(plain, name).double(), atol=1e-6), name
        assert slot.slots == 1  # the context restores it: outside, a plain BatchNorm
        slot.eval(), plain.eval()
        assert torch.allclose(slot(x), plain(x), atol=1e-6)


def test_task_dropout_drops_whole_channels_per_graph():
    """Dropout2d on the reference's (tasks, features, nodes, 1) layout: every row of a graph shares one mask."""
    torch.manual_seed(0)
    drop = TaskDropout(0.5).train()
    group = torch.arange(4).repeat_interleave(10)  # 4 graphs of 10 rows
    out = drop(torch.ones(40, 32), group, 4)
    per_graph = out.view(4, 10, 32)
    assert (per_graph == per_graph[:, :1]).all()  # same mask for every row of a graph
    assert set(out.unique().tolist()) == {0.0, 2.0}  # kept channels scaled by 1 / (1 - p)
    assert not (per_graph[0, 0] == per_graph[1, 0]).all()  # graphs draw their own masks
    assert torch.equal(drop.eval()(out, group, 4), out)
