"""Dataset loaders on small copies generated in each real on-disk format, and their failure modes."""
import csv
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from egnn.data import load_dataset
from egnn.data.cifar import CIFAR_FS, FC100
from egnn.episodes import EpisodeSampler
from egnn.errors import DataError
from tests.conftest import NO_NETWORK, assert_user_error, cli

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EGNN_CACHE", str(tmp_path / "cache"))


def write_png(path, size=12, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def make_split_folders(root, classes=(3, 2, 2), per_class=4):
    for split, n in zip(("train", "val", "test"), classes):
        for c in range(n):
            for i in range(per_class):
                write_png(root / split / f"{split}_c{c}" / f"{i}.png", mode="L" if i == 0 else "RGB")
    return root


def make_csv_folder(root, per_class=4):
    root.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "val", "test"), (3, 2, 2)):
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            for c in range(n):
                for i in range(per_class):
                    name = f"n{split}{c:02d}{i:04d}.jpg"
                    write_png(root / "images" / name)
                    w.writerow([name, f"n{split}{c:02d}"])
    return root


def make_pickles(folder, name, splits=None, per_class=4, shape=(84, 84, 3)):
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (splits or {"train": 3, "val": 2, "test": 2}).items():
        data = {f"{split}{c}": [RNG.integers(0, 256, shape, dtype=np.uint8) for _ in range(per_class)]
                for c in range(n)}
        with open(folder / name.format(split=split), "wb") as f:
            pickle.dump(data, f)


def make_cifar100(root, per_class=6):
    """cifar-100-python/{train,test,meta} as torchvision reads them: 100 fine classes in 20 superclasses."""
    held = CIFAR_FS["val"] + CIFAR_FS["test"]
    fine_names = held + [f"class{i}" for i in range(100 - len(held))]
    coarse_names = FC100["val"] + FC100["test"] + [f"super{i}" for i in range(12)]
    coarse_of = [i % 20 for i in range(100)]
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part, n in (("train", per_class - 2), ("test", 2)):
        fine = np.repeat(np.arange(100), n)
        blob = {"data": RNG.integers(0, 256, (fine.size, 3072), dtype=np.uint8), "fine_labels": fine.tolist(),
                "coarse_labels": [coarse_of[f] for f in fine]}
        with open(folder / part, "wb") as f:
            pickle.dump(blob, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": fine_names, "coarse_label_names": coarse_names}, f)
    return root


def test_image_folder_with_split_folders(tmp_path):
    splits = load_dataset("folder", make_split_folders(tmp_path / "imgs"), image_size=16)
    assert splits["train"].images.shape == (12, 3, 16, 16)  # a grayscale file is converted to RGB
    assert splits["train"].class_names == ["train_c0", "train_c1", "train_c2"]
    assert splits["test"].class_counts.tolist() == [4, 4]
    # at the files' own size, the pixels themselves: class by class, file by file, grayscale repeated over RGB
    same = load_dataset("folder", tmp_path / "imgs", image_size=12)["val"]
    for c, name in enumerate(same.class_names):
        for i in range(4):
            pixels = np.asarray(Image.open(tmp_path / "imgs" / "val" / name / f"{i}.png").convert("RGB"))
            got = same.images[int(same.class_offsets[c]) + i].permute(1, 2, 0).numpy()
            assert same.labels[int(same.class_offsets[c]) + i] == c and np.array_equal(got, pixels), (name, i)


def test_image_folder_without_a_split_splits_its_classes_with_a_fixed_seed(tmp_path):
    from egnn.data.images import folder_files

    root = tmp_path / "plain"
    for c in range(10):
        for i in range(3):
            write_png(root / f"class{c}" / f"{i}.png")
    splits = load_dataset("folder", root, image_size=16)
    names = {s: set(v.class_names) for s, v in splits.items()}
    assert [len(names[s]) for s in ("train", "val", "test")] == [6, 2, 2]  # 64 / 16 / 20%, at least 2 each
    assert names["train"] | names["val"] | names["test"] == {f"class{c}" for c in range(10)}
    assert not (names["train"] & names["val"] or names["train"] & names["test"] or names["val"] & names["test"])
    again = folder_files(root)
    assert {s: set(v) for s, v in again.items()} == names  # the same split every time
    for c in range(4, 10):
        shutil.rmtree(root / f"class{c}")
    with pytest.raises(DataError, match="has 4 class folders: splitting classes .* needs at least 6"):
        folder_files(root)


def test_image_folder_with_split_csvs(tmp_path):
    splits = load_dataset("folder", make_csv_folder(tmp_path / "mini"), image_size=16)
    assert splits["val"].num_classes == 2 and splits["val"].images.shape == (8, 3, 16, 16)


def test_unreadable_image_is_named(tmp_path):
    root = make_split_folders(tmp_path / "imgs")
    (root / "train" / "train_c1" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"cannot read image .*train_c1/2.png"):
        load_dataset("folder", root, image_size=16)


def test_class_with_too_few_images_is_named(tmp_path):
    root = make_split_folders(tmp_path / "imgs")
    (root / "train" / "train_c2" / "3.png").unlink()
    splits = load_dataset("folder", root, image_size=16)
    with pytest.raises(DataError, match="class 'train_c2' has 3 images, fewer than shot \\+ query = 4"):
        EpisodeSampler(splits["train"], way=2, shot=2, query=2)


def test_csv_naming_a_missing_image(tmp_path):
    root = make_csv_folder(tmp_path / "mini")
    next((root / "images").glob("ntest*")).unlink()
    with pytest.raises(DataError, match="test.csv: image ntest.* not found"):
        load_dataset("folder", root, image_size=16)


def test_mini_imagenet_pickles(tmp_path):
    make_pickles(tmp_path / "mini-imagenet" / "compacted_datasets", "mini_imagenet_{split}.pickle")
    splits = load_dataset("mini-imagenet", tmp_path)
    assert splits["train"].images.shape == (12, 3, 84, 84) and splits["test"].num_classes == 2


def test_a_replaced_source_is_read_again_not_served_from_the_cache(tmp_path):
    folder = tmp_path / "mini-imagenet" / "compacted_datasets"
    make_pickles(folder, "mini_imagenet_{split}.pickle")
    assert load_dataset("mini-imagenet", tmp_path)["train"].num_classes == 3
    make_pickles(folder, "mini_imagenet_{split}.pickle", splits={"train": 5, "val": 2, "test": 2})  # re-extracted
    assert load_dataset("mini-imagenet", tmp_path)["train"].num_classes == 5


def test_mini_imagenet_wrong_array_shape_and_missing_files(tmp_path):
    make_pickles(tmp_path / "mini-imagenet" / "compacted_datasets", "mini_imagenet_{split}.pickle",
                 shape=(84, 84))
    with pytest.raises(DataError, match=r"mini_imagenet_\w+.pickle: image 0 of class \w+ has shape \(84, 84\)"):
        load_dataset("mini-imagenet", tmp_path)
    with pytest.raises(DataError, match="miniImageNet not found"):
        load_dataset("mini-imagenet", tmp_path / "elsewhere")


def test_mini_imagenet_image_folder_uses_the_shipped_csvs(tmp_path):
    (tmp_path / "mini-imagenet" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train.csv: image n0153282900000005.jpg of class n01532829 not found"):
        load_dataset("mini-imagenet", tmp_path)


def test_tiered_imagenet_chunks(tmp_path):
    folder = tmp_path / "tiered-imagenet" / "compacted_datasets"
    make_pickles(folder, "tiered_imagenet_{split}_0.pickle")
    make_pickles(folder, "tiered_imagenet_{split}_1.pickle", splits={"train": 2, "val": 1, "test": 1})
    splits = load_dataset("tiered-imagenet", tmp_path, image_size=32)
    assert splits["train"].num_classes == 3 and splits["train"].images.shape[0] == 12 + 8  # chunks merge by class


def test_cifar_fs_and_fc100_splits(tmp_path):
    root = make_cifar100(tmp_path)
    fs = load_dataset("cifar-fs", root)
    assert [fs[s].num_classes for s in ("train", "val", "test")] == [64, 16, 20]
    assert set(fs["test"].class_names) == set(CIFAR_FS["test"])
    assert fs["train"].images.shape[1:] == (3, 32, 32) and fs["train"].class_counts.unique().tolist() == [6]
    fc = load_dataset("fc100", root)
    assert [fc[s].num_classes for s in ("train", "val", "test")] == [60, 20, 20]
    assert not set(fc["train"].class_names) & set(fc["test"].class_names)


def test_cifar_missing_without_network(tmp_path):
    env = {"EGNN_DATA": str(tmp_path / "none"), "EGNN_CACHE": str(tmp_path / "c"), **NO_NETWORK}
    assert_user_error(cli("train", "--dataset", "fc100", "--out", tmp_path / "r", env=env),
                      "CIFAR-100 not found", "--data-root")


@pytest.mark.parametrize("fmt", ["folder-splits", "folder-csv", "mini-pickle", "tiered-pickle", "cifar-fs", "fc100"])
def test_short_cli_training_on_each_format(tmp_path, fmt):
    root = tmp_path / "data"
    dataset = {"folder-splits": "folder", "folder-csv": "folder", "mini-pickle": "mini-imagenet",
               "tiered-pickle": "tiered-imagenet"}.get(fmt, fmt)
    if fmt == "folder-splits":
        make_split_folders(root)
    elif fmt == "folder-csv":
        make_csv_folder(root)
    elif fmt == "mini-pickle":
        make_pickles(root / "mini-imagenet" / "compacted_datasets", "mini_imagenet_{split}.pickle", shape=(20, 20, 3))
    elif fmt == "tiered-pickle":
        make_pickles(root / "tiered-imagenet" / "compacted_datasets", "tiered_imagenet_{split}_0.pickle",
                     shape=(20, 20, 3))
    else:
        make_cifar100(root)
    proc = cli("train", "--dataset", dataset, "--data-root", root, "--image-size", 20, "--way", 2, "--shot", 1,
                "--query", 1, "--iterations", 2, "--tasks-per-batch", 2, "--val-every", 2, "--val-episodes", 2,
                "--test-episodes", 4, "--out", tmp_path / "run", "--quiet", env={"EGNN_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    assert f"{dataset}/test 2-way 1-shot" in proc.stdout
