"""archgraph report DIR [-o OUT.html]"""
from __future__ import annotations

from .args import command, output_argument, run_dir_argument


def register(sub) -> None:
    p = command(sub, "report", run, help="write a run's self-contained HTML report",
                description="Write DIR/report.html: one self-contained page (no network needed) with a slider over "
                            "the run's versions showing each version's graph, its diff from the previous version, the "
                            "rule applied and the metric curves.")
    run_dir_argument(p)
    output_argument(p, "OUT", "page to write (default DIR/report.html)")


def run(args) -> int:
    from archgraph.history.report import write_report

    from .outputs import output_file
    if args.output:
        output_file(args.output)
    print(f"wrote {write_report(args.run_dir, args.output)}")
    return 0
