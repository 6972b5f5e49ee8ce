"""Installs the oldest versions of jax, flax and numpy that pyproject.toml allows and runs the core tests on them.

The floors are read from ``[project] dependencies`` (``jax>=0.10.0`` -> ``jax==0.10.0``), so a floor that is
declared is a floor that is tested. jaxdrop itself is installed together with the pins, with its dependencies, so
pip also checks that the declared requirements accept them. Run by ``.ci/run``; by hand::

    python scripts/check_minimum_versions.py                        # builds nothing: installs the checkout
    python scripts/check_minimum_versions.py --wheel dist/jaxdrop-0.1.0-py3-none-any.whl --workers 2

The tests run from the checkout's ``tests/`` (``-m "not slow"``) against the checkout's code, from which the wheel
is built, with the checkout's ``tests/conftest.py`` (so they compile as the default run does, or with XLA's default
options under ``JAXDROP_TEST_XLA_DEFAULTS=1``, which ``.ci/run`` sets); the environment is a fresh virtual
environment in a temporary folder, removed afterwards unless ``--keep`` names one.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The functional core, both Flax APIs and MC sampling (its closure tracking and sharding lean on newer jax APIs).
CORE_TESTS = ("tests/test_dropout.py", "tests/test_linen.py", "tests/test_nnx.py", "tests/test_mc.py")
# What those tests import besides jaxdrop's own dependencies; pip picks versions that fit the pinned jax.
TEST_REQUIREMENTS = ("pytest", "pytest-xdist", "chex", "absl-py", "hypothesis", "equinox")


def minimum_pins(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """``name==floor`` for every runtime dependency; each must declare a ``>=`` floor."""
    pins = []
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(,.*)?", requirement)
        if match is None:
            raise ValueError(f"dependency {requirement!r} has no `>=` floor to test")
        pins.append(f"{match[1]}=={match[2]}")
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="a built jaxdrop wheel (default: the checkout)")
    parser.add_argument("--workers", default="0", help="pytest-xdist workers (-n), default 0: one process")
    parser.add_argument("--keep", type=Path, help="create the virtual environment here and keep it")
    parser.add_argument("tests", nargs="*", default=list(CORE_TESTS), help="test files (default: the core set)")
    args = parser.parse_args(argv)
    pins = minimum_pins()
    package = str(args.wheel.resolve()) if args.wheel else str(ROOT)

    with tempfile.TemporaryDirectory() as tmp:
        venv = args.keep or Path(tmp) / "venv"
        python = venv / "bin" / "python"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # --no-compile: byte-compiling every module of jax, flax, numpy, scipy... costs about 12 s of CPU (measured
        # with compileall); the tests import a part of them, which Python compiles on first import.
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
        subprocess.run([*pip, package, *pins, *TEST_REQUIREMENTS], check=True)
        names = [pin.split("==")[0] for pin in pins]
        report = "import importlib.metadata as m, sys; print(' '.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))"
        installed = subprocess.run([str(python), "-c", report, *names, "jaxlib"], check=True, capture_output=True)
        print(f"minimum versions: {installed.stdout.decode().strip()} ({time.perf_counter() - start:.0f} s to install)")
        for pin, (name, version) in zip(pins, re.findall(r"(\S+) (\S+)", installed.stdout.decode()), strict=False):
            floor = pin.split("==")[1]
            if version.split(".")[: len(floor.split("."))] != floor.split("."):
                print(f"{name} {version} was installed, not the floor {floor}")
                return 1
        # -o addopts="": not the repository's default options (doctests of the whole package, -n auto).
        pytest = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "not slow"]
        if args.workers != "0":
            pytest += ["-n", args.workers]
        start = time.perf_counter()
        status = subprocess.run([*pytest, *args.tests], cwd=ROOT).returncode
        print(f"minimum versions: tests took {time.perf_counter() - start:.0f} s")
        return status


if __name__ == "__main__":
    sys.exit(main())
