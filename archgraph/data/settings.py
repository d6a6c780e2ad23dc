"""Settings every data source shares (batch sizes, workers, splits, augmentation), as frozen pydantic models.

Each source (:mod:`archgraph.data.folder`, :mod:`archgraph.data.tokens`, ...) subclasses :class:`DataBase` with its
own ``name`` literal and fields; the run file's ``data:`` is the union of them, discriminated on ``name``
(:data:`archgraph.data.DataSettings`). This module never imports torch.

>>> DataBase.model_fields["batch_size"].default
64
"""
from __future__ import annotations

from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, field_validator


class Settings(BaseModel):
    # strict: YAML gives real ints, floats and booleans, so `epochs: "3"` or `flip: 1` is an error, as in the schema
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Augment(Settings):
    """Augmentation of training images (``N, C, H, W``): whole batches on the device for in-memory data, one image
    at a time in the DataLoader's workers for streamed data (each image's draws seeded by its place in the epoch)."""
    translate: NonNegativeInt = Field(0, description="random shift by up to this many pixels (zero padding), "
                                                     "like RandomCrop(size, padding=translate)")
    flip: bool = Field(False, description="random horizontal flip (for natural images, not digits)")
    rotate: Annotated[float, Field(ge=0.0, le=180.0)] = Field(
        0.0, description="random rotation by up to this many degrees (bilinear; labels of scenes: nearest)")
    scale: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="random zoom by a factor in [1 - scale, 1 + scale], like RandomAffine(scale=...)")
    random_resized_crop: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="like RandomResizedCrop(size, scale=(random_resized_crop, 1), ratio=(3/4, 4/3)): a random "
                         "crop of at least this share of the image's area, stretched back to the image's size "
                         "(0: off; true: 0.08, torchvision's default)")
    color_jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="random brightness, contrast and saturation factors in [1 - color_jitter, 1 + "
                         "color_jitter], like ColorJitter(b, c, s) (0: off; true: 0.4)")

    @field_validator("random_resized_crop", "color_jitter", mode="before")
    @classmethod
    def _on_off(cls, value, info):
        """``true`` turns one on with the usual setting (torchvision's 0.08 crop area, a 0.4 jitter)."""
        if isinstance(value, bool):
            return ({"random_resized_crop": 0.08, "color_jitter": 0.4}[info.field_name]) if value else 0.0
        return value


class DataBase(Settings):
    """Fields every source has; a source adds its own ``name`` literal and fields."""
    name: str = Field(description="the data source (archgraph/data/)")
    val_fraction: Annotated[float, Field(ge=0.0, lt=0.5)] = Field(
        0.1, description="held-out share of the training set, for the plateau detector (0: use the training loss)")
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 1000
    augment: Augment = Field(default_factory=Augment)
    normalize: bool = Field(True, description="standardise each channel with the training split's mean and std")
    limit: Optional[PositiveInt] = Field(None, description="use at most this many training examples (quick runs; "
                                                           "text: windows drawn afresh each epoch, scenes: scenes)")
    test_limit: Optional[PositiveInt] = Field(None, description="use at most this many test examples")
    workers: Optional[NonNegativeInt] = Field(
        None, description="DataLoader worker processes of a streamed source (folder, tokens, python; default: the "
                          "machine's CPU cores less one, at most 8, shared among the processes of a torchrun; 0: "
                          "load in the training process)")
