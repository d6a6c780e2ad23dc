"""The arguments several commands share, declared once so that each ``register()`` reads as a short declaration.

Each helper adds one argument to a command's parser ``p`` and returns nothing; :func:`command` makes the parser.
"""
from __future__ import annotations

import argparse
from typing import Callable, Optional

FOLDER_OUTPUT_HELP = "output folder for graph.yaml and weights.safetensors (new or empty, or --force)"


def command(sub, name: str, run: Callable, help: str, description: str, **kwargs) -> argparse.ArgumentParser:
    """The parser of command ``name`` (its ``--help`` line ``help``, its page ``description``), running ``run``."""
    p = sub.add_parser(name, help=help, description=description, **kwargs)
    p.set_defaults(func=run)
    return p


def run_dir_argument(p) -> None:
    p.add_argument("run_dir", metavar="DIR", help="run directory")


def graph_argument(p, help: str) -> None:
    p.add_argument("graph", metavar="GRAPH", help=help)


def run_file_argument(p, help: Optional[str] = None) -> None:
    p.add_argument("run_file", metavar="RUN.yaml", help=help)


def output_argument(p, metavar: str, help: str, required: bool = False, default: Optional[str] = None) -> None:
    """``-o/--output``: a file or folder to write, named ``metavar`` in the usage line."""
    p.add_argument("-o", "--output", required=required, default=default, metavar=metavar, help=help)


def folder_output_argument(p, metavar: str) -> None:
    """``-o/--output`` of a command writing graph.yaml and weights.safetensors into a folder (with ``--force``)."""
    output_argument(p, metavar, FOLDER_OUTPUT_HELP, required=True)


def weights_argument(p, help: str, required: bool = False) -> None:
    p.add_argument("--weights", required=required, metavar="W.safetensors", help=help)


def seed_argument(p, help: str) -> None:
    p.add_argument("--seed", type=int, default=0, help=help)


def quiet_argument(p, help: str) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=help)


def json_argument(p, help: str) -> None:
    p.add_argument("--json", action="store_true", help=help)


def settings_argument(p, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable): a run-file field by dotted name."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def training_arguments(p) -> None:
    """``--data-root`` and ``--device``, which override the run file's data.root and schedule.device."""
    p.add_argument("--data-root", metavar="PATH", help="dataset root (overrides data.root)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="overrides schedule.device")


def force_argument(p) -> None:
    p.add_argument("--force", action="store_true", help="write into an output folder that already holds files")
