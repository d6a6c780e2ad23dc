"""The ``archgraph`` command line: one module per command, each with ``register(subparsers)``.

Bad input exits with status 2 and a one-paragraph message naming the file, the node and the field; never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import ArchgraphError, shown

#: command modules (archgraph/cli/<module>.py), in the order ``--help`` lists them. Each one is imported when the
#: parser is built: a command whose module fails to import fails the whole CLI loudly (and tests/test_public_api.py)
#: rather than disappearing from ``--help``.
COMMANDS = ["validate", "summary", "init", "render", "diff", "schema", "apply", "prune", "compress", "grow", "sweep",
            "replay", "plot", "report", "import_model", "export", "rules", "methods", "ops"]


OUT_OF_MEMORY = ("out of memory: the graph, rule or data is too large for this machine (the size limits of "
                 "docs/format.md are far higher; lower them with ARCHGRAPH_MAX_PARAMS to be refused earlier)")


class CommandParser(argparse.ArgumentParser):
    """A command's parser: a usage error is one line (``archgraph: error: prune: ...``) and exit status 2, like every
    other error, pointing at ``--help`` instead of printing the whole usage."""

    def error(self, message: str):
        command = self.prog.split()[-1]
        fail(f"{command}: {message} (see 'archgraph {command} --help')")
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    from .. import __version__
    p = argparse.ArgumentParser(
        prog="archgraph",
        description="Declarative neural-network graphs that grow and shrink while they learn.",
        epilog="Run 'archgraph COMMAND --help' for the options of one command.")
    p.add_argument("--version", action="version", version=f"archgraph {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"archgraph.cli.{name}").register(sub)
    return p


def fail(message: str) -> int:
    # one line, never wrapped: a wrapped message could split a node id or a path that a script greps for
    text = shown(" ".join(message.split()))
    print(f"archgraph: error: {text}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status.

    A ``torchrun`` rank whose ``grow`` finished does not return: it ends here with
    :func:`archgraph.train.distributed.end_rank` (flushed streams, then ``os._exit``), since the interpreter's own
    shutdown races the gloo threads that PyTorch leaves running (see there)."""
    args = parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's final flush
        distributed = sys.modules.get("archgraph.train.distributed")   # loaded only by commands that train
        if distributed is not None and distributed.left_after_run():
            distributed.end_rank(code)
        return code
    except BrokenPipeError:  # the reader went away (``archgraph summary f.yaml --json | head -2``): end quietly
        _silence_stdout()
        return 0
    except ArchgraphError as err:
        return fail(str(err))
    except OSError as err:  # a path that cannot be read or written is bad input too: a message, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        return fail(f"{where}{err.strerror or err}")
    except MemoryError:
        return fail(OUT_OF_MEMORY)
    except RuntimeError as err:  # torch's allocator: "DefaultCPUAllocator: can't allocate memory"
        if "allocat" not in str(err) and "out of memory" not in str(err):
            raise
        return fail(f"{OUT_OF_MEMORY} ({str(err).splitlines()[0][:200]})")
    except KeyboardInterrupt:
        print("archgraph: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again on the closed pipe."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
