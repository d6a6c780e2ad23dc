"""Several processes training one run: PyTorch DDP under ``torchrun`` (gloo on the CPU, nccl on GPUs).

``torchrun --nproc_per_node=N -m archgraph grow RUN.yaml --out DIR`` starts N copies of the ordinary command; each
finds ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment and joins the process group here. How the copies
stay one run:

* **Data.** Every rank draws the same permutation and the same augmentation of the whole (global) batch from the
  shared data generator, then keeps its strided share ``batch[rank::world_size]``. ``data.batch_size`` is the
  global batch; each rank's loss is its share's summed cross-entropy times ``world_size / global batch``, so DDP's
  gradient average is exactly the gradient of the global batch's mean loss (batch-norm statistics are per rank, as
  with any DDP run; running statistics are rank 0's, broadcast by DDP).
* **Parameters.** The module's gradients are averaged by DDP; the tensors a strategy learns itself
  (:meth:`~archgraph.train.strategies.base.Strategy.learned_parameters`, e.g. GNAP's mask thresholds) have their
  gradients averaged by :meth:`Dist.average_grads` before the strategy steps them, so every rank takes the same
  step from the same values and they stay bitwise equal. A strategy that draws random numbers from torch's global
  RNG (``Strategy.uses_global_rng``) gets rank 0's RNG state before every training step (:meth:`Dist.sync_rng`),
  so its draws are the same on every rank.
* **Decisions.** Every strategy hook runs on every rank (so each rank's strategy state machine advances in step;
  metrics are all-reduced first, so every rank sees the same numbers). The rules a hook returns are checked to be
  the same on every rank (:meth:`Dist.agree`, one small all-reduce) and rank 0's rules, sent as a JSON string of
  ``{rule, args}``, are what every rank applies: nothing is unpickled. A strategy that decides differently on two
  ranks stops the run on every rank with an error rather than letting the ranks drift apart.
* **Rewrites.** Every rank applies the same rule to the same weights; the new module's weights, buffers, optimizer
  state, strategy tensors and strategy state are hashed and compared across ranks (:meth:`Dist.check_same`) before
  the DDP wrapper and the optimizer are rebuilt.
* **Files.** Only rank 0 writes the run directory; every rank reads it on ``--resume`` (one machine or a shared
  file system).

With one process (no ``torchrun``) every method here is a no-op and the loop runs exactly as before.

>>> d = Dist.single(torch.device("cpu"))
>>> d.enabled, d.is_main, d.agree([{"rule": "add_filters", "args": {"node": "c1", "count": 2}}], "test")[0]["rule"]
(False, True, 'add_filters')
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, NoReturn, Optional

import torch

from ..errors import DistributedError


@dataclass
class Dist:
    """This process's place in the run: rank, world size, the device it trains on and the collective backend."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str] = None
    owns_group: bool = False

    @classmethod
    def single(cls, device: torch.device) -> "Dist":
        return cls(0, 1, 0, device)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- collectives on small tensors -------------------------------------------------------------------------
    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sums of ``values`` over the ranks (float64, so counts stay exact)."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def average_grads(self, tensors: Iterable[torch.Tensor]) -> None:
        """Average the gradients of ``tensors`` over the ranks, in one all-reduce (missing gradients count as
        zeros; a tensor that has none on every rank keeps none)."""
        tensors = [t for t in tensors if t.requires_grad]
        if not self.enabled or not tensors:
            return
        import torch.distributed as dist
        # one all-reduce: the gradients, then one flag per tensor that has a gradient here
        parts = [(t.grad if t.grad is not None else torch.zeros_like(t)).reshape(-1).float() for t in tensors]
        flags = torch.tensor([float(t.grad is not None) for t in tensors], device=parts[0].device)
        flat = torch.cat(parts + [flags]).to(self._comm_device)
        dist.all_reduce(flat)
        has = flat[-len(tensors):].tolist()
        flat = flat[:-len(tensors)] / self.world_size
        at = 0
        for t, n_has in zip(tensors, has):
            n = t.numel()
            if n_has:
                t.grad = flat[at:at + n].view_as(t).to(device=t.device, dtype=t.dtype).clone()
            at += n

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank, sent as a JSON string (never pickled)."""
        if not self.enabled:
            return value
        import torch.distributed as dist
        payload = json.dumps(value, sort_keys=True).encode() if self.is_main else b""
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self._comm_device)
        dist.broadcast(size, 0)
        if self.is_main:
            buf = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(self._comm_device)
        else:
            buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=self._comm_device)
        dist.broadcast(buf, 0)
        return json.loads(buf.cpu().numpy().tobytes().decode())

    def sync_rng(self) -> None:
        """Rank 0's state of torch's global RNG (and of the current CUDA device's) on every rank, for a strategy that
        draws from it (SCS's Bernoulli gates, Gumbel's noise): the module's own draws (dropout) advance each rank's
        RNG by the size of its share, which differs when a batch does not split evenly."""
        if not self.enabled:
            return
        import torch.distributed as dist
        state = torch.get_rng_state().to(self._comm_device)
        dist.broadcast(state, 0)
        torch.set_rng_state(state.cpu())
        if self.device.type == "cuda":
            cuda = torch.cuda.get_rng_state(self.device).to(self._comm_device)
            dist.broadcast(cuda, 0)
            torch.cuda.set_rng_state(cuda.cpu(), self.device)

    def agree(self, value: Any, what: str) -> Any:
        """Check that every rank holds the same JSON-able ``value`` and return rank 0's (sent as JSON when it is not
        empty). Raises :class:`DistributedError` on every rank when two ranks differ."""
        if not self.enabled:
            return value
        import torch.distributed as dist
        text = json.dumps(value, sort_keys=True)
        crc = zlib.crc32(text.encode())
        t = torch.tensor([crc, -crc], dtype=torch.int64, device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise DistributedError(f"the ranks disagree on {what} (rank {self.rank} has {text[:200]}); a strategy "
                                   "must decide from the synchronised metrics and weights only")
        return self.broadcast_json(value) if value else value

    def check_same(self, digest: str, what: str) -> None:
        """Raise :class:`DistributedError` on every rank unless every rank computed the same ``digest``."""
        if not self.enabled:
            return
        import torch.distributed as dist
        head = int(digest[:15], 16)
        t = torch.tensor([head, -head], dtype=torch.int64, device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise DistributedError(f"the ranks hold different {what} (rank {self.rank}: {digest[:12]})")

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    # ---- the model --------------------------------------------------------------------------------------------
    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (batch-norm running statistics) on every rank: each rank's last forward pass updated its
        own, and DDP only broadcasts them at the start of the next one."""
        if not self.enabled:
            return
        import torch.distributed as dist
        for buf in module.buffers():
            dist.broadcast(buf.data, 0)

    def wrap(self, module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """``module`` in a DDP wrapper (itself when there is one process)."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def part(self, n: int) -> slice:
        """This rank's share of a global batch of ``n`` examples: every ``world_size``-th, from ``rank``."""
        return slice(self.rank, None, self.world_size) if self.enabled else slice(None)

    def span(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share ``[start, stop)`` of ``n`` evaluation examples."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def close(self, finished: bool = False) -> None:
        """Leave the process group. After a finished run every rank first waits for the others (rank 0 still
        writes the run directory): a rank tearing gloo down while a peer is still connected can abort it.
        After an error there is no barrier, since the other ranks may never reach it.

        After a finished run this process is marked as a rank that left its job (:func:`left_after_run`): the
        command line then ends it with :func:`end_rank` rather than through the interpreter's shutdown."""
        global _left_after_run
        if self.owns_group:
            import torch.distributed as dist
            if dist.is_initialized():
                if finished:
                    self.barrier()
                dist.destroy_process_group()
                _left_after_run = _left_after_run or finished
            self.owns_group = False


#: Set by :meth:`Dist.close` once this process, a rank that joined the process group itself, has passed the closing
#: barrier of a finished run and left the group: every file of the run is written (each one fsynced) and no
#: collective is pending.
_left_after_run = False


def left_after_run() -> bool:
    """Whether this process is a ``torchrun`` rank whose run finished and which has left its process group."""
    return _left_after_run


def end_rank(code: int) -> NoReturn:
    """End a rank that :func:`left_after_run` with exit status ``code``, without the interpreter's shutdown:
    flush the standard streams and the logging handlers, then ``os._exit(code)``.

    Why (measured with the pinned torch and Python 3.11): ``destroy_process_group`` does not end gloo's process
    group once a module has been wrapped in DDP. The wrapper takes references to the group's Python object that
    nothing gives back (11 on construction; freeing the wrapper and its reducer returns one), so the group's C++
    backend is never destroyed and its threads (two ``pt_gloo_runloop`` workers, the ``gloo_tcp_loop`` socket
    thread; neither the backend's ``shutdown()`` nor ``abort()`` joins them) outlive the group into the
    interpreter's shutdown. The closing barrier's work holds the works queued before it, so a worker thread can
    still hold the last all-reduce's tensor (created in Python) after the main thread's wait returned. When the
    worker frees it after ``Py_FinalizeEx`` began, the tensor's decref asks for the GIL, Python ends the thread with
    ``pthread_exit``, and its forced unwinding through the (``noexcept``) destructor calls ``std::terminate``:
    "terminate called without an active exception", SIGABRT, and ``torchrun`` reports a failed job although every
    file is written. A core dump shows exactly that stack (``runLoop`` > ``~AsyncBarrierWork`` >
    ``~AsyncAllreduceWork`` > ``TensorImpl::decref_pyobject`` > ``take_gil`` > ``pthread_exit`` > ``std::terminate``,
    the main thread in ``Py_FinalizeEx``); ``scripts/gloo_exit_race.py`` reproduces it with torch alone. It needs a
    worker descheduled for that long, so it shows under CPU load (about one two-rank job in a dozen). Our code
    cannot join threads torch does not release, and nothing is left for the shutdown to do here (the run directory
    is complete and fsynced, the group destroyed, DataLoader workers and the TensorBoard writer closed), so the rank
    skips it.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe or stream: nothing more can reach it
            pass
    logging.shutdown()
    os._exit(code)


def from_env(device: torch.device) -> Dist:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), else one process.

    The backend is nccl when training on CUDA and gloo otherwise; a CUDA rank trains on ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist.single(device)
    import torch.distributed as dist
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    owns = False
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
        owns = True
    else:
        backend = dist.get_backend()
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise DistributedError(f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, the "
                               f"environment says {rank} of {world}")
    return Dist(rank, world, local, device, backend, owns)


def digest(*parts: Any) -> str:
    """SHA-256 of nested dicts/lists of tensors and plain values (key order sorted), for comparing ranks.

    >>> digest({"w": torch.ones(2)}) == digest({"w": torch.ones(2)}) != digest({"w": torch.zeros(2)})
    True
    """
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if torch.is_tensor(x):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(f"K{k}".encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"L")
            for v in x:
                feed(v)
        else:
            h.update(f"V{x!r}".encode())

    for p in parts:
        feed(p)
    return h.hexdigest()
