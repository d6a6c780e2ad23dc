"""Language modelling on one text (``data: {name: text}``): the corpus split contiguously into train/val/test and
cut into windows of the seed's token length ``T`` with next-token targets.

The default corpus is the prose CPython ships in every installation (``pydoc_data.topics``, about 465k characters),
so a run needs no download; ``path: FILE`` reads any UTF-8 file instead (at most ``max_bytes``). Tokens are
characters or bytes (``tokens``), or the ids of a Hugging Face ``tokenizers`` tokenizer (``tokenizer: FILE_OR_DIR``,
a local ``tokenizer.json``; the metric is then perplexity, ``test_ppl``, not bits per character). With characters
or bytes the vocabulary is fixed from the training split: id 0 is every symbol the training split lacks, the others
follow in code-point (or byte) order, so a symbol seen only in val/test costs its bits as "unknown", never an index
error.

``limit: N`` trains each epoch on N windows drawn afresh from all the training windows (seeded and checkpointed
with the run); ``test_limit`` keeps the first windows of the test split.

>>> loaded = load_text(TextSettings(), Request(input_shape=(32,)))
>>> len(loaded.symbols), loaded.window, len(loaded.train) > 10_000, loaded.task
(104, 32, True, 'language_model')
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Sequence, TypeVar

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveInt, model_validator

from .registry import Loaded, Request, WindowSplit, register
from .settings import DataBase

UNKNOWN = 0   # the id of every symbol the training split does not hold
_Symbol = TypeVar("_Symbol", int, str)   # a byte or a character


class TextSettings(DataBase):
    """Character-, byte- or tokenizer-level language modelling on one text (archgraph/data/text.py)."""
    name: Literal["text"] = "text"
    path: Optional[str] = Field(None, description="a UTF-8 file to train on (relative to the working directory, "
                                                  "else to the run file; default: the prose of CPython's "
                                                  "pydoc_data.topics)")
    tokens: Literal["chars", "bytes"] = Field("chars", description="characters or the UTF-8 bytes as tokens")
    tokenizer: Optional[str] = Field(None, description="a Hugging Face tokenizers tokenizer.json (or a folder "
                                                       "holding one), read locally; its ids replace characters or "
                                                       "bytes and the metric is perplexity (test_ppl)")
    split: Annotated[list[NonNegativeFloat], Field(min_length=3, max_length=3)] = Field(
        [0.9, 0.05, 0.05], description="contiguous train/val/test fractions of the corpus (they sum to 1; "
                                       "val_fraction is not used)")
    stride: Optional[PositiveInt] = Field(None, description="tokens between the starts of training windows "
                                                            "(default: the window length T, no overlap)")
    max_bytes: PositiveInt = Field(64 * 2**20, description="a larger file is refused, not read")

    @model_validator(mode="after")
    def _split_sums_to_one(self):
        if self.split[0] <= 0 or self.split[2] <= 0:
            raise ValueError(f"data.split needs a training and a test share, not {self.split}")
        if abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"data.split fractions must sum to 1, not {sum(self.split):g}")
        return self


def default_corpus() -> str:
    """The prose of CPython's ``pydoc_data.topics`` (the help topics), joined in key order."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def read_corpus(path: str, max_bytes: int, source: str = "<config>") -> str:
    """The UTF-8 text of ``path``, read only when it is at most ``max_bytes`` long."""
    req = Request(source=source)
    p = req.path(path)
    if not p.is_file():
        raise req.error(f"text file '{path}' does not exist")
    size = p.stat().st_size
    if size > max_bytes:
        raise req.error(f"text file '{path}' has {size:,} bytes, more than data.max_bytes = {max_bytes:,}")
    with open(p, "rb") as f:
        raw = f.read(max_bytes + 1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise req.error(f"text file '{path}' is not UTF-8: byte {err.start} ({raw[err.start:err.start + 1]!r}) "
                        f"{err.reason}") from None


def read_tokenizer(path: str, req: Request):
    """The ``tokenizers.Tokenizer`` of ``path`` (a tokenizer.json, or a folder holding one); never downloads."""
    p = req.path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise req.error(f"tokenizer file '{p}' does not exist (data.tokenizer wants a local tokenizer.json or a "
                        "folder holding one)", "data.tokenizer")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise req.error("data.tokenizer needs the 'tokenizers' package (pip install tokenizers)",
                        "data.tokenizer") from None
    try:
        return Tokenizer.from_file(str(p))
    except Exception as err:   # the Rust side raises a bare Exception for a malformed file
        raise req.error(f"cannot read tokenizer '{p}': {err}", "data.tokenizer") from None


def load_text(cfg: TextSettings, req: Request) -> Loaded:
    """The corpus ``cfg`` names as windows of the seed's token length (see the module docstring)."""
    window = _window(req)
    text = read_corpus(cfg.path, cfg.max_bytes, req.source) if cfg.path else default_corpus()
    if cfg.tokenizer:
        encoded, symbols = _encode_with_tokenizer(cfg, cfg.tokenizer, req, text)
        task = "token_model"
    else:
        encoded, symbols = _encode_symbols(cfg, text)
        task = "language_model"
    train_ids, val_ids, test_ids = encoded
    train = _windows(req, train_ids, "train", window, cfg.stride or window)
    val = _windows(req, val_ids, "val", window, window) if cfg.split[1] != 0 else None
    test = _windows(req, test_ids, "test", window, window, cfg.test_limit)
    epoch_size = cfg.limit if cfg.limit is not None and cfg.limit < len(train) else None
    return Loaded("text", task, train, val, test, len(symbols), (window,), window=window,
                  symbols=symbols, epoch_size=epoch_size)


def _window(req: Request) -> int:
    """The seed's token length ``T``: its input must be token ids of shape ``[T]``."""
    shape = req.input_shape
    if shape is None or len(shape) != 1:
        raise req.error(f"data 'text' needs a seed whose input is token ids {{shape: [T], vocab: V}}, not "
                        f"{list(shape or [])}", "seed")
    return int(shape[0])


def _cuts(cfg: TextSettings, n: int) -> tuple[int, int]:
    """Where the val and the test split of ``n`` tokens (or symbols) begin, by ``cfg.split``'s fractions."""
    f_train, f_val, _ = cfg.split
    return int(n * f_train), int(n * (f_train + f_val))


def _encode_with_tokenizer(cfg: TextSettings, tokenizer: str, req: Request, text: str
                           ) -> tuple[list[np.ndarray], list]:
    """The train, val and test token ids of ``text`` by the ``tokenizer`` file, and its vocabulary in id order."""
    tok = read_tokenizer(tokenizer, req)
    ids = np.asarray(tok.encode(text).ids, dtype=np.int64)
    a, b = _cuts(cfg, len(ids))
    symbols = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    return [ids[:a], ids[a:b], ids[b:]], symbols


def _encode_symbols(cfg: TextSettings, text: str) -> tuple[list[np.ndarray], list]:
    """The train, val and test ids of ``text``'s characters or bytes (``tokens``), and the vocabulary."""
    if cfg.tokens == "bytes":
        return _symbol_ids(cfg, list(text.encode("utf-8")))
    return _symbol_ids(cfg, text)


def _symbol_ids(cfg: TextSettings, seq: Sequence[_Symbol]) -> tuple[list[np.ndarray], list[Optional[_Symbol]]]:
    """``seq`` cut into train, val and test as ids, and the vocabulary: :data:`UNKNOWN` first, then the training
    split's symbols in order."""
    a, b = _cuts(cfg, len(seq))
    parts: tuple[Sequence[_Symbol], ...] = (seq[:a], seq[a:b], seq[b:])
    symbols: list[Optional[_Symbol]] = [None]
    symbols.extend(sorted(set(parts[0])))
    index = {s: i for i, s in enumerate(symbols) if s is not None}
    return [np.asarray([index.get(s, UNKNOWN) for s in part], dtype=np.int64) for part in parts], symbols


def _windows(req: Request, tokens: np.ndarray, name: str, window: int, stride: int,
             limit: Optional[int] = None) -> WindowSplit:
    """The split ``name``'s windows of ``window`` tokens, one every ``stride`` (the first ``limit`` of them); a split
    shorter than one window is an error."""
    if len(tokens) < window + 1:
        raise req.error(f"the {name} split of the corpus has {len(tokens)} tokens, fewer than one window of "
                        f"{window} + 1 (the seed's token length): use a longer text or other data.split "
                        "fractions", "data.split")
    starts = np.arange(0, len(tokens) - window, stride, dtype=np.int64)
    if limit is not None:
        starts = starts[:limit]
    return WindowSplit(tokens, starts)


register(TextSettings, load_text)
