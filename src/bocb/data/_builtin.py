"""Datasets that need no files: scikit-learn's handwritten digits and a generated one for tests."""
from __future__ import annotations

import numpy as np

from bocb.data._base import DATASETS, DatasetInfo, RawDataset, known_sizes
from bocb.data._spec import DatasetSpec

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # the train/test split is fixed; split_seed only moves the validation split


def load_digits(spec: DatasetSpec) -> RawDataset:
    """sklearn's 1,797 8x8 digits (values 0..16) as uint8 0..255, grey repeated to 3 channels."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None].repeat(3, axis=1)
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED)
    return RawDataset(x_tr, y_tr, x_te, y_te, tuple(str(d) for d in range(10)))


SYNTHETIC_CLASSES, SYNTHETIC_SIZE, SYNTHETIC_TRAIN, SYNTHETIC_TEST = 10, 32, 1000, 500


def load_synthetic(spec: DatasetSpec) -> RawDataset:
    """Each class is a fixed smooth colour pattern (a random 4x4 grid upsampled); each image is its
    class pattern at a random contrast plus pixel noise. Fixed seed: the same data everywhere."""
    import torch  # here: registering the datasets (a spec's check) must not import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    patterns = F.interpolate(torch.rand(SYNTHETIC_CLASSES, 3, 4, 4, generator=gen),
                             size=(SYNTHETIC_SIZE, SYNTHETIC_SIZE), mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = torch.arange(n) % SYNTHETIC_CLASSES
        contrast = 0.5 + 0.5 * torch.rand(n, 1, 1, 1, generator=gen)
        noise = 0.15 * torch.randn(n, 3, SYNTHETIC_SIZE, SYNTHETIC_SIZE, generator=gen)
        images = (patterns[labels] - 0.5) * contrast + 0.5 + noise
        return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), labels.numpy()

    train, test = draw(SYNTHETIC_TRAIN), draw(SYNTHETIC_TEST)
    return RawDataset(*train, *test, tuple(f"class_{i}" for i in range(SYNTHETIC_CLASSES)))


DATASETS.register(DatasetInfo(
    name="digits", description="scikit-learn's 8x8 handwritten digits (1,437 train / 360 test), offline",
    num_classes=10, native_size=8, in_chans=3, load=load_digits, sizes=known_sizes(1_437, 360),
))
DATASETS.register(DatasetInfo(
    name="synthetic", description="generated class patterns plus noise (1,000 train / 500 test), for tests",
    num_classes=SYNTHETIC_CLASSES, native_size=SYNTHETIC_SIZE, in_chans=3, load=load_synthetic,
    sizes=known_sizes(SYNTHETIC_TRAIN, SYNTHETIC_TEST),
))
