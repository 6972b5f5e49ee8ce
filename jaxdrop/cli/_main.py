"""``main``: the ``jaxdrop`` command line, one argparse subcommand per command (``demo``, ``bench``, ``info``).

Each command module has ``add_arguments(parser)`` and ``execute(args) -> int``; building the parser imports them,
and they import their extras (optax, scikit-learn, matplotlib, the benchmark's peers) only when they run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jaxdrop
from jaxdrop.cli import bench, demo, info

COMMANDS = {
    "demo": (demo, "train with and without dropout on real data, then MC dropout with human review"),
    "bench": (bench, "side-by-side speed and memory ratios against flax, equinox, haiku (and torch)"),
    "info": (info, "versions, backend and devices, and jaxdrop's random bit generators"),
}


def build_parser(prog: str = "jaxdrop") -> argparse.ArgumentParser:
    """The parser of the whole command line; ``prog`` is the name the usage line shows."""
    parser = argparse.ArgumentParser(prog=prog, description="jaxdrop command line: dropout and MC dropout for JAX.")
    parser.add_argument("--version", action="version", version=f"jaxdrop {jaxdrop.__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=f"jaxdrop {name}: {summary}.")
        module.add_arguments(command)
        command.set_defaults(execute=module.execute)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "jaxdrop") -> int:
    """Parses ``argv`` (``sys.argv[1:]`` when None) and runs the command; returns the exit status.

    Usage errors exit with status 2 and argparse's message; ``--help`` and ``--version`` exit with 0.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)
    args.command_line = " ".join([prog, *argv])
    return int(args.execute(args) or 0)
