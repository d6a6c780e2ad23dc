"""What a training run prints: a progress bar per epoch and one line per epoch, rewrite and the end (on stderr,
through tqdm so the lines do not break the bar). A quiet console (``--quiet``, or a process other than rank 0)
prints nothing.

>>> epoch_line(3, 10, 2, {"train_loss": 0.5, "train_acc": 0.8, "val_loss": None, "nonzero_params": 90,
...                       "params": 100})
'epoch 3/10: loss 0.5000 acc 0.8000 params 90/100 (v2)'
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
        """A progress bar over ``total`` batches starting at ``initial`` (None when quiet)."""
        if self.quiet:
            return None
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, leave=False, unit="batch", file=sys.stderr,
                    dynamic_ncols=True)

    def say(self, text: str) -> None:
        if not self.quiet:
            from tqdm import tqdm
            tqdm.write(text, file=sys.stderr)


def epoch_line(epoch: int, epochs: int, version: int, m: dict) -> str:
    """The line printed at the end of an epoch, from its metrics."""
    val = f" val {m['val_loss']:.4f}/{m['val_acc']:.4f}" if m.get("val_loss") is not None else ""
    return (f"epoch {epoch}/{epochs}: loss {m['train_loss']:.4f} acc {m['train_acc']:.4f}{val} "
            f"params {m['nonzero_params']:,}/{m['params']:,} (v{version})")


def args_text(args: dict) -> str:
    """A rule's arguments as ``key=value, ...``."""
    return ", ".join(f"{k}={v}" for k, v in args.items())
