"""Per-rank memory of ``parallel: ddp`` against ``parallel: fsdp``, and the cost of a rewrite under each.

Each rank's bytes of parameters + gradients + optimizer state (AdamW: two moments) after one training step, for the
GPT seed (examples/seeds/gpt_tiny.yaml) widened to ``--width`` (1440: about 50M parameters), before and after a
growth event (``add_filters`` on ``b0_fc``, +512 units, function preserved); under ``fsdp`` what a rank holds is
its shards (``DTensor.to_local``). The rewrite is timed on every rank (the slowest is reported): under ``ddp``
``materialise`` on the whole module and optimizer; under ``fsdp`` the loop's path (archgraph/train/fsdp.py): gather
everything, ``materialise``, shard again.

    python benchmarks/fsdp_memory.py                  # 2 and 4 CPU processes (launches torchrun itself)
    python benchmarks/fsdp_memory.py --procs 2 --width 256    # quick

Goal: fsdp per rank <= ddp / world_size + 10%.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROWTH = {"rule": "add_filters", "args": {"node": "b0_fc", "count": 512, "init": "preserve"}}


def gpt(width: int):
    import yaml

    import archgraph
    spec = yaml.safe_load((ROOT / "examples" / "seeds" / "gpt_tiny.yaml").read_text())
    for nid, node in spec["nodes"].items():
        if nid == "wte":
            node["embedding_dim"] = width
        elif nid.endswith("_fc"):
            node["out_features"] = 4 * width
        elif nid.endswith("_proj"):
            node["out_features"] = width
    return archgraph.loads(yaml.safe_dump(spec))


def local_bytes(module, optimizer) -> int:
    def nbytes(t):
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()
    total = 0
    for p in module.parameters():
        total += nbytes(p) + (nbytes(p.grad) if p.grad is not None else 0)
        total += sum(nbytes(v) for v in optimizer.state.get(p, {}).values() if hasattr(v, "numel"))
    return total


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    import archgraph
    from archgraph.fx.builder import build
    from archgraph.fx.materialise import materialise
    from archgraph.fx.weights import load_into
    from archgraph.train import distributed, fsdp
    from archgraph.train.config import Schedule
    from archgraph.train.optim import load_optimizer_state, make_optimizer, optimizer_state
    torch.set_num_threads(1)
    d = distributed.from_env(torch.device("cpu"))
    schedule = Schedule(optimizer="adamw", lr=1e-4, epochs=1)
    graph = gpt(args.width)
    module = build(graph, seed=0)
    opt = make_optimizer(module, schedule)
    gen = torch.Generator().manual_seed(d.rank)
    x = torch.randint(0, 65, (2, 32), generator=gen)
    sharding = fsdp.Sharding(d, whole=False) if args.parallel == "fsdp" else None
    if sharding:
        module, opt = sharding.shard(graph, module, opt, schedule)
        net = module
    else:
        net = d.wrap(module)

    def step():
        out = net(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), x.reshape(-1))
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    step()
    before = local_bytes(module, opt)
    rw = archgraph.apply(graph, GROWTH)
    dist.barrier()
    t0 = time.perf_counter()
    if sharding:
        def plain(g, state):
            m = build(g, seed=0)
            load_into(m, state)
            return m
        module, opt = sharding.gather(graph, module, opt, schedule, plain)
    new = materialise(rw, module, opt, 0)
    state = optimizer_state(opt, new, copy=False)
    opt = make_optimizer(new, schedule)
    load_optimizer_state(opt, new, state, copy=False)
    if sharding:
        new, opt = sharding.shard(rw.graph, new, opt, schedule)
        net = new
    else:
        net = d.wrap(new)
    module = new
    ms = (time.perf_counter() - t0) * 1e3
    step()
    after = local_bytes(module, opt)
    slowest = d.all_reduce_sum([0.0])  # keep the ranks together
    t = torch.tensor([ms, float(before), float(after)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if d.is_main:
        print(json.dumps({"parallel": args.parallel, "procs": d.world_size, "params": graph.params,
                          "params_after": rw.graph.params, "bytes_before": int(t[1]), "bytes_after": int(t[2]),
                          "rewrite_ms": round(float(t[0]), 1)}), flush=True)
    del slowest
    d.close(finished=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, nargs="+", default=[2, 4])
    p.add_argument("--width", type=int, default=1440)
    p.add_argument("--parallel", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)   # set in the workers
    args = p.parse_args()
    if args.parallel:
        return worker(args)
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}
    for n in args.procs:
        for parallel in ("ddp", "fsdp"):
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
                   f"--master_port={free_port()}", __file__, "--width", str(args.width), "--parallel", parallel]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("{")]
            if not line:
                sys.exit(out.stdout[-2000:] + out.stderr[-3000:])
            rows.append(json.loads(line[0]))
    print(f"GPT seed at width {args.width}: {rows[0]['params']:,} parameters, {rows[0]['params_after']:,} after the "
          f"growth event; AdamW; CPU, gloo; bytes per rank of parameters + gradients + optimizer state\n")
    print("| processes | parallel | MB per rank before | after growth | fsdp / (ddp / N) | rewrite ms |")
    print("|---|---|---|---|---|---|")
    ddp = {}
    for r in rows:
        if r["parallel"] == "ddp":
            ddp[r["procs"]] = r
        base = ddp[r["procs"]]
        ratio = r["bytes_after"] / (base["bytes_after"] / r["procs"])
        print(f"| {r['procs']} | {r['parallel']} | {r['bytes_before'] / 1e6:,.1f} | {r['bytes_after'] / 1e6:,.1f} | "
              f"{ratio:.3f} | {r['rewrite_ms']:,.1f} |")


if __name__ == "__main__":
    main()
