"""One process of a ``torchrun`` job for tests/test_ddp.py and tests/test_ddp_methods.py: runs ``archgraph grow``
through the CLI and records, after the seed is installed, after every epoch and every rewrite and at the end, a
SHA-256 of this rank's weights, buffers, optimizer state, strategy tensors and whole strategy state (its
``state_dict``: gate logits, saliencies, its own optimizers' state, counters) into ``$DDP_TRACE_DIR/rank<R>.jsonl``.

The hash is computed here, independently of archgraph.train.distributed, so the test does not trust the code it
checks.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from archgraph.cli import main  # noqa: E402
from archgraph.train.loop import Trainer  # noqa: E402


def tensors_hash(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def flat_state(prefix: str, value, out: dict) -> None:
    """Nested dicts/lists of tensors and plain values as ``{dotted key: tensor}`` (plain values as text bytes)."""
    if torch.is_tensor(value):
        out[prefix] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            flat_state(f"{prefix}.{k}", v, out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            flat_state(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = torch.frombuffer(bytearray(repr(value).encode() or b" "), dtype=torch.uint8)


def whole(trainer) -> tuple[dict, dict]:
    """The module's state dict and ``{id(param): name}`` of the optimizer's parameters; under ``parallel: fsdp``
    with every shard all-gathered (torch's own ``DTensor.full_tensor``), so the ranks' hashes are comparable."""
    sharding = getattr(trainer, "sharding", None)
    if sharding is None:
        return dict(trainer.module.state_dict()), {id(p): n for n, p in trainer.module.named_parameters()}
    from torch.distributed.fsdp import FSDPModule
    for m in trainer.module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
    state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in trainer.module.state_dict().items()}
    return state, {id(p): n for n, p in trainer.module.named_parameters()}


def state_hash(trainer) -> str:
    tensors, names = whole(trainer)
    for p, state in trainer.optimizer.state.items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"opt.{names[id(p)]}.{k}"] = v.full_tensor() if hasattr(v, "full_tensor") else v
    for k, v in trainer.strategy.learned_parameters(trainer).items():
        tensors[f"strategy.{k}"] = v
    flat_state("strategy_state", trainer.strategy.state_dict(), tensors)
    return tensors_hash(tensors)


def record(trainer, what: str) -> None:
    path = Path(os.environ["DDP_TRACE_DIR"]) / f"rank{trainer.dist.rank}.jsonl"
    line = {"what": what, "version": trainer.version, "epoch": trainer.epoch, "step": trainer.step,
            "world_size": trainer.dist.world_size, "hash": state_hash(trainer),
            "weights": tensors_hash(whole(trainer)[0])}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def traced(name: str, when):
    original = getattr(Trainer, name)

    def wrapper(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        record(self, when(self, *args))
        return out
    setattr(Trainer, name, wrapper)


traced("start", lambda self: "start")
traced("train_epoch", lambda self: "epoch")
traced("apply_rule", lambda self, rule: f"rewrite {rule.name}")

_finish = Trainer.finish


def finish(self):
    summary = _finish(self)
    record(self, "end")
    return summary


Trainer.finish = finish

if __name__ == "__main__":
    sys.exit(main(["grow", *sys.argv[1:]]))   # a rank whose run finished ends inside main (end_rank)
