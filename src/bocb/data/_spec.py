"""A spec's dataset section: which registered dataset, and which part of it a trial uses. It lives with the
registry its validators check against (bocb.spec holds it, and imports it from here)."""
from __future__ import annotations

from pydantic import Field, StrictFloat, StrictInt, field_validator, model_validator

from bocb.data._base import DATASETS
from bocb.errors import SpecError
from bocb.strict import MAX_SEED, StrictModel

MAX_IMAGE_SIDE = 4096  # one 4096 x 4096 RGB image is 200 MB in float32: beyond that no trial fits in memory


class DatasetSpec(StrictModel):
    name: str = "digits"
    image_size: StrictInt | None = Field(None, gt=0, le=MAX_IMAGE_SIDE,
                                         description="input side; None: the backbone's input size")
    path: str | None = None
    download: bool = False
    val_fraction: StrictFloat = Field(0.1, ge=0.0, lt=1.0, description="carved from train, stratified; 0 turns it off")
    train_subset: StrictInt | None = Field(None, gt=0)
    test_subset: StrictInt | None = Field(None, gt=0)
    split_seed: StrictInt = Field(0, ge=0, le=MAX_SEED)

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return DATASETS.get(name, field="dataset.name").name

    @model_validator(mode="after")
    def _splits_hold_every_class(self) -> DatasetSpec:
        """Subsets no larger than the data, and a stratified split that leaves each part an image per class
        (where the dataset's sizes are known without its files)."""
        info = DATASETS.get(self.name)
        full = info.sizes(self)
        if full is None:
            return self
        for field, wanted, have, split in (("train_subset", self.train_subset, full[0], "training"),
                                           ("test_subset", self.test_subset, full[1], "test")):
            if wanted is not None and wanted > have:
                raise SpecError(f"dataset.{field}", f"{wanted:,} is more than the {have:,} {split} images of "
                                                    f"{self.name}")
        train, val, _ = split_sizes(self)
        classes = info.num_classes
        if train < classes or (self.val_fraction > 0 and val < classes):
            raise SpecError("dataset.val_fraction", f"{self.val_fraction:g} of {train + val:,} training images leaves "
                                                    f"{train:,} to train on and {val:,} to validate; each needs at "
                                                    f"least one image per class ({classes})")
        return self


def split_sizes(spec: DatasetSpec) -> tuple[int, int, int] | None:
    """(train, val, test) images a trial of ``spec`` uses, from the dataset's known sizes and the spec's
    subsets and validation fraction, without the files; None when the dataset's size is unknown."""
    full = DATASETS.get(spec.name, field="dataset.name").sizes(spec)
    if full is None:
        return None
    pool = min(spec.train_subset or full[0], full[0])
    val = int(round(spec.val_fraction * pool))  # as train_val_split carves it
    return pool - val, val, min(spec.test_subset or full[1], full[1])
