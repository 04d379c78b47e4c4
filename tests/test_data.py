"""Tests of bocb.data: splits, the fast path's batches and augmentation, and every dataset reader."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_data import cifar_batch, idx_bytes, write_cifar, write_idx_set, write_image_folder

from bocb.data import DATASETS, DatasetInfo, build_loaders
from bocb.data._batches import epoch_order, random_crop, random_hflip
from bocb.data._fashion import DEBIAN_DIR, read_idx
from bocb.data._memory import resize_uint8
from bocb.data._splits import stratified_take, train_val_split
from bocb.errors import DataError, SpecError
from bocb.recipes import resolve_recipe
from bocb.spec import DatasetSpec, parse_spec

torch.set_num_threads(1)

PLAIN = {"crop_padding": 0, "hflip": False}


def loaders(name: str = "synthetic", recipe: dict | None = None, seed: int = 0, image_size: int = 16,
            batch_size: int = 50, **spec):
    return build_loaders(DatasetSpec(name=name, **spec), image_size=image_size, batch_size=batch_size,
                         recipe=PLAIN if recipe is None else recipe, seed=seed)


def labels_of(batches) -> np.ndarray:
    return torch.cat([y for _, y in batches]).numpy()


# --- splits -----------------------------------------------------------------------------------

def test_stratified_take_keeps_class_proportions_by_largest_remainder():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    picked = stratified_take(labels, 15, seed=3)
    # 15 * (0.5, 0.3, 0.2) = (7.5, 4.5, 3.0): floors sum to 14, one .5 remainder gets the 15th.
    counts = np.bincount(labels[picked], minlength=3).tolist()
    assert counts in ([8, 4, 3], [7, 5, 3])
    assert len(np.unique(picked)) == 15


def test_stratified_take_smaller_than_the_number_of_classes():
    labels = np.repeat(np.arange(10), 5)
    assert len(stratified_take(labels, 3, seed=0)) == 3


def test_val_split_is_disjoint_stratified_and_seeded():
    labels = np.repeat(np.arange(4), 25)
    train, val = train_val_split(labels, 0.2, seed=1)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    assert np.bincount(labels[val]).tolist() == [5, 5, 5, 5]
    assert np.array_equal(val, train_val_split(labels, 0.2, seed=1)[1])
    assert not np.array_equal(val, train_val_split(labels, 0.2, seed=2)[1])


def test_zero_val_fraction_means_no_val_loader():
    lo = loaders(val_fraction=0.0)
    assert lo.val is None and lo.val_size == 0 and lo.train_size == 1000


def test_synthetic_sizes_and_balance_of_the_val_split():
    lo = loaders(val_fraction=0.1)
    assert (lo.train_size, lo.val_size, lo.test_size) == (900, 100, 500)
    assert np.bincount(labels_of(lo.val)).tolist() == [10] * 10
    assert lo.num_classes == 10 and lo.in_chans == 3 and len(lo.class_names) == 10


def test_subsets_are_stratified_and_independent_of_split_seed():
    a = loaders(train_subset=200, test_subset=100, val_fraction=0.1, split_seed=0)
    b = loaders(train_subset=200, test_subset=100, val_fraction=0.1, split_seed=1)
    assert (a.train_size, a.val_size, a.test_size) == (180, 20, 100)
    assert np.bincount(labels_of(a.test)).tolist() == [10] * 10
    assert np.array_equal(labels_of(a.test), labels_of(b.test))
    # Same 200-image pool, different validation carve.
    val_a, val_b = (torch.cat([x for x, _ in lo.val]) for lo in (a, b))
    assert not torch.equal(val_a, val_b)


def test_subset_larger_than_the_dataset_names_the_field():
    with pytest.raises(SpecError, match="dataset.train_subset"):
        loaders(train_subset=5000)


# --- batches ----------------------------------------------------------------------------------

def test_train_batches_cover_the_split_and_drop_the_last_partial_batch():
    lo = loaders(val_fraction=0.1, batch_size=64)  # 900 train -> 14 full batches
    xs = [x for x, _ in lo.train]
    assert len(lo.train) == 14 == len(xs)
    assert all(x.shape == (64, 3, 16, 16) and x.dtype == torch.float32 for x in xs)


def test_split_smaller_than_a_batch_gives_one_batch():
    lo = loaders(train_subset=30, val_fraction=0.0, batch_size=64)
    assert len(lo.train) == 1 and next(iter(lo.train))[0].shape[0] == 30


def test_set_epoch_makes_batches_a_function_of_seed_and_epoch():
    recipe = resolve_recipe("torch")
    a, b = loaders(recipe=recipe, seed=5), loaders(recipe=recipe, seed=5)
    a.train.set_epoch(3)
    b.train.set_epoch(0)
    list(b.train)  # consuming an epoch must not change the next one's content
    b.train.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(a.train, b.train):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.train.set_epoch(4)
    assert not torch.equal(next(iter(a.train))[1], next(iter(b.train))[1])


def test_eval_batches_are_normalised_with_the_training_mean_and_std():
    lo = loaders(val_fraction=0.0, recipe=PLAIN, image_size=32)
    x = torch.cat([x for x, _ in lo.train]).double()
    # The whole training set at native size (no augmentation) normalised by its own statistics.
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_random_crop_shifts_each_sample_by_its_own_offset(mode: str):
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4) + 1
    gen = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, gen, mode)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode=mode)
    gen = torch.Generator().manual_seed(0)
    tops, lefts = torch.randint(0, 5, (2, 1), generator=gen), torch.randint(0, 5, (2, 1), generator=gen)
    for i in range(2):
        top, left = int(tops[i]), int(lefts[i])
        assert torch.equal(out[i], padded[i, :, top:top + 4, left:left + 4])


def test_reflect_padding_mirrors_the_border_as_torchvision_does():
    # A crop shifted fully up-left (offsets 0, 0) of a 1x1x3x3 image padded by 1: row/column -1 mirrors row/column 1.
    x = torch.tensor([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]], dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    while True:  # find a seed whose first draws are (0, 0)
        state = gen.get_state()
        if int(torch.randint(0, 3, (1,), generator=gen)) == 0 and int(torch.randint(0, 3, (1,), generator=gen)) == 0:
            break
    gen.set_state(state)
    expected = torch.tensor([[[[5, 4, 5], [2, 1, 2], [5, 4, 5]]]], dtype=torch.uint8)
    assert torch.equal(random_crop(x, 1, gen, "reflect"), expected)


def test_random_crop_and_flip_change_images_and_keep_shape():
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)
    cropped = random_crop(x, 4, gen)
    assert cropped.shape == x.shape and (cropped != x).flatten(1).any(1).sum() > 50
    flipped = random_hflip(x, gen)
    same, mirrored = torch.all(flipped == x, dim=(1, 2, 3)), torch.all(flipped == x.flip(3), dim=(1, 2, 3))
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54


def test_repeated_aug_order_repeats_each_image_k_times_in_a_row():
    order = epoch_order(10, 3, torch.Generator().manual_seed(0))
    assert len(order) == 10
    assert torch.equal(order[:9].view(3, 3), order[:9].view(3, 3)[:, :1].expand(3, 3))
    assert len(order.unique()) == 4  # ceil(10 / 3) distinct images


def test_modern_recipe_augments_differently_for_each_repeat():
    recipe = resolve_recipe("deit")  # RandAugment, RandomErasing 0.25, repeated_aug 3
    lo = loaders(recipe=recipe, batch_size=30, train_subset=90, val_fraction=0.0)
    x, y = next(iter(lo.train))
    assert x.shape == (30, 3, 16, 16) and torch.equal(y.view(10, 3), y.view(10, 3)[:, :1].expand(10, 3))
    assert not torch.equal(x[0], x[1])


def test_augmentation_leaves_global_random_state_alone():
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    list(loaders(recipe=resolve_recipe("deit"), train_subset=60, val_fraction=0.0).train)
    assert torch.equal(state, torch.random.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])


def test_train_image_size_trains_smaller_and_evaluates_at_image_size():
    lo = loaders(recipe={**PLAIN, "train_image_size": 12}, image_size=16)
    assert next(iter(lo.train))[0].shape[-1] == 12
    assert next(iter(lo.val))[0].shape[-1] == 16 and next(iter(lo.test))[0].shape[-1] == 16


# --- digits -----------------------------------------------------------------------------------

def test_digits_split_sizes_and_upsampling():
    lo = loaders("digits", image_size=32, val_fraction=0.1)
    assert (lo.train_size + lo.val_size, lo.test_size) == (1437, 360)
    assert lo.class_names == [str(d) for d in range(10)]
    x, _ = next(iter(lo.test))
    assert x.shape == (50, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1])  # grey repeated to three channels


def test_digits_pixels_scale_0_16_to_0_255():
    raw = DATASETS.get("digits").load(DatasetSpec(name="digits"))
    from sklearn.datasets import load_digits

    assert raw.train_x.dtype == np.uint8 and raw.train_x.max() == 255 and raw.train_x.shape[1:] == (3, 8, 8)
    assert sorted(np.unique(raw.train_x).tolist()) == [round(v * 255 / 16) for v in range(17)]
    assert len(raw.train_x) + len(raw.test_x) == len(load_digits().target)


# --- registry ---------------------------------------------------------------------------------

def test_unknown_dataset_names_the_field_and_choices():
    with pytest.raises(SpecError, match="dataset.name.*did you mean 'digits'"):
        DatasetSpec(name="digts")


def test_users_can_register_their_own_dataset():
    raw = DATASETS.get("synthetic").load(DatasetSpec(name="synthetic"))
    info = DatasetInfo(name="my_tiny", description="test", num_classes=10, native_size=32, in_chans=3,
                       load=lambda spec: raw)
    DATASETS.register(info, replace=True)
    lo = loaders("my_tiny", val_fraction=0.0)
    assert lo.train_size == 1000 and lo.test_size == 500


# --- CIFAR ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar_reads_the_python_archive_as_folder_and_tar_gz(tmp_path, kind, as_tar):
    source = write_cifar(tmp_path, kind, per_file=20, as_tar=as_tar)
    spec = DatasetSpec(name=kind, path=str(source))
    raw = DATASETS.get(kind).load(spec)
    n_train = 100 if kind == "cifar10" else 20  # five batches of 20, or one train file
    assert raw.train_x.shape == (n_train, 3, 32, 32) and raw.test_x.shape == (20, 3, 32, 32)
    # Every pixel equals the label (see cifar_batch): images and labels stayed paired.
    assert np.array_equal(raw.train_x[:, 1, 5, 7], raw.train_y)
    assert raw.class_names[:2] == ("label0", "label1") and len(raw.class_names) == DATASETS.get(kind).num_classes


def test_cifar_path_may_be_the_parent_folder(tmp_path):
    write_cifar(tmp_path, "cifar10")
    lo = build_loaders(DatasetSpec(name="cifar10", path=str(tmp_path), val_fraction=0.0), image_size=32,
                       batch_size=25, recipe=resolve_recipe("torch"), seed=0)
    assert (lo.train_size, lo.test_size, lo.num_classes) == (100, 20, 10)
    assert next(iter(lo.train))[0].shape == (25, 3, 32, 32)


def test_missing_cifar_is_a_spec_error_naming_how_to_get_it(tmp_path):
    with pytest.raises(SpecError, match="dataset.path: no CIFAR-100 .*cifar-100-python.*download: true"):
        DATASETS.get("cifar100").check(DatasetSpec(name="cifar100", path=str(tmp_path / "nowhere")))


def test_corrupt_cifar_batch_is_a_data_error(tmp_path):
    folder = write_cifar(tmp_path, "cifar10")
    (folder / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR pickle"):
        DATASETS.get("cifar10").load(DatasetSpec(name="cifar10", path=str(folder)))


class _Payload:
    """Unpickling this calls os.system: what a crafted dataset file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_crafted_cifar_pickle_never_executes(tmp_path):
    folder = write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}))
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR pickle .*refusing posix.system"):
        DATASETS.get("cifar10").load(DatasetSpec(name="cifar10", path=str(folder)))
    assert not marker.exists()


def test_cifar_batch_with_the_wrong_shape_is_a_data_error(tmp_path):
    folder = write_cifar(tmp_path, "cifar10")
    entry = cifar_batch(4, 10, b"labels", seed=0)
    entry[b"data"] = entry[b"data"][:, :100]
    (folder / "test_batch").write_bytes(pickle.dumps(entry))
    with pytest.raises(DataError, match=r"test_batch: expected uint8 data \(N, 3072\)"):
        DATASETS.get("cifar10").load(DatasetSpec(name="cifar10", path=str(folder)))


def test_truncated_cifar_archive_is_a_data_error(tmp_path):
    archive = write_cifar(tmp_path, "cifar10", as_tar=True)
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable CIFAR-10 archive"):
        DATASETS.get("cifar10").load(DatasetSpec(name="cifar10", path=str(archive)))


# --- Fashion-MNIST ----------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_tiny_idx_files(tmp_path, gz):
    folder = write_idx_set(tmp_path / "fm", n_train=40, n_test=20, gz=gz)
    lo = build_loaders(DatasetSpec(name="fashion_mnist", path=str(folder), val_fraction=0.25), image_size=28,
                       batch_size=10, recipe=PLAIN, seed=0)
    assert (lo.train_size, lo.val_size, lo.test_size, lo.in_chans) == (30, 10, 20, 1)
    assert lo.class_names[0] == "T-shirt/top" and lo.class_names[9] == "Ankle boot"
    raw = DATASETS.get("fashion_mnist").load(DatasetSpec(name="fashion_mnist", path=str(folder)))
    assert raw.train_x.shape == (40, 1, 28, 28)
    assert np.array_equal(raw.test_x[:, 0, 3, 3], raw.test_y * 10)  # pixels = 10 * label


def test_fashion_mnist_finds_torchvisions_download_layout(tmp_path):
    write_idx_set(tmp_path / "FashionMNIST" / "raw", gz=False)
    assert DATASETS.get("fmnist").load(DatasetSpec(name="fashion-mnist", path=str(tmp_path))).test_x.shape[0] == 20


def test_missing_fashion_mnist_names_both_ways_to_get_it(tmp_path):
    with pytest.raises(SpecError, match="dataset.path: .*apt-get install dataset-fashion-mnist.*download: true"):
        DATASETS.get("fashion_mnist").check(DatasetSpec(name="fashion_mnist", path=str(tmp_path)))


def test_idx_with_a_bad_magic_number_is_a_data_error(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8)))  # an images file where labels belong
    with pytest.raises(DataError, match="bad IDX magic number 0x00000803, expected 0x00000801"):
        read_idx(path, 1)


def test_truncated_idx_is_a_data_error(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-100])
    with pytest.raises(DataError, match="header says 4x28x28 = 3136 bytes of data, the file has 3036"):
        read_idx(path, 3)


def test_truncated_gzip_idx_is_a_data_error(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8)))[:30])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path, 3)


needs_fashion = pytest.mark.skipif(not DEBIAN_DIR.is_dir(),
                                   reason=f"Fashion-MNIST not installed ({DEBIAN_DIR}); "
                                          "apt-get install dataset-fashion-mnist")


@needs_fashion
def test_real_fashion_mnist_sizes_balance_and_stratified_subsets():
    raw = DATASETS.get("fashion_mnist").load(DatasetSpec(name="fashion_mnist"))
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert np.bincount(raw.test_y).tolist() == [1000] * 10
    lo = loaders("fashion_mnist", train_subset=1000, test_subset=500, image_size=28, val_fraction=0.1)
    assert (lo.train_size, lo.val_size, lo.test_size) == (900, 100, 500)
    assert np.bincount(labels_of(lo.test)).tolist() == [50] * 10


# --- imagefolder ------------------------------------------------------------------------------

def test_imagefolder_loads_a_tiny_png_tree_with_the_same_interface(tmp_path):
    root = write_image_folder(tmp_path / "tiny", n_train=6, n_val=2)
    spec = DatasetSpec(name="imagefolder", path=str(root), val_fraction=1 / 3)
    lo = build_loaders(spec, image_size=16, batch_size=4, recipe=resolve_recipe("torch"), seed=0)
    assert lo.class_names == ["ant", "bee", "cat"] and lo.num_classes == 3 and lo.in_chans == 3
    assert (lo.train_size, lo.val_size, lo.test_size) == (12, 6, 6)
    assert len(lo.train) == 3 and len(lo.test) == 2
    lo.train.set_epoch(1)
    first = [(x.clone(), y.clone()) for x, y in lo.train]
    assert all(x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 for x, _ in first)
    lo.train.set_epoch(1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, lo.train))
    assert np.bincount(labels_of(lo.val)).tolist() == [2, 2, 2]
    assert sorted(labels_of(lo.test).tolist()) == [0, 0, 1, 1, 2, 2]


def test_imagefolder_without_val_folder_is_a_spec_error(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(SpecError, match="dataset.path: .* lacks val/"):
        DATASETS.get("imagefolder").check(DatasetSpec(name="imagefolder", path=str(tmp_path)))


def test_resize_is_bilinear_half_pixel_and_rounds_to_uint8():
    x = torch.tensor([[0, 255], [0, 255]], dtype=torch.uint8).view(1, 1, 2, 2)
    # Output pixel centres map to source -0.25, 0.25, 0.75, 1.25 (clamped): 0, 63.75, 191.25, 255.
    assert resize_uint8(x, 4)[0, 0].tolist() == [[0, 64, 191, 255]] * 4


def test_spec_validation_reports_missing_dataset_files(tmp_path):
    spec = {"dataset": {"name": "cifar10", "path": str(tmp_path)}, "backbones": ["resnet50"], "optimizers": ["sgd"]}
    with pytest.raises(SpecError, match="^dataset.path: no CIFAR-10"):
        parse_spec(spec)
