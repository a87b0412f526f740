"""Batched augmentation on uint8 tensors and the per-dataset defaults."""
import torch

from egnn.data.transforms import augment, random_crop, random_flip, resolve_augment, resolve_normalize


def images(t=6, c=3, h=10, w=12):
    return torch.randint(0, 256, (t, c, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = images()
    out = random_crop(x, 3, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for k in range(x.shape[0]):  # every output is exactly one of the (2p+1)^2 windows
        windows = [padded[k, :, dy:dy + 10, dx:dx + 12] for dy in range(7) for dx in range(7)]
        assert any(torch.equal(out[k], w) for w in windows)
    assert not torch.equal(out, x)  # with 6 images, some offset is not the centre


def test_flip_mirrors_a_subset_and_augmentation_is_seeded():
    x = images(t=64)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped | kept).all() and 10 < int(flipped.sum()) < 54
    a = augment(x, "crop-flip", torch.Generator().manual_seed(5))
    b = augment(x, "crop-flip", torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(augment(x, "none", torch.Generator()), x)


def test_dataset_defaults():
    assert resolve_augment("auto", "mini-imagenet") == "crop-flip"
    assert resolve_augment("auto", "omniglot") == "none"
    assert resolve_augment("crop", "omniglot") == "crop"
    assert resolve_normalize("auto", "cifar-fs") and not resolve_normalize("auto", "glyphs")
    assert resolve_normalize("on", "omniglot") and not resolve_normalize("off", "folder")
