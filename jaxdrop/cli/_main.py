"""``main``: dispatches ``demo``, ``bench`` and ``info`` to their modules, imported only when run."""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMANDS = {
    "demo": ("jaxdrop.cli.demo", "train with and without dropout on real data, then MC dropout with human review"),
    "bench": ("jaxdrop.cli.bench", "side-by-side speed and memory ratios against flax, equinox, haiku (and torch)"),
}


def _info(argv: list[str]) -> int:
    import jax

    import jaxdrop

    print(
        f"jaxdrop {jaxdrop.__version__}, jax {jax.__version__}, backend {jax.default_backend()}, "
        f"devices {jax.devices()}"
    )
    print(
        f"default generator: Threefry-2x32-{jaxdrop.THREEFRY_ROUNDS} fused on element indices; "
        f"generators: {', '.join(jaxdrop.GENERATORS)}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m jaxdrop", description="jaxdrop command line")
    parser.add_argument(
        "command",
        choices=[*_COMMANDS, "info"],
        help="; ".join(f"{name}: {text}" for name, (_, text) in _COMMANDS.items()),
    )
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    if args.command == "info":
        return _info(argv[1:])
    module = importlib.import_module(_COMMANDS[args.command][0])
    return int(module.main(argv[1:]) or 0)
