"""archgraph plot DIR -o OUT.png"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("plot", help="plot a run's accuracy, loss and parameters over training",
                       description="Plot accuracy, loss, parameters and non-zero parameters over training from a "
                                   "run directory's history.jsonl, with growth (green dashed) and prune (red "
                                   "dotted) events marked.")
    p.add_argument("run_dir", metavar="DIR", help="run directory")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="picture to write: .png, .svg or .pdf")
    p.add_argument("--dpi", type=int, default=120, help="resolution of a .png (default 120)")
    p.set_defaults(func=run)


def run(args) -> int:
    from archgraph.history.plots import plot_history

    from .outputs import output_file
    output_file(args.output)
    print(f"wrote {plot_history(args.run_dir, args.output, dpi=args.dpi)}")
    return 0
