"""Sharded training under ``torchrun`` with ``schedule.parallel: fsdp``: PyTorch's FSDP2 (``fully_shard``) over a
1-D device mesh of all processes (gloo on the CPU, nccl on GPUs), with rewrites mid-run and sharded checkpoints.

Each process holds 1/world_size of every parameter, of its gradient and of the optimizer's moments (``DTensor``
shards on dim 0); a forward pass all-gathers the parameters and the backward pass reduce-scatters the gradients
(averaged, as DDP's all-reduce averages them, so the loop's loss scaling is the same for both).

**FSDP units.** One unit per block of the graph and one for the rest (the root): a block is the set of nodes whose
id starts with the same ``<letters><digits>_`` prefix (``b0_attn``, ``b0_fc``, ... form block ``b0``; ``layer2_c1``
block ``layer2``); nodes without such a prefix (stem, head, final norm) belong to the root unit. A method that
reparametrises the weights before the forward pass (masks, gates, probes: every method but ``dense`` and
``staged``) computes the reparametrised weights from the whole parameters, so its network is one unit (the root):
the gradients then reach every parameter before the one reduce-scatter at the end of the backward pass. Units keep
their parameters gathered from the forward pass to the end of the backward pass (``reshard_after_forward=False``),
so an evaluation pass whose shares differ by a batch needs no collective per batch; between steps every parameter is
sharded. Under AMP on CUDA the units compute in the AMP dtype (``MixedPrecisionPolicy``) and reduce in float32.

**Reading the weights.** Whatever reads the module outside the training step (a method's hooks, through
``RunView.module``; the loop's evaluation) first calls :meth:`Sharding.full`, which all-gathers every unit's
parameters in place (``FSDPModule.unshard``): the module then holds plain full tensors until the next backward pass
reshards them. Every rank runs the same hooks in the same order, so the all-gathers match.

**A rewrite.** Every rank reaches the same rule (``Dist.agree``, as under DDP). :meth:`Sharding.gather` then
gathers *everything*: the full parameters and buffers and the full optimizer moments of every parameter (not only
those the plan touches: the transfer plan maps every parameter of the new graph from the old one, and gathering all
keeps one code path; it costs one all-gather per tensor, measured by benchmarks/fsdp_memory.py) into a plain module
and optimizer. The rule's plan is applied to those exactly as in one process (``materialise``), the ranks' states
are hashed and compared (``Dist.check_same``), and :meth:`Sharding.shard` shards the new module again and hands each
rank its shard of the carried moments: the optimizer continues with them.

**Checkpoints.** :meth:`Sharding.save` writes the parameters and optimizer state with
``torch.distributed.checkpoint`` (each rank writes its own shard; nothing is gathered) into
``shards/<tag>/`` of the run directory; rank 0's ``checkpoints/last.pt`` holds the rest (loop, strategy, RNG) and the
tag, written only after every shard is on disk, so a job killed at any moment resumes from a complete checkpoint.
:func:`read_sharded` reads such a checkpoint back as full tensors on any number of processes (also one, without a
process group), so a run written by N ranks resumes on M; the loop then shards it again.

>>> block_of("b0_attn"), block_of("layer12_c1"), block_of("stem"), block_of("fc1")
('b0', 'layer12', None, None)
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import torch

from .optim import load_optimizer_state, make_optimizer, optimizer_state
from .strategies.base import Strategy

_BLOCK = re.compile(r"^([A-Za-z]+\d+)_")
SHARDS = "shards"


def block_of(node_id: str) -> Optional[str]:
    """The block a node belongs to (its ``<letters><digits>_`` prefix), or ``None`` for the root unit."""
    m = _BLOCK.match(node_id)
    return m.group(1) if m else None


def units(graph, whole: bool = False) -> dict[str, list[str]]:
    """``{block: [node ids]}`` of the FSDP units below the root (empty when ``whole``: one unit for everything)."""
    out: dict[str, list[str]] = {}
    if whole:
        return out
    for nid in graph.nodes:
        b = block_of(nid)
        if b is not None:
            out.setdefault(b, []).append(nid)
    return out


def _dtensor():
    from torch.distributed.tensor import DTensor
    return DTensor


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` whole (an all-gather when ``t`` is a ``DTensor`` shard; collective)."""
    return t.full_tensor() if isinstance(t, _dtensor()) else t


class Sharding:
    """The FSDP2 side of one run: the mesh, how the current module is sharded, and the optimizer's parameters by
    name (the sharded ``DTensor`` s the optimizer steps)."""

    def __init__(self, dist, whole: bool, amp_dtype: Optional[torch.dtype] = None):
        from torch.distributed.device_mesh import init_device_mesh
        self.dist = dist
        self.whole = whole
        self.amp_dtype = amp_dtype
        self.mesh = init_device_mesh(dist.device.type, (dist.world_size,))
        self.params: dict[str, torch.Tensor] = {}
        self.unit_names: list[str] = []
        self.last_gather_s = 0.0
        self.last_shard_s = 0.0

    @classmethod
    def for_run(cls, dist, schedule, strategy, amp: bool, amp_dtype) -> Optional["Sharding"]:
        """The run's sharding, or ``None`` unless ``schedule.parallel`` is ``fsdp`` with several processes."""
        if getattr(schedule, "parallel", "ddp") != "fsdp" or not dist.enabled:
            return None
        whole = type(strategy).parametrize is not Strategy.parametrize
        return cls(dist, whole, amp_dtype if amp else None)

    # ---- sharding a plain module ------------------------------------------------------------------------------
    def shard(self, graph, module: torch.nn.Module, optimizer, schedule):
        """Shard ``module`` (plain, full, the same on every rank) in place: one unit per block and the root. Returns
        ``(module, optimizer)``: a new optimizer over the shards holding this rank's shard of ``optimizer``'s state."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        t0 = time.perf_counter()
        state = optimizer_state(optimizer, module, copy=False)
        kw: dict[str, Any] = {"mesh": self.mesh, "reshard_after_forward": False}
        if self.amp_dtype is not None:
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=self.amp_dtype, reduce_dtype=torch.float32)
        self.unit_names = []
        for block, nodes in units(graph, self.whole).items():
            mods = [getattr(module, n) for n in nodes if hasattr(module, n)
                    and any(True for _ in getattr(module, n).parameters())]
            if mods:
                fully_shard(mods if len(mods) > 1 else mods[0], **kw)
                self.unit_names.append(block)
        fully_shard(module, **kw)
        self.unit_names.append("root")
        self.params = dict(module.named_parameters())
        opt = make_optimizer(module, schedule)
        load_optimizer_state(opt, module, {n: {k: self._local(v, self.params[n]) if _moment(k, v) else v
                                               for k, v in s.items()} for n, s in state.items()}, copy=False)
        self.last_shard_s = time.perf_counter() - t0
        return module, opt

    def _local(self, full: torch.Tensor, param) -> torch.Tensor:
        """This rank's shard of ``full``, laid out as ``param`` (no communication: every rank holds ``full``)."""
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(full.to(param.device), param.device_mesh, param.placements, src_data_rank=None)

    # ---- reading the whole -----------------------------------------------------------------------------------
    def fsdp_modules(self, module: torch.nn.Module) -> list:
        from torch.distributed.fsdp import FSDPModule
        return [m for m in module.modules() if isinstance(m, FSDPModule)]

    def full(self, module: torch.nn.Module) -> torch.nn.Module:
        """All-gather every unit's parameters into ``module`` (plain full tensors until the next backward pass
        reshards them); a no-op for units already gathered. Collective."""
        for m in self.fsdp_modules(module):
            m.unshard()
        return module

    def reshard(self, module: torch.nn.Module) -> None:
        for m in self.fsdp_modules(module):
            m.reshard()

    def full_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The module's whole state dict (parameters all-gathered; buffers are not sharded). Collective."""
        self.reshard(module)
        return {k: full_tensor(v).detach() for k, v in module.state_dict().items()}

    def full_optimizer_state(self, optimizer) -> dict[str, dict]:
        """The optimizer's state by parameter name with every moment all-gathered. Collective."""
        out = {}
        for name, p in self.params.items():
            s = optimizer.state.get(p)
            if s:
                out[name] = {k: full_tensor(v).detach() if torch.is_tensor(v) else v for k, v in s.items()}
        return out

    def gather(self, graph, module: torch.nn.Module, optimizer, schedule, build_plain):
        """Everything gathered for a rewrite: ``(plain module, plain optimizer)`` with the full weights, buffers and
        optimizer moments (``build_plain(graph, state)`` builds the plain module). Collective."""
        t0 = time.perf_counter()
        weights = self.full_state(module)
        moments = self.full_optimizer_state(optimizer)
        plain = build_plain(graph, weights)
        opt = make_optimizer(plain, schedule)
        load_optimizer_state(opt, plain, moments, copy=False)
        self.last_gather_s = time.perf_counter() - t0
        return plain, opt

    # ---- sharded checkpoints ---------------------------------------------------------------------------------
    def save(self, run_path, module: torch.nn.Module, optimizer) -> str:
        """Write this rank's shards of the parameters and optimizer state under ``shards/<tag>/`` with
        ``torch.distributed.checkpoint`` (collective; nothing is gathered) and return ``shards/<tag>``."""
        import torch.distributed.checkpoint as dcp
        tag = self.dist.broadcast_json(f"{time.time_ns():020d}")
        self.reshard(module)
        state = {f"model/{k}": v for k, v in module.state_dict().items()}
        for name, p in self.params.items():
            for k, v in (optimizer.state.get(p) or {}).items():
                if torch.is_tensor(v):
                    state[f"optim/{name}/{k}"] = v
        rel = f"{SHARDS}/{tag}"
        dcp.save(state, checkpoint_id=str(Path(run_path) / rel))
        return rel


def drop_old_shards(run_path, keep: Optional[str]) -> None:
    """Remove the shard folders other than ``keep`` (rank 0, after the checkpoint names ``keep``; all of them
    after a whole checkpoint)."""
    root = Path(run_path) / SHARDS
    if root.is_dir():
        for p in root.iterdir():
            if f"{SHARDS}/{p.name}" != keep:
                shutil.rmtree(p, ignore_errors=True)


def _moment(key: str, value) -> bool:
    return torch.is_tensor(value) and key != "step" and value.dim() > 0


def read_sharded(folder) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """A sharded checkpoint read back whole: ``(weights, optimizer state by name)`` as plain CPU tensors, on any
    number of processes (collective when a process group is up; without one, read in this process alone)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    reader = dcp.FileSystemReader(str(folder))
    meta = reader.read_metadata().state_dict_metadata
    state = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.items()
             if isinstance(m, TensorStorageMetadata)}
    dcp.load(state, storage_reader=reader, no_dist=not (dist.is_available() and dist.is_initialized()))
    weights: dict[str, torch.Tensor] = {}
    optim: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in state.items():
        kind, _, rest = key.partition("/")
        if kind == "model":
            weights[rest] = t
        elif kind == "optim":
            name, _, k = rest.rpartition("/")
            optim.setdefault(name, {})[k] = t
    return weights, optim
