"""Character- or byte-level language modelling data (``data: {name: text}``): one corpus, split contiguously into
train/val/test, cut into windows of the seed's token length ``T`` with next-token targets.

The default corpus is the prose CPython ships in every installation (``pydoc_data.topics``, about 465k characters),
so a run needs no download; ``path: FILE`` reads any UTF-8 file instead (at most ``max_bytes``). The vocabulary is
fixed from the training split: id 0 is every symbol the training split lacks, the others follow in code-point (or
byte) order, so a symbol seen only in val/test costs its bits as "unknown", never an index error.

>>> from archgraph.train.config import DataConfig
>>> ds = load_text(DataConfig(name="text"), window=32)
>>> ds.vocab_size, ds.window, len(ds.train) > 10_000
(104, 32, True)
>>> x, y = ds.batch(ds.train, torch.arange(2))
>>> x.shape, y.shape, bool((x[0, 1:] == y[0, :-1]).all())
(torch.Size([2, 32]), torch.Size([2, 32]), True)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..errors import ConfigError
from .config import DataConfig

UNKNOWN = 0   # the id of every symbol the training split does not hold


@dataclass
class TextSplit:
    """One contiguous part of the corpus as token ids, and the start of each window in it."""
    tokens: torch.Tensor   # long, 1-D
    starts: torch.Tensor   # long: window i is tokens[starts[i] : starts[i] + T + 1]

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def to(self, device) -> "TextSplit":
        return TextSplit(self.tokens.to(device), self.starts.to(device))


@dataclass
class TextDataset:
    """Windows of ``window`` tokens with next-token targets; ``symbols[i]`` is the text of id ``i`` (``None`` for
    the unknown id)."""
    name: str
    train: TextSplit
    val: Optional[TextSplit]
    test: TextSplit
    window: int
    symbols: list
    task: str = "language_model"

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    @property
    def num_classes(self) -> int:
        return self.vocab_size

    def to(self, device) -> "TextDataset":
        return TextDataset(self.name, self.train.to(device), self.val.to(device) if self.val is not None else None,
                           self.test.to(device), self.window, self.symbols, self.task)

    def batch(self, split: TextSplit, index: torch.Tensor, augment=None, gen: Optional[torch.Generator] = None,
              part: Optional[slice] = None):
        """``(tokens [B, T], next tokens [B, T])`` of the windows ``index`` (augmentation does not apply)."""
        starts = split.starts[index.to(split.starts.device)]
        if part is not None:
            starts = starts[part]
        pos = starts[:, None] + torch.arange(self.window + 1, device=starts.device)[None]
        w = split.tokens[pos]
        return w[:, :-1], w[:, 1:]


def default_corpus() -> str:
    """The prose of CPython's ``pydoc_data.topics`` (the help topics), joined in key order."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def read_corpus(path: str, max_bytes: int, source: str = "<config>") -> str:
    """The UTF-8 text of ``path``, read only when it is at most ``max_bytes`` long."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"text file '{path}' does not exist", file=source, field="data.path")
    size = p.stat().st_size
    if size > max_bytes:
        raise ConfigError(f"text file '{path}' has {size:,} bytes, more than data.max_bytes = {max_bytes:,}",
                          file=source, field="data.path")
    with open(p, "rb") as f:
        raw = f.read(max_bytes + 1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"text file '{path}' is not UTF-8: byte {err.start} ({raw[err.start:err.start + 1]!r}) "
                          f"{err.reason}", file=source, field="data.path") from None


def load_text(cfg: DataConfig, window: int, source: str = "<config>") -> TextDataset:
    """The corpus ``cfg`` names as windows of ``window`` tokens (see the module docstring)."""
    text = read_corpus(cfg.path, cfg.max_bytes, source) if cfg.path else default_corpus()
    seq = list(text.encode("utf-8")) if cfg.tokens == "bytes" else text
    n = len(seq)
    f_train, f_val, _ = cfg.split
    a, b = int(n * f_train), int(n * (f_train + f_val))
    parts = seq[:a], seq[a:b], seq[b:]
    symbols = [None] + sorted(set(parts[0]))
    ids = {s: i for i, s in enumerate(symbols) if s is not None}
    splits = []
    for i, (part, name) in enumerate(zip(parts, ("train", "val", "test"))):
        if i == 1 and f_val == 0:
            splits.append(None)
            continue
        if len(part) < window + 1:
            raise ConfigError(f"the {name} split of the corpus has {len(part)} tokens, fewer than one window of "
                              f"{window} + 1 (the seed's token length): use a longer text or other data.split "
                              "fractions", file=source, field="data.split")
        tokens = torch.tensor([ids.get(s, UNKNOWN) for s in part], dtype=torch.long)
        stride = (cfg.stride or window) if i == 0 else window
        starts = torch.arange(0, len(part) - window, stride, dtype=torch.long)
        limit = cfg.limit if i == 0 else cfg.test_limit if i == 2 else None
        if limit is not None:
            starts = starts[:limit]
        splits.append(TextSplit(tokens, starts))
    return TextDataset("text", splits[0], splits[1], splits[2], window, symbols)
