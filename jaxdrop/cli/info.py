"""``python -m jaxdrop info``: the versions, backend and devices, and jaxdrop's random bit generators."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``info`` takes no options."""
    del parser


def execute(args: argparse.Namespace) -> int:
    """Prints the versions, the backend and its devices, and the generators."""
    del args
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
