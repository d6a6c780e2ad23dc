"""Apply a :class:`~archgraph.plan.TransferPlan`: weights and buffers into a freshly built module, a state dict
into a new state dict, and an optimizer's state onto the new module's parameters.

Old entries keep their values (sliced, extended or copied as the plan says); new entries start as the plan says
(the built module's initialisation, zeros, an identity ...). For an optimizer, every per-element state tensor
(SGD's ``momentum_buffer``, Adam's ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``, ...) follows its parameter with
new and copied entries at zero; scalars such as Adam's ``step`` are kept; ``param_groups`` keep their settings and
point at the new parameters.

>>> import archgraph, torch
>>> from archgraph import rules
>>> g = archgraph.load("examples/seeds/mlp.yaml")
>>> m = archgraph.build(g)
>>> rw = archgraph.apply(g, rules.AddFilters(node="fc1", count=2))
>>> m2 = archgraph.build(rw.graph)
>>> transfer(rw.plan, m, m2)
>>> torch.equal(m2.fc1.weight[:32], m.fc1.weight), m2.fc2.weight[:, 32:].abs().sum().item()
(True, 0.0)
"""
from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from typing import Mapping, Optional

import torch

from ..errors import ArchgraphError
from ..plan import AxisMap, Noise, TensorPlan, TransferPlan

__all__ = ["TransferPlan", "TensorPlan", "AxisMap", "Noise", "transfer", "transfer_state", "transfer_optimizer",
           "carry"]


def _index(m: AxisMap, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.tensor(m.index, dtype=torch.long, device=device)
    return idx.clamp(min=0), idx < 0


def carry(tp: TensorPlan, old: Optional[torch.Tensor], new: Optional[torch.Tensor], key: str = "?",
          state: bool = False) -> torch.Tensor:
    """The value of one tensor of the new version.

    ``old`` is the source tensor, ``new`` the freshly built one (read for ``init`` entries; may be None when none
    are needed). ``state=True`` carries optimizer state: new and copied entries are zero, no factors, no noise.
    """
    if tp.source is None:
        if state:
            raise ValueError(f"{key}: a new tensor has no optimizer state to carry")
        out = _fill(tp, new, key)
        for axis, m in tp.axes:   # a new buffer whose entries for new channels start otherwise (a norm's mask)
            _, missing = _index(m, out.device)
            if m.fill == "zero" and bool(missing.any()):
                out = out.clone() if out is new else out
                out.index_fill_(axis, missing.nonzero().squeeze(1), 0)
        return out
    if old is None:
        raise ArchgraphError(f"missing tensor '{tp.source}' in the old weights", node=tp.source.partition(".")[0],
                             field=tp.source.partition(".")[2])
    if not tp.axes and (tp.noise is None or state):
        return old
    out = old
    fresh: list[tuple[int, torch.Tensor, str]] = []
    for axis, m in tp.axes:
        out = _select(out, axis, m, tp.source, key)
        fresh += _new_entries(out, axis, m, state)
    if new is not None and out.shape != new.shape:
        raise ArchgraphError(f"the plan makes {list(out.shape)} but the new module holds {list(new.shape)}",
                             node=key.partition(".")[0], field=key.partition(".")[2])
    if out is old:
        out = out.clone()
    _fill_entries(out, new, fresh, key)
    if tp.noise is not None and not state:
        _noise(out, tp.noise, key)
    return out


def _select(out: torch.Tensor, axis: int, m: AxisMap, source: str, key: str) -> torch.Tensor:
    """The old entries along ``axis`` at their new positions (a new position takes entry 0 until it is filled)."""
    if out.shape[axis] != m.old_size:
        raise ArchgraphError(f"tensor '{source}' has {out.shape[axis]} entries on axis {axis}, the plan "
                             f"expects {m.old_size}", node=key.partition(".")[0], field=key.partition(".")[2])
    if m.groups is None:
        return out.index_select(axis, _index(m, out.device)[0])
    # each group of rows (axis 0) keeps its own entries
    rows = out.shape[0] // len(m.groups)
    return torch.cat([out.narrow(0, k * rows, rows).index_select(axis, _index(AxisMap(idx, m.old_size),
                                                                             out.device)[0])
                      for k, idx in enumerate(m.groups)])


def _new_entries(out: torch.Tensor, axis: int, m: AxisMap, state: bool) -> list[tuple[int, torch.Tensor, str]]:
    """``(axis, mask, fill)`` of the entries to fill along ``axis``; scales ``out`` in place by the map's factors
    (weights only: optimizer state has new and copied entries zero, no factors)."""
    missing = _index(m, out.device)[1]
    if state:
        if m.copied:
            missing = missing.clone()
            missing[list(m.copied)] = True
        return [(axis, missing, "zero")]
    if m.scale is not None:
        shape = [1] * out.dim()
        shape[axis] = -1
        out.mul_(torch.tensor(m.scale, dtype=out.dtype, device=out.device).view(shape))
    if m.shift is not None:
        shape = [1] * out.dim()
        shape[axis] = -1
        out.add_(torch.tensor(m.shift, dtype=out.dtype, device=out.device).view(shape))
    fresh = [(axis, missing, m.fill)]
    if m.zero:
        zero = torch.zeros_like(missing)
        zero[list(m.zero)] = True
        fresh.append((axis, zero, "zero"))
    return fresh


def _fill_entries(out: torch.Tensor, new: Optional[torch.Tensor], fresh: list[tuple[int, torch.Tensor, str]],
                  key: str) -> None:
    # "init" entries first, so that an entry new on an axis that zeroes it ends up zero
    for axis, missing, fill in sorted(fresh, key=lambda f: f[2] != "init"):
        if not bool(missing.any()):
            continue
        where = missing.nonzero().squeeze(1)
        if fill == "zero":
            out.index_fill_(axis, where, 0)
            continue
        if new is None:
            raise ArchgraphError("new entries start as initialised, so a built module is needed",
                                 node=key.partition(".")[0], field=key.partition(".")[2])
        out.index_copy_(axis, where, new.index_select(axis, where).to(out.dtype))


def _noise(out: torch.Tensor, noise: Noise, key: str) -> None:
    gen = torch.Generator().manual_seed(zlib.crc32(f"{noise.seed}:{key}".encode()) & 0x7FFFFFFF)
    for a, b in noise.pairs:
        z = torch.randn(out.select(noise.axis, a).shape, generator=gen, dtype=torch.float64)
        z = (noise.eps * z).to(out.dtype).to(out.device)
        out.select(noise.axis, a).add_(z)
        out.select(noise.axis, b).sub_(z)


def _fill(tp: TensorPlan, new: Optional[torch.Tensor], key: str) -> torch.Tensor:
    if new is None:
        raise ArchgraphError("a new tensor needs a built module", node=key.partition(".")[0],
                             field=key.partition(".")[2])
    if tp.fill == "init":
        return new
    out = torch.empty_like(new)
    if tp.fill == "zero":
        out.zero_()
    elif tp.fill == "ones":
        out.fill_(1)
    elif tp.fill == "value":
        out.fill_(tp.value)
    elif tp.fill == "dirac":
        torch.nn.init.dirac_(out)
    elif tp.fill == "eye":
        torch.nn.init.eye_(out)
    else:  # pragma: no cover - the plan's fills are a closed set
        raise ValueError(f"unknown fill {tp.fill!r}")
    return out


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name, a shared one (tied weights) under each of its names."""
    out: dict[str, torch.Tensor] = dict(module.named_parameters(remove_duplicate=False))
    out.update(module.named_buffers(remove_duplicate=False))
    return out


@torch.no_grad()
def transfer(plan: TransferPlan, old_module: torch.nn.Module, new_module: torch.nn.Module) -> None:
    """Fill ``new_module`` (built from the new graph) from ``old_module`` as ``plan`` says, in place. A tensor
    the new module shares under several names (a tied LM head) is written once; the plan must give every name of
    it the same values, or the tie would break (an error naming both)."""
    old = _tensors(old_module)
    new = _tensors(new_module)
    names = Counter(id(t) for t in new.values())
    written: dict[int, tuple[str, torch.Tensor]] = {}   # shared tensors only: the first name and its value
    for key, tp in plan.tensors.items():
        target = new.get(key)
        if target is None:
            raise ArchgraphError(f"the new module has no tensor '{key}'", node=key.partition(".")[0],
                                 field=key.partition(".")[2])
        value = carry(tp, old.get(tp.source) if tp.source else None, target, key)
        if id(target) in written:
            first, first_value = written[id(target)]
            if not torch.equal(value, first_value):
                raise ArchgraphError(f"'{key}' is tied to '{first}', but the plan gives the two different values",
                                     node=key.partition(".")[0], field=key.partition(".")[2])
            continue
        if names[id(target)] > 1:
            written[id(target)] = (key, value if value is not target else target.clone())
        if value is not target:
            target.copy_(value)
        if tp.source is not None and tp.source in old and isinstance(target, torch.nn.Parameter):
            target.requires_grad_(old[tp.source].requires_grad)


@torch.no_grad()
def transfer_state(plan: TransferPlan, old_state: Mapping[str, torch.Tensor],
                   new_state: Optional[Mapping[str, torch.Tensor]] = None,
                   strict: bool = True, share: bool = False, consume: bool = False) -> dict[str, torch.Tensor]:
    """A state dict for the new version from the old one. ``new_state`` (a freshly built module's state dict)
    supplies new entries that start as initialised; without it only plans with none (pruning) work. With
    ``strict=False`` tensors whose source ``old_state`` lacks (or new tensors, without ``new_state``) are left out.

    Memory: ``share`` lets an unchanged tensor be the old one itself instead of a copy; ``consume`` (``old_state``
    a dict the caller gives up) removes each old tensor from it once the last new tensor made from it is made, so
    a model is never held twice (the old and the new version of one tensor at most)."""
    uses: dict[str, int] = defaultdict(int)
    for tp in plan.tensors.values():
        if tp.source is not None:
            uses[tp.source] += 1
    out = {}
    for key, tp in plan.tensors.items():
        if not strict and ((tp.source is not None and tp.source not in old_state)
                           or (tp.source is None and (new_state is None or key not in new_state))):
            continue
        new = new_state.get(key) if new_state is not None else None
        old = old_state.get(tp.source) if tp.source else None
        value = carry(tp, old, new, key)
        out[key] = value.clone() if value is old and not share else value
        if consume and tp.source is not None:
            uses[tp.source] -= 1
            if not uses[tp.source]:
                old_state.pop(tp.source, None)   # type: ignore[attr-defined]
    return out


@torch.no_grad()
def transfer_optimizer(plan: TransferPlan, optimizer: torch.optim.Optimizer, old_module: torch.nn.Module,
                       new_module: torch.nn.Module) -> None:
    """Point ``optimizer`` at ``new_module``'s parameters and carry its state, in place.

    Each parameter group keeps its settings (lr, weight decay, ...) and gets the new versions of its old
    parameters; parameters the optimizer did not hold stay out. Parameters of new nodes join the group of an old
    parameter with the same name and rank (``weight`` of rank 1, ...), else the first group.
    """
    old_names = {id(p): name for name, p in old_module.named_parameters()}
    new_params = dict(new_module.named_parameters())
    by_source: dict[str, list[str]] = defaultdict(list)
    for key, tp in plan.tensors.items():
        if tp.source is not None and key in new_params:
            by_source[tp.source].append(key)
    state = optimizer.state
    new_state: dict = {}
    placed: set[str] = set()
    kinds: dict[tuple[str, int], int] = {}
    for g, group in enumerate(optimizer.param_groups):
        params = []
        for p in group["params"]:
            name = old_names.get(id(p))
            if name is None:  # not one of the module's parameters: left as it is
                params.append(p)
                if p in state:
                    new_state[p] = state[p]
                continue
            kinds.setdefault((name.rpartition(".")[2], p.dim()), g)
            kinds.setdefault(("", p.dim()), g)
            for key in by_source.get(name, ()):
                q = new_params[key]
                params.append(q)
                placed.add(key)
                if p in state and state[p]:
                    new_state[q] = _carry_state(plan.tensors[key], state[p], p, key)
        group["params"] = params
    for key, q in new_params.items():
        if key in placed or plan.tensors.get(key) is None or plan.tensors[key].source is not None:
            continue
        kind = (key.rpartition(".")[2], q.dim())
        g = kinds.get(kind, kinds.get(("", q.dim()), 0))
        optimizer.param_groups[g]["params"].append(q)
    optimizer.state = defaultdict(dict, new_state)


def _carry_state(tp: TensorPlan, st: dict, old_param: torch.Tensor, key: str) -> dict:
    if tp.unchanged:
        return dict(st)
    out = {}
    for name, value in st.items():
        if torch.is_tensor(value) and value.dim() > 0:
            if value.shape != old_param.shape:
                return {}  # factored state (Adafactor-like) cannot follow the plan: start afresh
            out[name] = carry(tp, value, None, key, state=True)
        else:
            out[name] = value
    return out
