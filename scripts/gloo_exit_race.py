"""Reproduce the gloo exit race that ``archgraph.train.distributed.end_rank`` avoids, with torch alone.

Run as a ``torchrun`` job (two ranks); ``plain`` ends the ranks the ordinary way, ``end_rank`` the way a finished
``archgraph grow`` rank ends::

    for i in $(seq 10); do OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=lo python -m torch.distributed.run \\
        --nproc_per_node=2 --master_addr=127.0.0.1 --master_port=$((20000 + RANDOM % 20000)) \\
        scripts/gloo_exit_race.py plain; echo "rc=$?"; done

Each rank wraps a module in DDP (which keeps the process group and gloo's threads alive past
``destroy_process_group``), runs a few all-reduces on Python-owned tensors, passes a barrier and destroys the group,
as ``Dist.close(finished=True)`` does. The barrier's work holds the works before it, so a gloo worker thread can
still hold the last all-reduce's tensor after the main thread's wait returned; if it frees that tensor after
``Py_FinalizeEx`` began, asking for the GIL ends the thread with ``pthread_exit``, whose unwinding through a C++
destructor calls ``std::terminate``: "terminate called without an active exception", SIGABRT. Under ordinary load
the window is rare (about one job in a dozen); here gloo's worker threads run under ``SCHED_IDLE`` so that the
machine's other work starves them, which widens it. Linux only.
"""
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def starve_gloo_workers() -> None:
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as f:
            if f.read().strip() == "pt_gloo_runloop":
                os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))


def main(how: str) -> None:
    dist.init_process_group("gloo")
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(10, 10))
    for _ in range(2):
        model(torch.randn(4, 10)).sum().backward()
    starve_gloo_workers()
    for _ in range(4):
        t = torch.ones(8)
        dist.all_reduce(t)
        del t
    dist.barrier()
    dist.destroy_process_group()
    if how == "end_rank":
        from archgraph.train.distributed import end_rank
        end_rank(0)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("plain", "end_rank"):
        print("usage: torchrun --nproc_per_node=2 scripts/gloo_exit_race.py plain|end_rank", file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
