"""archgraph replay DIR [--version K] [-o OUT_DIR]"""
from __future__ import annotations

from .args import command, output_argument, quiet_argument, run_dir_argument


def register(sub) -> None:
    p = command(sub, "replay", run, help="rebuild a version of a run from its seed and rule log",
                description="Rebuild version K of a run directory from versions/0000.yaml and the rules logged in "
                            "history.jsonl alone, checking every version on the way against its recorded content "
                            "hash and stored file. A mismatch is an error (exit 2) naming the version and the rule. "
                            "With -o, write OUT_DIR/graph.yaml.")
    run_dir_argument(p)
    p.add_argument("--version", type=int, metavar="K", help="version to rebuild (default: the last one)")
    output_argument(p, "OUT_DIR", "folder to write graph.yaml into")
    quiet_argument(p, "print only the written file")


def run(args) -> int:
    from pathlib import Path

    from archgraph.format.yaml_io import save
    from archgraph.graph import content_hash
    from archgraph.history.run import replay_steps
    graph = None
    for record, graph in replay_steps(args.run_dir, args.version):
        if not args.quiet:
            print(f"v{record.version:<4d} {content_hash(graph)[:12]}  ok  {record.rule_label()}")
    if args.output:
        out = Path(args.output) / "graph.yaml"
        assert graph is not None   # replay_steps yields the seed (version 0) at least
        save(graph, out)
        print(f"wrote {out}")
    return 0
