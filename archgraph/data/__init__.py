"""Data sources: one module per source, each holding its settings model, its loader and its registration
(:func:`archgraph.data.registry.register`), as each op registers itself.

=================  ===================================================================================  ==========
``data.name``      what it reads                                                                        path
=================  ===================================================================================  ==========
digits, mnist,     built-in image datasets, whole in memory (:mod:`archgraph.data.builtin`)             in memory
fashion_mnist,
cifar10, cifar100,
svhn
digits_scenes,     segmentation scenes of digits (:mod:`archgraph.data.scenes`)                          in memory
mnist_scenes
text               one text as characters, bytes or tokenizer ids (:mod:`archgraph.data.text`)         in memory
arrays             an .npz / .safetensors file of arrays (:mod:`archgraph.data.arrays`)                 DataLoader
folder             an ImageFolder tree of image files (:mod:`archgraph.data.folder`)                    DataLoader
tokens             nanoGPT's train.bin / val.bin token files (:mod:`archgraph.data.tokens`)             DataLoader
python             the user's own torch Datasets (:mod:`archgraph.data.python`)                         DataLoader
=================  ===================================================================================  ==========

This package never imports torch: sources return plain arrays or item sets (:class:`~archgraph.data.registry.Loaded`)
and :mod:`archgraph.data.feed` (torch) makes batches of them, so run files validate without torch.

>>> data_config(name="folder", path="pets").image_size is None
True
>>> type(data_config()).__name__
'ImageSettings'
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter

from . import arrays, builtin, folder, python, scenes, text, tokens  # registration order: the schema's
from .registry import SOURCES, Loaded, Request, Source, register
from .settings import Augment, DataBase

DEFAULT_SOURCE = "digits"

#: every source's settings model, once each, in registration order
DATA_SETTINGS: tuple[type, ...] = tuple(dict.fromkeys(s.settings for s in SOURCES.values()))


def _source_name(value: Any) -> str:
    name = value.get("name", DEFAULT_SOURCE) if isinstance(value, dict) else getattr(value, "name", None)
    src = SOURCES.get(name) if isinstance(name, str) else None
    return src.settings.__name__ if src is not None else str(name)


#: the run file's ``data:``: the settings of the source ``name`` names (``digits`` when it names none)
if TYPE_CHECKING:   # the union is built at run time from the registered sources; a type checker sees their base
    DataSettings = DataBase
else:
    DataSettings = Annotated[Union[tuple(Annotated[s, Tag(s.__name__)] for s in DATA_SETTINGS)],
                             Discriminator(_source_name, custom_error_type="unknown_data_source",
                                           custom_error_message="unknown data source")]

_ADAPTER: TypeAdapter[DataBase] = TypeAdapter(DataSettings)


def data_config(**fields) -> DataBase:
    """The settings of the source ``fields["name"]`` names, validated (``digits`` without a name)."""
    return _ADAPTER.validate_python(fields)


__all__ = ["Augment", "DATA_SETTINGS", "DataBase", "DataSettings", "Loaded", "Request", "SOURCES", "Source",
           "data_config", "register", "arrays", "builtin", "folder", "python", "scenes", "text", "tokens"]
