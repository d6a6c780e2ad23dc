"""archgraph plot DIR -o OUT.png"""
from __future__ import annotations

from .args import command, output_argument, run_dir_argument


def register(sub) -> None:
    p = command(sub, "plot", run, help="plot a run's accuracy, loss and parameters over training",
                description="Plot accuracy, loss, parameters and non-zero parameters over training from a run "
                            "directory's history.jsonl, with growth (green dashed) and prune (red dotted) events "
                            "marked.")
    run_dir_argument(p)
    output_argument(p, "OUT", "picture to write: .png, .svg or .pdf", required=True)
    p.add_argument("--dpi", type=int, default=120, help="resolution of a .png (default 120)")


def run(args) -> int:
    from archgraph.history.plots import plot_history

    from .outputs import output_file
    output_file(args.output)
    print(f"wrote {plot_history(args.run_dir, args.output, dpi=args.dpi)}")
    return 0
