"""`import jaxdrop` stays light, the version lives in one place, and the command line answers."""

import email.parser
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxdrop.__version__"}
    assert jaxdrop.__version__.count(".") == 2


def test_command_line_info_and_help():
    out = subprocess.run([sys.executable, "-m", "jaxdrop", "info"], capture_output=True, text=True, check=True)
    assert "Threefry-2x32-13" in out.stdout
    out = subprocess.run([sys.executable, "-m", "jaxdrop", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "bench" in out.stdout


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())


def test_license_and_dependencies_declared():
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression (PEP 639), not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    license_text = (Path(__file__).parents[1] / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]  # PEP 639: the expression only
    names = [re.split(r"[<>=!~ \[;]", requirement)[0] for requirement in project["dependencies"]]
    assert names == ["jax", "flax", "numpy"]  # jaxlib comes with jax, pinned by it
    build_requires = _pyproject()["build-system"]["requires"]
    assert build_requires == ["setuptools>=77"], build_requires  # no `wheel`: `build --no-isolation` must work


def _built_wheel(tmp_path) -> Path:
    """The wheel named by $JAXDROP_WHEEL (CI passes the one it built), else one built here without isolation."""
    if wheel := os.environ.get("JAXDROP_WHEEL"):
        return Path(wheel)
    pytest.importorskip("build")
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip('setuptools >= 77 builds the license metadata: pip install -e ".[dev]"')
    root = Path(__file__).parents[1]
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(root)]
    subprocess.run(command, capture_output=True, text=True, check=True)
    [wheel] = tmp_path.glob("jaxdrop-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_ships_the_license_and_the_declared_metadata(tmp_path):
    with zipfile.ZipFile(_built_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode())
        license_files = [n for n in names if ".dist-info/licenses/" in n]
        assert [n.rsplit("/", 1)[1] for n in license_files] == ["LICENSE"], names
        assert b"Apache License" in wheel.read(license_files[0])
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    requires = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(requires) == sorted(_pyproject()["project"]["dependencies"])
    assert all(name.startswith(("jaxdrop/", "jaxdrop-")) for name in names), names  # no tests, docs or examples
