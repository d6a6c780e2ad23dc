"""archgraph replay DIR [--version K] [-o OUT_DIR]"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("replay", help="rebuild a version of a run from its seed and rule log",
                       description="Rebuild version K of a run directory from versions/0000.yaml and the rules "
                                   "logged in history.jsonl alone, checking every version on the way against its "
                                   "recorded content hash and stored file. A mismatch is an error (exit 2) naming "
                                   "the version and the rule. With -o, write OUT_DIR/graph.yaml.")
    p.add_argument("run_dir", metavar="DIR", help="run directory")
    p.add_argument("--version", type=int, metavar="K", help="version to rebuild (default: the last one)")
    p.add_argument("-o", "--output", metavar="OUT_DIR", help="folder to write graph.yaml into")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the written file")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from archgraph.history.run import replay_steps
    from archgraph.format.yaml_io import save
    from archgraph.graph import content_hash
    graph = None
    for record, graph in replay_steps(args.run_dir, args.version):
        if not args.quiet:
            print(f"v{record.version:<4d} {content_hash(graph)[:12]}  ok  {record.rule_label()}")
    if args.output:
        out = Path(args.output) / "graph.yaml"
        save(graph, out)
        print(f"wrote {out}")
    return 0
