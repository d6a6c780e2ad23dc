"""What a training run prints: a progress bar per epoch (only on a terminal) and one line per epoch, rewrite and the
end (on stderr, through tqdm so the lines do not break the bar). A quiet console (``--quiet``, or a process other than
rank 0) prints nothing.

>>> epoch_line(3, 10, 2, {"train_loss": 0.5, "train_acc": 0.8, "val_loss": None, "nonzero_params": 90,
...                       "params": 100})
'epoch 3/10: loss 0.5000 acc 0.8000 params 90/100 (v2)'
>>> epoch_line(1, 2, 0, {"train_loss": 1.4, "train_acc": 0.6, "val_loss": 1.5, "val_acc": 0.55, "val_bpc": 2.164,
...                       "nonzero_params": 9, "params": 9})
'epoch 1/2: loss 1.4000 acc 0.6000 val 1.5000/0.5500 bpc 2.1640 params 9/9 (v0)'
>>> args_text({"node": "c1", "count": 2})
'node=c1, count=2'
"""
from __future__ import annotations

import sys


class Console:
    """The run's terminal output; everything is a no-op when ``quiet``."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def bar(self, total: int, initial: int, desc: str):
        """A progress bar over ``total`` batches starting at ``initial`` (None when quiet, or when stderr is not a
        terminal: a log file then gets the one line per epoch, not carriage-return redraws)."""
        if self.quiet or not _is_terminal(sys.stderr):
            return None
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, leave=False, unit="batch", file=sys.stderr,
                    dynamic_ncols=True)

    def say(self, text: str) -> None:
        if not self.quiet:
            from tqdm import tqdm
            tqdm.write(text, file=sys.stderr)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def epoch_line(epoch: int, epochs: int, version: int, m: dict) -> str:
    """The line printed at the end of an epoch, from its metrics."""
    val = f" val {m['val_loss']:.4f}/{m['val_acc']:.4f}" if m.get("val_loss") is not None else ""
    for key in ("val_bpc", "val_miou"):   # a language model's bits per character, a segmentation's mean IoU
        if m.get(key) is not None:
            val += f" {key[4:]} {m[key]:.4f}"
    return (f"epoch {epoch}/{epochs}: loss {m['train_loss']:.4f} acc {m['train_acc']:.4f}{val} "
            f"params {m['nonzero_params']:,}/{m['params']:,} (v{version})")


def args_text(args: dict) -> str:
    """A rule's arguments as ``key=value, ...``."""
    return ", ".join(f"{k}={v}" for k, v in args.items())
