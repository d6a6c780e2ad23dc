"""Pre-tokenised corpora in nanoGPT's layout (``data: {name: tokens, path: DIR}``): ``DIR/train.bin``,
``DIR/val.bin`` and optionally ``DIR/test.bin`` (else the validation tokens are also the test), each a flat array of
``uint16`` token ids (``dtype: uint32`` for vocabularies past 65,536), read with ``np.memmap``.

A training epoch is ``(len(train) - 1) // T`` windows of the seed's token length ``T`` (or ``limit`` of them), each
at a random place in the training tokens, drawn from the run's seed and the window's place in the epoch (so a resumed
run draws the same windows). Validation and test windows are the consecutive ones. The vocabulary is ``vocab``, or
``vocab_size`` in ``DIR/meta.json`` (nanoGPT's), or else the largest id seen plus one; the seed's token input must
declare at least as many. Language models on tokens report perplexity: ``test_loss`` (nats per token) and
``test_ppl``.

>>> import tempfile, numpy as np, os
>>> d = tempfile.mkdtemp()
>>> for part in ("train", "val"): np.arange(100, dtype=np.uint16).tofile(os.path.join(d, part + ".bin"))
>>> loaded = load_tokens(TokenSettings(name="tokens", path=d, vocab=100), Request(input_shape=(8,)))
>>> len(loaded.train), len(loaded.test), loaded.classes
(12, 12, 100)
>>> x, y = loaded.test.get(1, None); x.tolist()[:3], y.tolist()[:3]
([8, 9, 10], [9, 10, 11])
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field, PositiveInt

from .registry import Loaded, Request, register
from .settings import DataBase


class TokenSettings(DataBase):
    """A pre-tokenised corpus in nanoGPT's layout, streamed from memory-mapped files (archgraph/data/tokens.py)."""
    name: Literal["tokens"] = "tokens"
    path: str = Field(description="the folder holding train.bin, val.bin and optionally test.bin (and meta.json)")
    dtype: Literal["uint16", "uint32"] = Field("uint16", description="the token ids' type in the .bin files")
    vocab: Optional[PositiveInt] = Field(None, description="the vocabulary size (default: meta.json's vocab_size, "
                                                           "else the largest id plus one)")


class TokenWindows:
    """An item set of windows of ``window`` tokens (and their next tokens) of one memory-mapped file: consecutive
    windows when evaluating, a random window for each training draw. Only the path travels to worker processes;
    each opens its own map."""

    def __init__(self, path: Path, dtype: str, window: int, count: Optional[int] = None, limit: Optional[int] = None):
        self.path, self.dtype, self.window = path, dtype, window
        self._tokens: Optional[np.ndarray] = None
        self.total = len(self.tokens)
        n = (self.total - 1) // window if count is None else count
        self.n = min(n, limit) if limit is not None else n

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._tokens

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokens": None}

    def __len__(self) -> int:
        return self.n

    def get(self, i: int, draw: Optional[int]):
        t = self.window
        start = i * t if draw is None else draw % (self.total - t)
        w = np.asarray(self.tokens[start:start + t + 1], dtype=np.int64)
        return w[:-1], w[1:]


def largest_id(tokens: np.ndarray, chunk: int = 1 << 24) -> int:
    """The largest token id, read in chunks (the map is not pulled into memory at once)."""
    return max(int(tokens[i:i + chunk].max()) for i in range(0, len(tokens), chunk))


def load_tokens(cfg: TokenSettings, req: Request) -> Loaded:
    root = req.path(cfg.path)
    shape = req.input_shape
    if shape is None or len(shape) != 1:
        raise req.error(f"data 'tokens' needs a seed whose input is token ids {{shape: [T], vocab: V}}, not "
                        f"{list(shape or [])}", "seed")
    window = int(shape[0])
    itemsize = np.dtype(cfg.dtype).itemsize
    files = {}
    for part in ("train", "val", "test"):
        f = root / f"{part}.bin"
        if not f.is_file():
            if part == "test":
                continue
            raise req.error(f"'{f}' does not exist: data.path must hold train.bin and val.bin (and optionally "
                            "test.bin) of token ids")
        size = f.stat().st_size
        if size % itemsize:
            raise req.error(f"'{f}' has {size:,} bytes, not a whole number of {cfg.dtype} ids (data.dtype)")
        if size // itemsize < window + 1:
            raise req.error(f"'{f}' has {size // itemsize} tokens, fewer than one window of {window} + 1 (the seed's "
                            "token length)")
        files[part] = f
    train = TokenWindows(files["train"], cfg.dtype, window, limit=cfg.limit)
    val = TokenWindows(files["val"], cfg.dtype, window)
    test = TokenWindows(files["test"], cfg.dtype, window, limit=cfg.test_limit) if "test" in files else \
        TokenWindows(files["val"], cfg.dtype, window, limit=cfg.test_limit)
    vocab = cfg.vocab
    meta = root / "meta.json"
    if vocab is None and meta.is_file():
        try:
            vocab = int(json.loads(meta.read_text())["vocab_size"])
        except (ValueError, KeyError, TypeError) as err:
            raise req.error(f"'{meta}' has no integer vocab_size ({err})") from None
    if vocab is None:
        vocab = max(largest_id(s.tokens) for s in (train, val, test)) + 1
    return Loaded("tokens", "token_model", train, val, test, vocab, (window,), window=window)


register(TokenSettings, load_tokens)
