"""The training loop: batches, optimizer steps, evaluation, rewrites, history and checkpoints.

One :class:`Trainer` runs one run directory. It trains the current graph's module, lets the strategy wrap the
parameters (masks) and add a loss term, applies the rules the strategy returns (the strategy sees the run through
a :class:`~archgraph.train.view.RunView`; the Rewrite it tried is the one materialised, weights and optimizer state
carried over, and handed to its ``on_rewrite``), writes each new version and event, and checkpoints at every epoch
end and after every rewrite. Everything random draws from generators whose states are checkpointed
(:mod:`archgraph.train.checkpoint`), so on the CPU a run that is killed and resumed ends exactly like one that was
not (only ``wall_s`` and the timings under ``speed`` differ). The console output is :mod:`archgraph.train.console`.

Under ``torchrun`` each process trains its share of every batch in a DDP wrapper and the run stays one run:
see :mod:`archgraph.train.distributed`. How the module runs (``schedule.format``: channels-last, ``torch.compile``,
measured per graph version with ``auto``) and AMP on CUDA are set up by :meth:`Trainer._fresh_module` and
:meth:`Trainer._install`; the formats and the cost of each new version (rewrite, format measurement, first step)
are kept by :mod:`archgraph.train.formats` and reported in the summary's ``speed``.

>>> from archgraph.train import grow
>>> summary = grow("examples/digits_gnap.yaml", "runs/digits")    # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union, cast

import numpy as np
import torch
from torch.func import functional_call

from ..data.feed import load_data
from ..data.settings import DataBase
from ..errors import ConfigError
from ..format.yaml_io import dumps, load, loads
from ..fx.builder import build
from ..fx.materialise import materialise
from ..fx.speed import Format, choose_format
from ..fx.weights import load_into, load_weights
from ..graph import Graph, content_hash
from ..history.rundir import ReadOnlyRunDir, RunDir
from ..methods.driver import Driver
from ..rules.base import Rule, decode, encode
from ..shapes import count_nonzero_macs, count_nonzero_params
from . import distributed, fsdp
from .checkpoint import CHECKPOINT_FORMAT, check_resumable, comparable_config, rng_state, set_rng_state
from .config import RunConfig
from .console import Console, args_text, epoch_line
from .formats import VersionSpeed
from .optim import load_optimizer_state, lr_at, make_optimizer, optimizer_state, set_lr
from .state import Stateful
from .strategies import make_strategy
from .strategies.base import Strategy
from .tasks import Task, check_seed, task_of
from .tensorboard import TensorBoardLog
from .view import RunView


@dataclass
class EpochState(Stateful):
    """Where the current epoch is: its permutation, the next batch and running sums (checkpointed mid-epoch)."""
    STATE = ("perm", "batch", "loss_sum", "correct", "seen")
    perm: torch.Tensor
    batch: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0   # in examples: an example of n positions or pixels adds right / n
    seen: int = 0


@dataclass
class LoopState(Stateful):
    """The loop's own resumable state, declared once: a fresh run starts from these defaults, every checkpoint
    saves them (:meth:`state_dict`: the pending rules encoded, the epoch's position as its own record) and a resume
    puts them back."""
    STATE = ("phase", "epoch", "step", "version", "history_lines", "growth_events", "prune_events", "finalized",
             "pending", "epoch_state", "last_metrics", "wall_s", "initial_metrics")
    phase: str = "train"                    # train, then final (the strategy's finalize, the last rules)
    epoch: int = 0                          # epochs done
    step: int = 0                           # optimizer steps done
    version: int = 0                        # the current graph version
    history_lines: int = 0                  # lines of history.jsonl this state knows about
    growth_events: int = 0
    prune_events: int = 0
    finalized: bool = False                 # the strategy's finalize has run
    pending: list = field(default_factory=list)      # rules still to apply in the current event
    epoch_state: Optional[EpochState] = None         # None between epochs
    last_metrics: dict = field(default_factory=dict)  # the last epoch event's metrics
    wall_s: float = 0.0                     # seconds of earlier processes of this run
    initial_metrics: dict = field(default_factory=dict)   # the seed's own metrics, when it starts from weights

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["pending"] = [encode(r) for r in self.pending]
        state["last_metrics"] = json.dumps(self.last_metrics)   # None values and key order kept as they are
        return state

    def after_load(self) -> None:
        self.pending = [decode(d) for d in self.pending]
        if isinstance(self.epoch_state, dict):
            es = self.epoch_state
            self.epoch_state = EpochState(es["perm"], int(es["batch"]), float(es["loss_sum"]), float(es["correct"]),
                                          int(es["seen"]))
        self.last_metrics = json.loads(cast(str, self.last_metrics))   # the JSON text state_dict wrote


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available here", field="schedule.device")
    return torch.device(name)


class Trainer:
    """Runs (or resumes) one training run into ``out_dir``. Call :meth:`run`; it returns the summary."""

    def __init__(self, config: RunConfig, out_dir: Union[str, os.PathLike], *, seed_graph: Graph,
                 seed_weights: Union[str, os.PathLike, None] = None, source: str = "<config>",
                 data_root: Optional[str] = None, quiet: bool = False, resume: bool = False):
        self.config = config
        self.schedule = config.schedule
        self.source = source
        self.seed_graph = seed_graph
        self.seed_weights = seed_weights       # a safetensors file the seed starts from (run file ``weights:``)
        self.data_root = data_root
        self.resume = resume
        self.dist = distributed.from_env(resolve_device(self.schedule.device))
        self.device = self.dist.device
        self.quiet = quiet or not self.dist.is_main
        self.console = Console(self.quiet)
        self.run_dir = RunDir(out_dir) if self.dist.is_main else ReadOnlyRunDir(out_dir)
        if self.schedule.threads:
            torch.set_num_threads(self.schedule.threads)
        # the run file's data: settings (one source's model; to a type checker, the base every source extends)
        self.data_config: DataBase = config.data
        if self.dist.enabled and self.data_config.batch_size < 2 * self.dist.world_size:
            raise ConfigError(f"data.batch_size {self.data_config.batch_size} is the global batch: it must give each "
                              f"of the {self.dist.world_size} processes at least 2 examples", file=source,
                              field="data.batch_size")
        self.amp = self.device.type == "cuda" and self.schedule.amp != "off"
        self.amp_dtype = torch.bfloat16 if self.schedule.amp == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.speed = VersionSpeed()         # the format of each version and what each new version cost
        self.format = Format()
        self.runner: Optional[torch.nn.Module] = None   # the forward pass (compiled or not), for evaluation
        self.net: Optional[torch.nn.Module] = None      # the same in a DDP wrapper when distributed, for training
        strategy = make_strategy(config.method, config)
        self.sharding = fsdp.Sharding.for_run(self.dist, self.schedule, strategy, self.amp, self.amp_dtype)
        self.loop = LoopState()             # everything a checkpoint holds of the loop itself
        self.progress = 0.0   # epochs done, fractional
        self.lr = self.schedule.lr                          # the learning rate of the current step
        self.batch_samples = self.data_config.batch_size         # examples in the last step's global batch
        self.view = RunView(self)                           # all the strategy sees of the run
        self.tensorboard: Optional[TensorBoardLog] = None   # schedule.log: [tensorboard], on rank 0
        # the method's hooks, driven as in a user's loop (archgraph.methods); its rules queue as pending
        self.method = Driver(strategy, self.view, self._take)

    @property
    def strategy(self) -> Strategy:
        return self.method.strategy

    @property
    def epoch(self) -> int:
        return self.loop.epoch

    @property
    def step(self) -> int:
        return self.loop.step

    @property
    def version(self) -> int:
        return self.loop.version

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
                self.console.say(f"{self.run_dir.path}: the run is complete")
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
            self.dist.barrier()   # every process has looked before rank 0 writes
            self.start()
        while self.loop.phase == "train":
            if self.loop.pending:
                self.apply_pending()
            elif self.dist.agree(self.loop.epoch >= self.epochs or self.method.should_stop(),
                                 "whether to stop"):
                self.loop.phase = "final"
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
        if len(self.dataset.train) < 2 * self.dist.world_size:
            raise ConfigError(f"{len(self.dataset.train)} training examples cannot give each of the "
                              f"{self.dist.world_size} processes two", file=self.source, field="data.limit")
        self.graph = graph
        t0 = time.perf_counter()
        self.module = self._fresh_module(graph, *self._seed_state())
        self.optimizer = make_optimizer(self.module, self.schedule)
        if self.seed_weights is not None:   # the first evaluation: the weights as they came, before any training
            self.loop.initial_metrics = self._evaluate_all(self.module)
        self.run_dir.create()
        self._open_logs()
        self.run_dir.write_version(0, graph)
        self.log({"event": "start", "version": 0, "hash": content_hash(graph),
                  "config": self.config.model_dump(mode="json"), "time": time.time(),
                  **({"metrics": self.loop.initial_metrics} if self.loop.initial_metrics else {})})
        self.strategy.setup(self.view)
        self.strategy.attach(self.view)
        self._install("seed", "the seed's weights", t0)
        if self.tensorboard is not None:
            self.tensorboard.version(0, self.size_metrics())
        self.checkpoint()

    def _open_logs(self) -> None:
        """The extra logs of ``schedule.log`` (rank 0 writes them), from the loop's step on."""
        if "tensorboard" in self.schedule.log and self.dist.is_main:
            self.tensorboard = TensorBoardLog(self.run_dir.path, start_step=self.loop.step)

    def _load_data(self, graph: Graph) -> Any:
        """The run's data (archgraph/data/feed.py): in memory or streamed, the loop asks both for an epoch's order
        and for batches of index lists."""
        if len(graph.inputs) != 1:
            raise ConfigError(f"the seed has {len(graph.inputs)} inputs; training needs exactly one",
                              file=self.source, field="seed")
        shape = graph.shape(next(iter(graph.inputs)))   # a TokenShape (with its vocab) for token ids
        ds = load_data(self.config.data, seed=self.schedule.seed, root=self.data_root, input_shape=shape,
                       source=self.source)
        self.task: Task = task_of(ds)
        check_seed(self.task, ds, shape, graph, self.source)
        return ds.to(self.device)

    def _fresh_module(self, graph: Graph, state: Optional[dict] = None, source: str = "checkpoint") -> torch.nn.Module:
        """Build ``graph`` (with ``state``) in the memory format chosen for it (measured first with ``auto``)."""
        module = build(graph, device=self.device, seed=self.schedule.seed)
        if state is not None:
            load_into(module, {k: v.to(self.device) for k, v in state.items()}, source=source)
        return self._prepare(graph, module)

    def _seed_state(self) -> tuple[Optional[dict], str]:
        """The weights the seed starts from (run file ``weights:``), floats as float32 (the module trains in
        float32; AMP casts on its own), and their file's name for errors; ``(None, ...)`` without weights."""
        if self.seed_weights is None:
            return None, "checkpoint"
        state = load_weights(self.seed_weights)
        return ({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                f"{self.seed_weights} (run file field 'weights')")

    def _evaluate_all(self, module: torch.nn.Module) -> dict:
        """``val_*`` (when there is a val split) and ``test_*`` metrics of ``module`` as it is."""
        out = {}
        for name, split in (("val", self.dataset.val), ("test", self.dataset.test)):
            if split is not None:
                out.update({f"{name}_{k}": v for k, v in self.evaluate(split, module=module).items()})
        return out

    def _prepare(self, graph: Graph, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` (built from ``graph``) in the memory format chosen for ``graph``, in training mode."""
        fmt = self._format_of(graph, module)
        if fmt.channels_last and any(len(s) == 3 for s in graph.inputs.values()):
            # Module.to takes memory_format (it forwards to Tensor.to); torch's stubs do not list it
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return module.train()

    def _format_of(self, graph: Graph, module: torch.nn.Module) -> Format:
        """The format this version runs in: the run's, or with ``auto`` the fastest measured on rank 0 (a few steps
        on a copy, global RNG untouched) and sent to every rank; remembered per version and checkpointed."""
        def choose() -> str:
            name: str = self.schedule.format
            if self.dist.is_main:
                n = max(2, self.data_config.batch_size // self.dist.world_size)
                x, y = next(self.dataset.batches(self.dataset.train,
                                                 [torch.arange(min(n, len(self.dataset.train)))]))
                steps = self._batches(len(self.dataset.train)) * 3   # about as long as a phase between rewrites
                name = choose_format(graph, module, x, y, allow_compile=name == "auto+compile",
                                     steps_until_rewrite=steps, amp=self.amp, loss_fn=self.task.loss).name
            return self.dist.broadcast_json(name)
        return Format.from_name(self.speed.format_name(content_hash(graph), self.schedule.format, choose),
                                amp=self.amp)

    def _install(self, kind: str, what: str, t0: float) -> None:
        """Make the new ``self.module`` trainable: check that every rank holds the same state, compile the forward
        pass when the format says so (the old compiled code is dropped), wrap it in DDP, and start timing its first
        steps. ``kind`` is seed, rewrite or resume; ``t0`` is when the change began (its cost, less the format
        measurement, is logged as ``rewrite_s``)."""
        if self.dist.enabled:
            self.dist.check_same(self.state_digest(), what)
        if self.sharding is not None:   # the whole, checked state is sharded again (parallel: fsdp)
            self.module, self.optimizer = self.sharding.shard(self.graph, self.module, self.optimizer, self.schedule)
        self.format = Format.from_name(self.speed.formats[content_hash(self.graph)], amp=self.amp)
        fn = _functional_forward
        if self.format.compile:
            torch.compiler.reset()
            fn = torch.compile(_functional_forward)
        self.runner = _Forward(self.module, fn)
        self.net = self.runner if self.sharding is not None else \
            self.dist.wrap(self.runner, find_unused_parameters=self.strategy.find_unused_parameters)
        self.speed.installed(self.loop.version, kind, self.format.name, t0)

    def state_digest(self) -> str:
        """SHA-256 of the module's weights and buffers, the optimizer state, the strategy's learned tensors and its
        whole state (what must be the same on every rank)."""
        return distributed.digest(self.module.state_dict(), optimizer_state(self.optimizer, self.module),
                                  self.strategy.learned_parameters(self.view), self.strategy.state_dict())

    # ---- one epoch --------------------------------------------------------------------------------------------
    def _batches(self, n: int) -> int:
        bs = self.data_config.batch_size
        full, rest = divmod(n, bs)
        # a batch of one breaks batchnorm: a last partial batch must give every process two examples
        return full + (1 if rest >= 2 * self.dist.world_size or full == 0 else 0)

    def train_epoch(self) -> None:
        world = self.dist.world_size
        bs = self.data_config.batch_size
        if self.loop.epoch_state is None:
            self.loop.epoch_state = EpochState(self.dataset.epoch_order(self.data_gen))
        es = self.loop.epoch_state
        n_batches = self._batches(len(es.perm))
        batches = self.dataset.batches(self.dataset.train, [es.perm[b * bs:(b + 1) * bs]
                                                            for b in range(es.batch, n_batches)],
                                       self.data_config.augment, self.data_gen,
                                       part=self.dist.part(bs) if world > 1 else None, epoch=self.loop.epoch)
        bar = self.console.bar(n_batches, es.batch, f"epoch {self.loop.epoch + 1}/{self.epochs}")
        loss_acc = torch.zeros((), device=self.device)
        correct_acc = torch.zeros((), device=self.device)
        for b, batch in zip(range(es.batch, n_batches), batches):   # batches are made as they are taken
            idx = es.perm[b * bs:(b + 1) * bs]
            self.lr = self.current_lr(b / n_batches)
            set_lr(self.optimizer, self.lr)
            loss, correct = self.speed.timed(lambda: self.train_step(batch, len(idx)), self.device)
            loss_acc += loss
            correct_acc += correct
            self.batch_samples = len(idx)
            if self.tensorboard is not None:   # this rank's share: the whole batch on one process
                self.tensorboard.step(self.loop.step + 1, float(loss) / max(1, len(idx) // world), self.lr)
            es.seen += len(idx)
            es.batch = b + 1
            self.loop.step += 1
            if bar is not None:
                bar.update(1)
                if es.batch % 10 == 0 or es.batch == n_batches:   # rank 0's share, scaled up, when distributed
                    bar.set_postfix(loss=f"{(es.loss_sum + float(loss_acc) * world) / es.seen:.4f}",
                                    acc=f"{(es.correct + int(correct_acc) * world) / es.seen:.4f}",
                                    params=self.loop.last_metrics.get("nonzero_params", self.graph.params))
            self.method.after_step()
            if self.loop.pending:
                self._fold(es, loss_acc, correct_acc)
                self.apply_pending()
        self._fold(es, loss_acc, correct_acc)
        if bar is not None:
            bar.close()
        self.loop.epoch += 1
        self.loop.epoch_state = None
        self.dist.sync_buffers(self.module)   # rank 0's running statistics, for evaluation and the checkpoint
        train_loss, train_acc = es.loss_sum / max(1, es.seen), es.correct / max(1, es.seen)
        metrics: dict[str, Optional[float]] = {"train_loss": train_loss, "train_acc": train_acc}
        metrics.update(self.task.train_metrics(train_loss))
        if self.dataset.val is not None:
            metrics.update({f"val_{k}": v for k, v in self.evaluate(self.dataset.val).items()})
        else:
            metrics["val_loss"], metrics["val_acc"] = None, None
        metrics.update(self.size_metrics())
        metrics["lr"] = self.current_lr(0.0, self.loop.epoch - 1)
        metrics.update(self.strategy.metrics(self.view))
        self.loop.last_metrics = metrics
        self.log({"event": "epoch", "epoch": self.loop.epoch, "step": self.loop.step, "version": self.loop.version,
                  "metrics": metrics})
        if self.tensorboard is not None:
            self.tensorboard.epoch(self.loop.step, metrics)
        self.console.say(epoch_line(self.loop.epoch, self.epochs, self.loop.version, metrics))
        self.method.after_epoch(metrics)
        self.checkpoint()
        self.apply_pending()

    def _fold(self, es: EpochState, loss_acc: torch.Tensor, correct_acc: torch.Tensor) -> None:
        """Add the steps' loss and accuracy sums (over every rank) to the epoch's and reset them."""
        loss_sum, correct = self.dist.all_reduce_sum([float(loss_acc), float(correct_acc)])
        es.loss_sum += loss_sum
        es.correct += correct
        loss_acc.zero_()
        correct_acc.zero_()

    def _take(self, rules: list, hook: str) -> None:
        """The method's rules of ``hook``: agreed across processes, queued to be applied (and checkpointed)."""
        self.loop.pending = self._agree_rules(rules, hook)

    def _agree_rules(self, rules: Iterable[Rule], hook: str) -> list[Rule]:
        """The rules a hook returned; when distributed, rank 0's, checked to be every rank's (sent as JSON)."""
        if not self.dist.enabled:
            return list(rules)
        data = self.dist.agree([encode(r) for r in rules],
                               f"the rules of {self.strategy.name}.{hook} at step {self.loop.step}")
        return [decode(d) for d in data]

    def current_lr(self, fraction: float, epoch: Optional[int] = None) -> float:
        """Learning rate at ``fraction`` of epoch ``epoch`` (default: the current one); also sets ``progress``."""
        self.progress = (self.loop.epoch if epoch is None else epoch) + fraction
        return lr_at(self.schedule, self.progress) * self.method.lr_factor()

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on ``batch`` (inputs and targets: this rank's share of a global batch of ``n``
        examples when distributed); returns the share's summed cross-entropy and correct predictions (both in
        examples: see :mod:`archgraph.train.tasks`)."""
        world = self.dist.world_size
        x, y = batch
        if world > 1 and self.strategy.uses_global_rng:
            self.dist.sync_rng()   # the strategy's draws are rank 0's (dropout advanced each rank's RNG its own way)
        overrides, extra = self.method.parametrize(training=True)
        out = self.forward(x, overrides, self.net)
        smoothing = self.schedule.label_smoothing
        if world == 1:
            ce = self.task.loss(out, y, smoothing)
            term, ce_sum = ce, ce.detach() * n
        else:   # DDP averages over ranks: scale so the gradient is the global batch's mean loss
            ce_sum = self.task.loss(out, y, smoothing, reduction="sum")
            term, ce_sum = ce_sum * (world / n), ce_sum.detach()
        loss = term if extra is None else term + extra
        weight, own = self.method.task_weight(), self.method.output_loss(x, out)
        if weight != 1.0:
            loss = loss - (1.0 - weight) * term
        if own is not None:
            loss = loss + own
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self._sync_learned()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return ce_sum, self.task.correct(out.detach(), y)

    def _sync_learned(self) -> None:
        """The strategy's own tensors: gradients averaged over ranks and, under float16 AMP, unscaled (dropped for a
        step whose gradients overflowed, as the scaler drops the optimizer's)."""
        tensors = list(self.strategy.learned_parameters(self.view).values())
        if not tensors:
            return
        self.dist.average_grads(tensors)
        if self.scaler.is_enabled():
            inv = 1.0 / self.scaler.get_scale()
            grads = [t.grad for t in tensors if t.grad is not None]
            for g in grads:
                g.mul_(inv)
            if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
                for t in tensors:
                    t.grad = None

    def forward(self, x: torch.Tensor, overrides: dict, net: Optional[torch.nn.Module] = None) -> torch.Tensor:
        """The current network on ``x`` with parameter ``overrides``, in the version's format (float32 output)."""
        if self.format.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if net is None:
            net = self.runner
            if net is None or net.net is not self.module:   # a hook evaluating before the version is installed
                net = _Forward(self.module, _functional_forward)
        if overrides and self.sharding is not None:   # gathered first, so FSDP does not replace the overrides
            self.sharding.full(self.module)
        if not self.amp:
            return self._call(net, overrides, x)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
            out = self._call(net, overrides, x)
        return out.float()

    @staticmethod
    def _call(net: torch.nn.Module, overrides: dict, x: torch.Tensor) -> torch.Tensor:
        if isinstance(net, _Forward):   # no DDP wrapper: skip the module call machinery
            return net.fn(net.net, overrides, x)
        return net(x, overrides)

    @torch.no_grad()
    def evaluate(self, split: Any, module: Optional[torch.nn.Module] = None) -> dict:
        """The metrics of the current (masked) network on ``split`` (``loss``, ``acc`` and the task's: ``bpc``, or
        ``miou`` and ``pixel_acc``; see :mod:`archgraph.train.tasks`), in eval mode, never compiled (an evaluation
        per epoch does not repay a second compilation per version). A collective call when distributed: every rank
        evaluates its share."""
        net = module if module is not None else self.module
        if module is None and self.sharding is not None:   # gathered once, not per batch (shares may differ)
            self.sharding.full(net)
        was_training = net.training
        net.eval()
        overrides = {} if module is not None else self.method.parametrize(training=False)[0]
        runner = _Forward(net, _functional_forward)
        stats = None
        bs = self.data_config.eval_batch_size
        first, stop = self.dist.span(len(split))   # every rank evaluates its share; the sums are all-reduced
        index = [torch.arange(start, min(start + bs, stop))   # an empty share still gives (zero) sums
                 for start in range(first, max(stop, first + 1), bs)]
        for x, y in self.dataset.batches(split, index):
            s = self.task.stats(self.forward(x, overrides, runner), y)
            stats = s if stats is None else stats + s
        net.train(was_training)
        assert stats is not None   # every rank has at least one (maybe empty) batch
        return self.task.metrics(self.dist.all_reduce_sum(stats.tolist()))

    def size_metrics(self) -> dict:
        weights = self.strategy.effective_weights(self.view)
        return {"params": self.graph.params, "nonzero_params": count_nonzero_params(self.graph, weights),
                "macs": self.graph.macs, "nonzero_macs": count_nonzero_macs(self.graph, weights)}

    # ---- rewrites ---------------------------------------------------------------------------------------------
    def apply_pending(self) -> None:
        while self.loop.pending:
            rule = self.loop.pending[0]
            self.apply_rule(rule)
        self.view.forget()   # the event is over: the rewrites the strategy tried are of no more use

    def apply_rule(self, rule: Rule) -> None:
        """Apply one rule: new graph and module (weights and optimizer state carried), version file, history event,
        checkpoint."""
        t0 = time.perf_counter()
        old = self.graph
        self.dist.sync_buffers(self.module)
        rw = self.view.apply(old, rule)   # applied once: the strategy may have tried it already
        if self.sharding is not None:     # parallel: fsdp: the plan is applied to the whole, gathered state
            self.module, self.optimizer = self.sharding.gather(old, self.module, self.optimizer, self.schedule,
                                                               self._fresh_module)
        graph = rw.graph
        module = materialise(rw, self.module, self.optimizer, self.schedule.seed)
        opt_state = optimizer_state(self.optimizer, module, copy=False)
        # the optimizer is made afresh as a resumed run makes it, so both take identical steps; its state tensors
        # are handed over (the old optimizer is dropped)
        self.module = self._prepare(graph, module)
        self.optimizer = make_optimizer(self.module, self.schedule)
        load_optimizer_state(self.optimizer, self.module, opt_state, copy=False)
        self.graph = graph
        self.loop.version += 1
        self.strategy.on_rewrite(self.view, rw)
        self._install("rewrite", f"weights after the rewrite to version {self.loop.version} ({rule.name})", t0)
        self.run_dir.write_version(self.loop.version, graph)
        kind = rule.kind
        if kind == "growth":
            self.loop.growth_events += 1
        else:
            self.loop.prune_events += 1
        metrics = self.size_metrics()
        self.loop.pending = self.loop.pending[1:]
        # whether the rewrite keeps the network's function, and why not when it does not
        reason = None if rw.exact else (rw.plan.note or "not function-preserving")
        exactness = {"exact": rw.exact, **({} if reason is None else {"reason": reason})}
        event = {"event": "rewrite", **encode(rule), "version": self.loop.version,
                 "parent": self.loop.version - 1, "hash": content_hash(graph), "parent_hash": content_hash(old),
                 "epoch": self.loop.epoch, "step": self.loop.step, "kind": kind, "metrics": metrics, **exactness}
        self.log(event)
        if self.tensorboard is not None:
            self.tensorboard.rewrite(self.loop.step, event)
            self.tensorboard.version(self.loop.step, metrics)
        self.console.say(f"  {kind}: {rule.name}({args_text(rule.args())}) -> version {self.loop.version}: "
                  f"{metrics['nonzero_params']:,} non-zero of {metrics['params']:,} params"
                  f"{'' if reason is None else ' (not exact: ' + reason + ')'}")
        self.checkpoint()

    # ---- the end ----------------------------------------------------------------------------------------------
    def finish(self) -> dict:
        if not self.loop.finalized:
            self.loop.phase = "final"
            self.method.finalize()
            self.loop.finalized = True
            self.checkpoint()
        self.apply_pending()
        self.dist.sync_buffers(self.module)
        final = {k: v.detach().cpu() for k, v in (self.sharding.full_state(self.module) if self.sharding is not None
                                                  else self.module.state_dict()).items()}
        # copies: under parallel: fsdp these may be FSDP's gathered buffers, which must stay resizable
        effective = self.strategy.effective_weights(self.view)
        final.update({k: v.detach().to("cpu", copy=True) for k, v in effective.items()})
        if self.dist.enabled:
            self.dist.check_same(distributed.digest(final), "final weights")
        self.run_dir.write_final_weights(final, {"graph_sha256": content_hash(self.graph),
                                                 "version": str(self.loop.version)})
        # the reported accuracy is that of the saved artefact: the last version rebuilt with the saved weights
        # (rank 0 reads the files it wrote; other ranks hold the same weights, checked above)
        if self.dist.is_main:
            saved = self._fresh_module(load(self.run_dir.version_path(self.loop.version)),
                                       load_weights(self.run_dir.final_weights_path))
        else:
            saved = self._fresh_module(self.graph, final)
        test = self.evaluate(self.dataset.test, module=saved)
        self.dataset.close()   # the DataLoaders' worker processes
        test_loss, test_acc = test["loss"], test["acc"]
        sizes = {"params": self.graph.params,
                 "nonzero_params": count_nonzero_params(self.graph, final),
                 "macs": self.graph.macs, "nonzero_macs": count_nonzero_macs(self.graph, final)}
        summary = {
            "test_acc": test_acc, "test_loss": test_loss,
            "val_acc": self.loop.last_metrics.get("val_acc"), "train_acc": self.loop.last_metrics.get("train_acc"),
            **{f"test_{k}": v for k, v in test.items() if k not in ("loss", "acc")},
            **{f"val_{k}": self.loop.last_metrics.get(f"val_{k}") for k in test if k not in ("loss", "acc")},
            **sizes,
            "versions": self.loop.version + 1, "final_version": self.loop.version, "hash": content_hash(self.graph),
            "growth_events": self.loop.growth_events, "prune_events": self.loop.prune_events,
            "epochs": self.loop.epoch, "steps": self.loop.step,
            # the method union is built at run time (see cli/validate.py); every member has its name
            "method": self.config.method.name,  # type: ignore[attr-defined]
            "dataset": self.data_config.name, "seed": self.schedule.seed,
            "device": self.device.type, "world_size": self.dist.world_size, "parallel": self.schedule.parallel,
            "format": self.schedule.format, "amp": self.schedule.amp if self.amp else "off",
            "speed": self.speed.summary(),
            "wall_s": round(self.loop.wall_s + time.perf_counter() - self.t0, 3),
        }
        summary.update({f"initial_{k}": v for k, v in self.loop.initial_metrics.items()})
        summary.update(self.strategy.summary(self.view))
        self.run_dir.write_summary(summary)
        self.log({"event": "end", "summary": summary})
        if self.tensorboard is not None:
            self.tensorboard.epoch(self.loop.step, {k: v for k, v in summary.items() if k.startswith("test_")})
            self.tensorboard.close()
        scores = "".join(f", test {k} {v:.4f}" for k, v in test.items() if k not in ("loss", "acc", "pixel_acc"))
        self.console.say(f"done: test accuracy {test_acc:.4f}{scores}, {sizes['nonzero_params']:,} non-zero of "
                  f"{sizes['params']:,} params, {sizes['macs']:,} MACs, {self.loop.growth_events} growth and "
                  f"{self.loop.prune_events} prune events, {summary['wall_s']:.1f} s -> {self.run_dir.path}")
        return summary

    # ---- history and checkpoints ------------------------------------------------------------------------------
    def log(self, event: dict) -> None:
        self.run_dir.append(event)
        self.loop.history_lines += 1

    def checkpoint(self) -> None:
        # parallel: fsdp: every rank writes its shards first; checkpoint.pt then names them (see train/fsdp.py)
        shards = None if self.sharding is None else \
            self.sharding.save(self.run_dir.path, self.module, self.optimizer)
        if not self.dist.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": comparable_config(self.config),
            "graph": dumps(self.graph),
            "version": self.loop.version,
            "model": {} if shards else {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "optimizer": {} if shards else optimizer_state(self.optimizer, self.module),
            "shards": shards,
            "strategy": self.strategy.state_dict(),
            "rng": rng_state(self.data_gen),
            "loop": {**self.loop.state_dict(), "wall_s": self.loop.wall_s + time.perf_counter() - self.t0,
                     **self.speed.state()},
            "amp": self.scaler.state_dict(),
        }
        self.run_dir.save_checkpoint(state)
        fsdp.drop_old_shards(self.run_dir.path, shards)   # the shards no checkpoint names any more

    def restore(self, ckpt: dict) -> None:
        check_resumable(ckpt, self.config, path=str(self.run_dir.checkpoint_path), source=self.source)
        if ckpt.get("shards"):   # written shard by shard (parallel: fsdp), by any number of processes
            ckpt = {**ckpt, **dict(zip(("model", "optimizer"), fsdp.read_sharded(self.run_dir.path / ckpt["shards"])))}
        loop = ckpt["loop"]
        self.run_dir.rewind(int(loop["history_lines"]), int(loop["version"]))
        self.graph = loads(ckpt["graph"], "checkpoint")
        self.dataset = self._load_data(self.seed_graph)
        self.speed.load(loop)
        if ckpt.get("amp"):
            self.scaler.load_state_dict(ckpt["amp"])
        t0 = time.perf_counter()
        self.module = self._fresh_module(self.graph, ckpt["model"])
        self.optimizer = make_optimizer(self.module, self.schedule)
        load_optimizer_state(self.optimizer, self.module, ckpt["optimizer"])
        self.loop.load_state_dict(loop)
        self._open_logs()
        self.data_gen = torch.Generator()
        set_rng_state(ckpt["rng"], self.data_gen)
        self.strategy.load_state_dict(ckpt["strategy"])
        self.strategy.attach(self.view)
        self._install("resume", f"weights after resuming at version {self.loop.version}", t0)
        self.console.say(f"resuming {self.run_dir.path} at epoch {self.loop.epoch}, step {self.loop.step}, "
                         f"version {self.loop.version}")


def _functional_forward(module: torch.nn.Module, overrides: dict, x: torch.Tensor) -> torch.Tensor:
    return functional_call(module, overrides, (x,)) if overrides else module(x)


class _Forward(torch.nn.Module):
    """The forward pass with parameter overrides as one module, so DDP can wrap it: ``net(x, overrides)``. The
    overrides are functions of the module's own parameters, so their gradients reach the parameters DDP watches."""

    def __init__(self, module: torch.nn.Module, fn: Callable[[torch.nn.Module, dict, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.net = module
        self.fn = fn

    def forward(self, x: torch.Tensor, overrides: dict) -> torch.Tensor:
        return self.fn(self.net, overrides, x)
