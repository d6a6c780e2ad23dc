"""The ``archgraph`` command line: one module per command, each with ``register(subparsers)``.

Bad input exits with status 2 and a one-paragraph message naming the file, the node and the field; never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ..errors import ArchgraphError

#: command modules (archgraph/cli/<module>.py), in the order ``--help`` lists them; a module not written yet is
#: skipped, so each command lands as one new file.
COMMANDS = ["validate", "summary", "init", "render", "diff", "schema", "apply", "prune", "grow", "sweep", "replay",
            "plot", "report", "import_model", "export"]


def parser() -> argparse.ArgumentParser:
    from .. import __version__
    p = argparse.ArgumentParser(
        prog="archgraph",
        description="Declarative neural-network graphs that grow and shrink while they learn.",
        epilog="Run 'archgraph COMMAND --help' for the options of one command.")
    p.add_argument("--version", action="version", version=f"archgraph {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if importlib.util.find_spec(f"archgraph.cli.{name}") is not None:
            importlib.import_module(f"archgraph.cli.{name}").register(sub)
    return p


def fail(message: str) -> int:
    # one line, never wrapped: a wrapped message could split a node id or a path that a script greps for
    text = " ".join(message.split())
    print(f"archgraph: error: {text}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ArchgraphError as err:
        return fail(str(err))
    except OSError as err:  # a path that cannot be read or written is bad input too: a message, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        return fail(f"{where}{err.strerror or err}")
    except KeyboardInterrupt:
        print("archgraph: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
