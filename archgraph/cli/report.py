"""archgraph report DIR [-o OUT.html]"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="write a run's self-contained HTML report",
                       description="Write DIR/report.html: one self-contained page (no network needed) with a "
                                   "slider over the run's versions showing each version's graph, its diff from "
                                   "the previous version, the rule applied and the metric curves.")
    p.add_argument("run_dir", metavar="DIR", help="run directory")
    p.add_argument("-o", "--output", metavar="OUT", help="page to write (default DIR/report.html)")
    p.set_defaults(func=run)


def run(args) -> int:
    from archgraph.history.report import write_report

    from .outputs import output_file
    if args.output:
        output_file(args.output)
    print(f"wrote {write_report(args.run_dir, args.output)}")
    return 0
