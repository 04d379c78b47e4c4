"""The in-memory fast path: whole splits as uint8 tensors on the device, batches by index gather.

The images tensor is the shared per-process cache; a loader holds only the indices of its split.

Augmentation is batched tensor work (one padded tensor read at per-sample offsets with one gather,
a per-sample flip mask); no per-image Python, no DataLoader workers. The exceptions are the
recipe's RandAugment (timm's, per image; see docs/data.md) and timm's RandomErasing (a loop over the
batch inside timm).
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, epoch), the same on every device."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def epoch_order(n: int, repeats: int, gen: torch.Generator) -> torch.Tensor:
    """This epoch's sample order: a permutation, or with ``repeats`` = k timm's RepeatAugSampler order
    on one replica (ceil(n/k) images, each k times in a row; the epoch keeps n samples).

    Not timm's sampler itself: it seeds its shuffle with the epoch alone and yields a Python list.
    """
    perm = torch.randperm(n, generator=gen)
    if repeats <= 1:
        return perm
    return perm[: -(-n // repeats)].repeat_interleave(repeats)[:n]


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator, mode: str = "reflect") -> torch.Tensor:
    """torchvision's RandomCrop(size, padding, padding_mode=mode) on a batch: pad ('reflect' or zeros with
    'constant'), then one crop per sample, gathered from the flattened padded images (6x faster on CPU
    than 4-D advanced indexing)."""
    b, c, h, w = x.shape
    padded_w = w + 2 * padding
    padded = F.pad(x, (padding, padding, padding, padding), mode=mode).flatten(2)
    top = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
    window = (torch.arange(h)[:, None] * padded_w + torch.arange(w)).flatten()
    index = ((top * padded_w + left)[:, None] + window).to(x.device)
    return padded.gather(2, index[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class _SeededGlobals:
    """timm's RandAugment and RandomErasing draw from the global Python, NumPy and torch RNGs; seed
    them from our generator for the call, then restore them, so a batch stays a pure function of
    (seed, epoch, step) without disturbing anyone else's random state."""

    def __init__(self, gen: torch.Generator, device: torch.device) -> None:
        self.seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        self.devices = [device] if device.type == "cuda" else []

    def __enter__(self) -> None:
        self.py_state, self.np_state = random.getstate(), np.random.get_state()
        self.fork = torch.random.fork_rng(devices=self.devices)
        self.fork.__enter__()
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        self.fork.__exit__(*exc)
        random.setstate(self.py_state)
        np.random.set_state(self.np_state)


class Augment:
    """The recipe's per-sample augmentations for a uint8 batch, then normalisation."""

    def __init__(self, recipe: dict, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> None:
        self.padding = int(recipe.get("crop_padding", 0) or 0)
        self.padding_mode = recipe.get("crop_padding_mode", "reflect")
        self.hflip = bool(recipe.get("hflip", False))
        self.device = device
        self.normalise = Normalise(mean, std, device)
        self.randaugment = _randaugment(recipe.get("randaugment"), mean) if recipe.get("randaugment") else None
        self.erasing = None
        if recipe.get("random_erasing", 0.0) > 0:
            from timm.data.random_erasing import RandomErasing

            # timm's create_transform defaults: per-pixel normal noise, one box.
            self.erasing = RandomErasing(recipe["random_erasing"], mode="pixel", device=device)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.padding:
            x = random_crop(x, self.padding, gen, self.padding_mode)
        if self.hflip:
            x = random_hflip(x, gen)
        if self.randaugment is not None:
            with _SeededGlobals(gen, self.device):
                x = _per_image(self.randaugment, x)
        x = self.normalise(x)
        if self.erasing is not None:
            with _SeededGlobals(gen, self.device):
                x = self.erasing(x)
        return x


def _randaugment(config: str, mean: torch.Tensor):  # noqa: ANN202 - timm's transform type
    """timm's RandAugment from a config string such as 'rand-m9-mstd0.5-inc1', with the hparams that
    timm.data.create_transform passes: fill with the dataset mean; its translations are relative
    (up to 0.45 of the side)."""
    from timm.data.auto_augment import rand_augment_transform

    fill = tuple(int(round(255 * float(m))) for m in mean)
    transform = rand_augment_transform(config, {"img_mean": fill, "translate_pct": 0.45})
    for op in transform.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = _posterize
    return transform


def _posterize(img, bits: int, **kwargs):  # noqa: ANN001, ANN202 - PIL images
    """timm's posterize, keeping 0 bits as a black image: timm's 'inc1' ops ask for 0 bits at
    magnitude 10, which Pillow >= 10 rejects (it used to return black)."""
    from PIL import Image
    from timm.data.auto_augment import posterize

    return Image.new(img.mode, img.size) if bits < 1 else posterize(img, bits, **kwargs)


def _per_image(transform, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """Apply a PIL transform to each image of a uint8 batch: the slow part of the fast path."""
    from PIL import Image

    arrays = x.permute(0, 2, 3, 1).cpu().numpy()
    gray = arrays.shape[-1] == 1
    out = []
    for a in arrays:
        img = Image.fromarray(a[..., 0] if gray else a)
        out.append(np.asarray(transform(img)).reshape(a.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device)


class Normalise:
    """uint8 -> float32, (x/255 - mean) / std, as one multiply-add."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> None:
        self.scale = (1.0 / (255.0 * std)).float().to(device)[None, :, None, None]
        self.shift = (-mean / std).float().to(device)[None, :, None, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)


class TrainBatches:
    """Shuffled, augmented training batches; ``len()`` is steps per epoch (the last partial batch is
    dropped, as timm's loader does, unless the split is smaller than one batch).

    Call ``set_epoch(e)`` before each epoch: the order and augmentation are then a pure function of
    (seed, e), so a resumed trial sees the same batches. Without it every pass repeats epoch 0.
    """

    def __init__(self, images: torch.Tensor, index: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 augment: Augment, seed: int, repeats: int = 1) -> None:
        self.images, self.index, self.labels = images, index, labels
        self.batch_size, self.augment, self.seed, self.repeats = batch_size, augment, seed, repeats
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, len(self.labels) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Batch]:
        gen = epoch_generator(self.seed, self.epoch)
        order = epoch_order(len(self.labels), self.repeats, gen).to(self.images.device)
        for step in range(len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield self.augment(self.images[self.index[idx]], gen), self.labels[idx]


class EvalBatches:
    """Evaluation batches in a fixed order, normalised, no augmentation."""

    def __init__(self, images: torch.Tensor, index: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 normalise: Normalise) -> None:
        self.images, self.index, self.labels = images, index, labels
        self.batch_size, self.normalise = batch_size, normalise

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.labels), self.batch_size):
            end = start + self.batch_size
            yield self.normalise(self.images[self.index[start:end]]), self.labels[start:end]
