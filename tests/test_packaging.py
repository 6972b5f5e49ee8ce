"""`import jaxdrop` stays light, the version lives in one place, and the command line answers."""

import subprocess
import sys

import jaxdrop


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout


def test_import_pulls_in_no_flax_and_no_tooling():
    heavy = {"flax", "equinox", "optax", "chex", "sklearn", "matplotlib", "tqdm"}
    out = _run(f"import sys, jaxdrop\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r}))")
    assert out.strip() == "[]", out


def test_submodules_load_on_first_use():
    out = _run("import sys, jaxdrop\njaxdrop.linen\nprint('flax' in sys.modules, jaxdrop.linen.Dropout.__name__)")
    assert out.split() == ["True", "Dropout"]


def test_version_single_source():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxdrop.__version__"}
    assert jaxdrop.__version__.count(".") == 2


def test_command_line_info_and_help():
    out = subprocess.run([sys.executable, "-m", "jaxdrop", "info"], capture_output=True, text=True, check=True)
    assert "Threefry-2x32-13" in out.stdout
    out = subprocess.run([sys.executable, "-m", "jaxdrop", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "bench" in out.stdout
