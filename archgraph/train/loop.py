"""The training loop: batches, optimizer steps, evaluation, rewrites, history and checkpoints.

One :class:`Trainer` runs one run directory. It trains the current graph's module, lets the strategy wrap the
parameters (masks) and add a loss term, applies the rules the strategy returns with ``archgraph.rewrite`` (weights
and optimizer state carried over), writes each new version and event, and checkpoints at every epoch end and after
every rewrite. Everything random draws from generators whose states are checkpointed, so on the CPU a run that is
killed and resumed ends exactly like one that was not (only ``wall_s`` differs).

>>> from archgraph.train import grow
>>> summary = grow("examples/digits_gnap.yaml", "runs/digits")    # doctest: +SKIP
"""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..build import build
from ..errors import ConfigError
from ..serialize import content_hash, dumps, loads
from ..shapes import count_nonzero_params
from ..weights import load_into
from .config import RunConfig
from .data import Dataset, Split, load_dataset
from .optim import load_optimizer_state, lr_at, make_optimizer, optimizer_state, set_lr
from .rundir import RunDir
from .strategies import RULE_KIND, make_strategy

CHECKPOINT_FORMAT = 1


@dataclass
class EpochState:
    """Where the current epoch is: its permutation, the next batch and running sums (checkpointed mid-epoch)."""
    perm: torch.Tensor
    batch: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0

    def to_state(self) -> dict:
        return {"perm": self.perm.cpu(), "batch": self.batch, "loss_sum": self.loss_sum, "correct": self.correct,
                "seen": self.seen}

    @classmethod
    def from_state(cls, state: dict) -> "EpochState":
        return cls(state["perm"], int(state["batch"]), float(state["loss_sum"]), int(state["correct"]),
                   int(state["seen"]))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available here", field="schedule.device")
    return torch.device(name)


class Trainer:
    """Runs (or resumes) one training run into ``out_dir``. Call :meth:`run`; it returns the summary."""

    def __init__(self, config: RunConfig, out_dir, *, seed_graph, source: str = "<config>",
                 data_root: Optional[str] = None, quiet: bool = False, resume: bool = False):
        self.config = config
        self.schedule = config.schedule
        self.source = source
        self.seed_graph = seed_graph
        self.data_root = data_root
        self.quiet = quiet
        self.resume = resume
        self.run_dir = RunDir(out_dir)
        self.device = resolve_device(self.schedule.device)
        if self.schedule.threads:
            torch.set_num_threads(self.schedule.threads)
        self.strategy = make_strategy(config.method, config)
        self.phase = "train"
        self.epoch = 0
        self.step = 0
        self.version = 0
        self.history_lines = 0
        self.growth_events = 0
        self.prune_events = 0
        self.pending: list = []
        self.finalized = False
        self.epoch_state: Optional[EpochState] = None
        self.last_metrics: dict = {}
        self.wall_before = 0.0
        self.progress = 0.0   # epochs done, fractional
        self._forward_fn = None

    @property
    def epochs(self) -> int:
        """The run's epoch budget."""
        return self.schedule.epochs

    # ---- the run ----------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.t0 = time.perf_counter()
        if self.resume and self.run_dir.has_run():
            ckpt = self.run_dir.load_checkpoint()
            events = self.run_dir.events()
            if events and events[-1].get("event") == "end":
                self._say(f"{self.run_dir.path}: the run is complete")
                return events[-1]["summary"]
            if ckpt is None:   # killed before its first checkpoint: start again
                self.run_dir.rewind(0, -1)
                self.start()
            else:
                self.restore(ckpt)
        elif self.resume:      # killed before the start event: start again
            self.run_dir.rewind(0, -1)
            self.start()
        else:
            if not self.run_dir.is_empty():
                raise ConfigError(f"'{self.run_dir.path}' already holds files; pass --resume to continue the run "
                                  "there or choose another --out", file=self.source)
            self.start()
        while self.phase == "train":
            if self.pending:
                self.apply_pending()
            elif self.epoch >= self.epochs or self.strategy.should_stop(self):
                self.phase = "final"
            else:
                self.train_epoch()
        return self.finish()

    def start(self) -> None:
        """A fresh run: seed RNGs, load data, build the seed, write version 0 and the start event."""
        seed = self.schedule.seed
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        self.data_gen = torch.Generator().manual_seed(seed)
        graph = self.seed_graph
        self.dataset = self._load_data(graph)
        self.graph = graph
        self.module = self._fresh_module(graph)
        self.optimizer = make_optimizer(self.module, self.schedule)
        self.run_dir.create()
        self.run_dir.write_version(0, graph)
        self.log({"event": "start", "version": 0, "hash": content_hash(graph),
                  "config": self.config.model_dump(mode="json"), "time": time.time()})
        self.strategy.setup(self)
        self.strategy.attach(self)
        self.checkpoint()

    def _load_data(self, graph) -> Dataset:
        if len(graph.inputs) != 1:
            raise ConfigError(f"the seed has {len(graph.inputs)} inputs; training needs exactly one",
                              file=self.source, field="seed")
        shape = tuple(next(iter(graph.inputs.values())))
        ds = load_dataset(self.config.data, seed=self.schedule.seed, root=self.data_root, input_shape=shape,
                          source=self.source)
        outs = graph.shapes()[graph.outputs[0]]
        if len(graph.outputs) != 1 or tuple(outs) != (ds.num_classes,):
            raise ConfigError(f"the seed's output must have shape [{ds.num_classes}] (the classes of "
                              f"{ds.name}), not {list(outs)}", file=self.source, field="seed")
        return ds.to(self.device)

    def _fresh_module(self, graph, state: Optional[dict] = None) -> torch.nn.Module:
        module = build(graph, device=self.device, seed=self.schedule.seed)
        if state is not None:
            load_into(module, {k: v.to(self.device) for k, v in state.items()}, source="checkpoint")
        if self.schedule.channels_last and any(len(s) == 3 for s in graph.inputs.values()):
            module = module.to(memory_format=torch.channels_last)
        self._forward_fn = None
        return module.train()

    # ---- one epoch --------------------------------------------------------------------------------------------
    def _batches(self, n: int) -> int:
        bs = self.config.data.batch_size
        full, rest = divmod(n, bs)
        return full + (1 if rest >= 2 or full == 0 else 0)   # a batch of one breaks batchnorm

    def train_epoch(self) -> None:
        train = self.dataset.train
        bs = self.config.data.batch_size
        if self.epoch_state is None:
            self.epoch_state = EpochState(torch.randperm(len(train), generator=self.data_gen))
        es = self.epoch_state
        n_batches = self._batches(len(train))
        bar = self._bar(n_batches, es.batch)
        loss_acc = torch.zeros((), device=self.device)
        correct_acc = torch.zeros((), dtype=torch.long, device=self.device)
        for b in range(es.batch, n_batches):
            idx = es.perm[b * bs:(b + 1) * bs]
            set_lr(self.optimizer, self.current_lr(b / n_batches))
            loss, correct = self.train_step(idx)
            loss_acc += loss * len(idx)
            correct_acc += correct
            es.seen += len(idx)
            es.batch = b + 1
            self.step += 1
            if bar is not None:
                bar.update(1)
                if es.batch % 10 == 0 or es.batch == n_batches:
                    bar.set_postfix(loss=f"{(es.loss_sum + float(loss_acc)) / es.seen:.4f}",
                                    acc=f"{(es.correct + int(correct_acc)) / es.seen:.4f}",
                                    params=self.last_metrics.get("nonzero_params", self.graph.params))
            rules = self.strategy.on_step_end(self)
            if rules:
                es.loss_sum += float(loss_acc)
                es.correct += int(correct_acc)
                loss_acc.zero_()
                correct_acc.zero_()
                self.pending = list(rules)
                self.apply_pending()
        es.loss_sum += float(loss_acc)
        es.correct += int(correct_acc)
        if bar is not None:
            bar.close()
        self.epoch += 1
        self.epoch_state = None
        train_loss, train_acc = es.loss_sum / max(1, es.seen), es.correct / max(1, es.seen)
        metrics = {"train_loss": train_loss, "train_acc": train_acc}
        if self.dataset.val is not None:
            metrics["val_loss"], metrics["val_acc"] = self.evaluate(self.dataset.val)
        else:
            metrics["val_loss"], metrics["val_acc"] = None, None
        metrics.update(self.size_metrics())
        metrics["lr"] = self.current_lr(0.0, self.epoch - 1)
        metrics.update(self.strategy.metrics(self))
        self.last_metrics = metrics
        self.log({"event": "epoch", "epoch": self.epoch, "step": self.step, "version": self.version,
                  "metrics": metrics})
        self._say(self._epoch_line(metrics))
        self.pending = list(self.strategy.on_epoch_end(self, metrics))
        self.checkpoint()
        self.apply_pending()

    def current_lr(self, fraction: float, epoch: Optional[int] = None) -> float:
        """Learning rate at ``fraction`` of epoch ``epoch`` (default: the current one); also sets ``progress``."""
        self.progress = (self.epoch if epoch is None else epoch) + fraction
        return lr_at(self.schedule, self.progress) * self.strategy.lr_factor(self)

    def train_step(self, idx: torch.Tensor):
        x, y = self.dataset.batch(self.dataset.train, idx, self.config.data.augment, self.data_gen)
        overrides, extra = self.strategy.parametrize(self, training=True)
        out = self.forward(x, overrides)
        ce = F.cross_entropy(out, y, label_smoothing=self.schedule.label_smoothing)
        loss = ce if extra is None else ce + extra
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return ce.detach(), (out.detach().argmax(1) == y).sum()

    def forward(self, x: torch.Tensor, overrides: dict) -> torch.Tensor:
        if self.schedule.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.schedule.compile:
            if self._forward_fn is None:
                self._forward_fn = torch.compile(_functional_forward)
            return self._forward_fn(self.module, overrides, x)
        if overrides:
            return functional_call(self.module, overrides, (x,))
        return self.module(x)

    @torch.no_grad()
    def evaluate(self, split: Split, module: Optional[torch.nn.Module] = None) -> tuple[float, float]:
        """``(mean loss, accuracy)`` of the current (masked) network on ``split``, in eval mode."""
        net = module if module is not None else self.module
        was_training = net.training
        net.eval()
        overrides = {} if module is not None else self.strategy.parametrize(self, training=False)[0]
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        bs = self.config.data.eval_batch_size
        for start in range(0, len(split), bs):
            idx = torch.arange(start, min(start + bs, len(split)))
            x, y = self.dataset.batch(split, idx)
            if module is not None:
                out = net(x)
            else:
                out = self.forward(x, overrides)
            loss += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
        net.train(was_training)
        n = max(1, len(split))
        return float(loss) / n, int(correct) / n

    def size_metrics(self) -> dict:
        weights = self.strategy.effective_weights(self)
        return {"params": self.graph.params, "nonzero_params": count_nonzero_params(self.graph, weights),
                "macs": self.graph.macs, "nonzero_macs": nonzero_macs(self.graph, weights)}

    # ---- rewrites ---------------------------------------------------------------------------------------------
    def apply_pending(self) -> None:
        while self.pending:
            rule = self.pending[0]
            self.apply_rule(rule)

    def apply_rule(self, rule) -> None:
        """Apply one rule: new graph and module (weights and optimizer state carried), version file, history event,
        checkpoint."""
        import archgraph
        old = self.graph
        graph, module = archgraph.rewrite(old, self.module, rule, optimizer=self.optimizer, seed=self.schedule.seed)
        opt_state = optimizer_state(self.optimizer, module)
        # rebuild from the graph exactly as a resumed run does, so both take identical steps
        self.module = self._fresh_module(graph, {k: v.detach() for k, v in module.state_dict().items()})
        self.optimizer = make_optimizer(self.module, self.schedule)
        load_optimizer_state(self.optimizer, self.module, opt_state)
        self.graph = graph
        self.version += 1
        self.run_dir.write_version(self.version, graph)
        self.strategy.on_rewrite(self, old, graph, rule)
        kind = getattr(rule, "kind", None) or RULE_KIND.get(rule.name, "growth")
        if kind == "growth":
            self.growth_events += 1
        else:
            self.prune_events += 1
        metrics = self.size_metrics()
        self.pending = self.pending[1:]
        self.log({"event": "rewrite", "rule": rule.name, "args": rule.args(), "version": self.version,
                  "parent": self.version - 1, "hash": content_hash(graph), "parent_hash": content_hash(old),
                  "epoch": self.epoch, "step": self.step, "kind": kind, "metrics": metrics})
        self._say(f"  {kind}: {rule.name}({_args_text(rule.args())}) -> version {self.version}: "
                  f"{metrics['nonzero_params']:,} non-zero of {metrics['params']:,} params")
        self.checkpoint()

    # ---- the end ----------------------------------------------------------------------------------------------
    def finish(self) -> dict:
        if not self.finalized:
            self.phase = "final"
            self.pending = list(self.strategy.finalize(self))
            self.finalized = True
            self.checkpoint()
        self.apply_pending()
        final = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        final.update({k: v.detach().cpu() for k, v in self.strategy.effective_weights(self).items()})
        self.run_dir.write_final_weights(final, {"graph_sha256": content_hash(self.graph),
                                                 "version": str(self.version)})
        # the reported accuracy is that of the saved artefact: the last version rebuilt with the saved weights
        from ..serialize import load
        from ..weights import load_weights
        saved = self._fresh_module(load(self.run_dir.version_path(self.version)),
                                   load_weights(self.run_dir.final_weights_path))
        test_loss, test_acc = self.evaluate(self.dataset.test, module=saved)
        sizes = {"params": self.graph.params,
                 "nonzero_params": count_nonzero_params(self.graph, final),
                 "macs": self.graph.macs, "nonzero_macs": nonzero_macs(self.graph, final)}
        summary = {
            "test_acc": test_acc, "test_loss": test_loss,
            "val_acc": self.last_metrics.get("val_acc"), "train_acc": self.last_metrics.get("train_acc"),
            **sizes,
            "versions": self.version + 1, "final_version": self.version, "hash": content_hash(self.graph),
            "growth_events": self.growth_events, "prune_events": self.prune_events,
            "epochs": self.epoch, "steps": self.step,
            "method": self.config.method.name, "dataset": self.config.data.name, "seed": self.schedule.seed,
            "device": self.device.type, "world_size": 1,
            "wall_s": round(self.wall_before + time.perf_counter() - self.t0, 3),
        }
        summary.update(self.strategy.summary(self))
        self.run_dir.write_summary(summary)
        self.log({"event": "end", "summary": summary})
        self._say(f"done: test accuracy {test_acc:.4f}, {sizes['nonzero_params']:,} non-zero of "
                  f"{sizes['params']:,} params, {sizes['macs']:,} MACs, {self.growth_events} growth and "
                  f"{self.prune_events} prune events, {summary['wall_s']:.1f} s -> {self.run_dir.path}")
        return summary

    # ---- history and checkpoints ------------------------------------------------------------------------------
    def log(self, event: dict) -> None:
        self.run_dir.append(event)
        self.history_lines += 1

    def checkpoint(self) -> None:
        from .rules_io import rule_to_data
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": json.dumps(_comparable(self.config), sort_keys=True),
            "graph": dumps(self.graph),
            "version": self.version,
            "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "optimizer": optimizer_state(self.optimizer, self.module),
            "strategy": self.strategy.state_dict(),
            "rng": self._rng_state(),
            "loop": {
                "phase": self.phase, "epoch": self.epoch, "step": self.step,
                "history_lines": self.history_lines, "growth_events": self.growth_events,
                "prune_events": self.prune_events, "finalized": self.finalized,
                "pending": [rule_to_data(r) for r in self.pending],
                "epoch_state": self.epoch_state.to_state() if self.epoch_state is not None else None,
                "last_metrics": json.dumps(self.last_metrics),
                "wall_s": self.wall_before + time.perf_counter() - self.t0,
            },
        }
        self.run_dir.save_checkpoint(state)

    def restore(self, ckpt: dict) -> None:
        from .rules_io import rule_from_data
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"checkpoint format {ckpt.get('format')!r} is not {CHECKPOINT_FORMAT}",
                              file=str(self.run_dir.checkpoint_path))
        if ckpt["config"] != json.dumps(_comparable(self.config), sort_keys=True):
            raise ConfigError("the run file differs from the one this run started with; resume with the same "
                              "settings or start a new run in another directory", file=self.source)
        loop = ckpt["loop"]
        self.run_dir.rewind(int(loop["history_lines"]), int(ckpt["version"]))
        self.graph = loads(ckpt["graph"], "checkpoint")
        self.dataset = self._load_data(self.seed_graph)
        self.version = int(ckpt["version"])
        self.module = self._fresh_module(self.graph, ckpt["model"])
        self.optimizer = make_optimizer(self.module, self.schedule)
        load_optimizer_state(self.optimizer, self.module, ckpt["optimizer"])
        self.phase = loop["phase"]
        self.epoch = int(loop["epoch"])
        self.step = int(loop["step"])
        self.history_lines = int(loop["history_lines"])
        self.growth_events = int(loop["growth_events"])
        self.prune_events = int(loop["prune_events"])
        self.finalized = bool(loop["finalized"])
        self.pending = [rule_from_data(d) for d in loop["pending"]]
        self.epoch_state = EpochState.from_state(loop["epoch_state"]) if loop["epoch_state"] is not None else None
        self.last_metrics = json.loads(loop["last_metrics"])
        self.wall_before = float(loop["wall_s"])
        self.data_gen = torch.Generator()
        self._set_rng_state(ckpt["rng"])
        self.strategy.load_state_dict(ckpt["strategy"])
        self.strategy.attach(self)
        self._say(f"resuming {self.run_dir.path} at epoch {self.epoch}, step {self.step}, version {self.version}")

    def _rng_state(self) -> dict:
        np_state = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "data": self.data_gen.get_state(),
                 "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                           "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
                 "python": list(random.getstate()[1]), "python_version": random.getstate()[0],
                 "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        return state

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        self.data_gen.set_state(state["data"])
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate((state["python_version"], tuple(state["python"]), None))
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])

    # ---- terminal ---------------------------------------------------------------------------------------------
    def _bar(self, total: int, initial: int):
        if self.quiet:
            return None
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=f"epoch {self.epoch + 1}/{self.epochs}", leave=False,
                    unit="batch", file=sys.stderr, dynamic_ncols=True)

    def _say(self, text: str) -> None:
        if not self.quiet:
            from tqdm import tqdm
            tqdm.write(text, file=sys.stderr)

    def _epoch_line(self, m: dict) -> str:
        val = f" val {m['val_loss']:.4f}/{m['val_acc']:.4f}" if m.get("val_loss") is not None else ""
        return (f"epoch {self.epoch}/{self.epochs}: loss {m['train_loss']:.4f} acc {m['train_acc']:.4f}{val} "
                f"params {m['nonzero_params']:,}/{m['params']:,} (v{self.version})")


def _functional_forward(module, overrides, x):
    return functional_call(module, overrides, (x,)) if overrides else module(x)


def _comparable(config: RunConfig) -> dict:
    """The config without the settings that may change between a run and its resume."""
    data = config.model_dump(mode="json")
    data["data"].pop("root", None)
    data["schedule"].pop("device", None)
    data["schedule"].pop("threads", None)
    return data


def _args_text(args: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in args.items())


def nonzero_macs(graph, weights: dict) -> int:
    """Multiply-accumulates that involve a non-zero conv/linear weight, per sample."""
    shapes = graph.shapes()
    total = 0
    for nid, node in graph.nodes.items():
        w = weights.get(f"{nid}.weight")
        if w is None:
            continue
        nz = int((w != 0).sum())
        if node.op == "conv2d":
            _, h, wd = shapes[nid]
            total += nz * h * wd
        elif node.op == "linear":
            total += nz
    return total

