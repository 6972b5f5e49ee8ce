"""The benchmark keeps working: a tiny ``--quick`` run writes well-formed JSON and markdown, and the repository's
``benchmarks/run.py`` splices the report into a README.

Timings are never asserted (the machine is shared and noisy); only the structure of the report is.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from jaxdrop.cli import bench

RUN_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run_script():
    """``benchmarks/run.py``, imported by path (it is repository tooling, not part of the package)."""
    spec = importlib.util.spec_from_file_location("jaxdrop_benchmarks_run", RUN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    every_section = ",".join(bench.SECTIONS)
    status = bench.main(["--quick", "--tiny", "--repeats", "2", "--sections", every_section, "--out", str(out)])
    return status, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_exit_status_and_files(report):
    status, record, markdown = report
    assert status == 0
    assert set(record) == {"machine", "settings", "targets", "sections"}
    assert list(record["sections"]) == list(bench.SECTIONS)
    assert markdown.startswith("Machine: ")


def test_machine_and_prng_settings_are_recorded(report):
    machine = report[1]["machine"]
    for field in ("cpu_model", "cpu_count", "backend", "device_kind", "date", "platform"):
        assert machine[field] not in (None, "")
    assert {"jax", "jaxlib", "flax", "equinox", "haiku", "torch"} <= set(machine["versions"])
    assert set(machine["prng"]) == {"jax_default_prng_impl", "jax_threefry_partitionable", "default_key_impl"}


def test_every_timed_row_has_consistent_statistics(report):
    timed = 0
    for section in report[1]["sections"].values():
        for row in section["rows"]:
            if row["times_s"]:
                timed += 1
                assert len(row["times_s"]) in (2, 6)  # the transformer section takes 3x the repeats
                assert row["min_s"] <= row["median_s"] <= row["max_s"]
            else:
                assert row["note"] or row["value"] is not None, row
    assert timed > 20


def test_target_rows_always_present(report):
    _, record, markdown = report
    targets = record["targets"]
    assert len(targets) == 5
    assert all(target["status"] in ("PASS", "FAIL", "n/a") for target in targets)
    # The foundation targets are measured even in the quickest run.
    assert all(target["measured"] is not None for target in targets[:4])
    assert "| target | required | measured (worst case) | status | detail |" in markdown


def test_dropout_table_has_floor_and_peers(report):
    rows = report[1]["sections"]["dropout"]["rows"]
    impls = {row["impl"] for row in rows}
    assert {"floor: x * c", "jaxdrop (fast)", "jaxdrop (jax)", "flax.linen"} <= impls
    assert {row["key"] for row in rows if row["impl"] == "flax.linen"} >= {"threefry2x32", "rbg"}
    assert {row["pass"] for row in rows} == {"fwd", "fwd+bwd"}


def test_markdown_sections(report):
    markdown = report[2]
    for heading in ("### Targets", "### Plain dropout", "### Temp memory", "### Transformer", "### Monte Carlo"):
        assert heading in markdown


def test_update_readme_splices_between_markers(tmp_path, run_script):
    start, end = run_script.README_START, run_script.README_END
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{start}\nold\n{end}\nrest\n")
    assert run_script.update_readme(readme, "new table")
    assert readme.read_text() == f"intro\n{start}\nnew table\n{end}\nrest\n"
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not run_script.update_readme(plain, "new table")
    assert plain.read_text() == "no markers\n"


def test_run_script_puts_the_report_into_the_readme(tmp_path, run_script):
    start, end = run_script.README_START, run_script.README_END
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{start}\nold\n{end}\nrest\n")
    argv = ["--quick", "--tiny", "--repeats", "1", "--sections", "memory", "--update-readme", str(readme)]
    assert run_script.main(argv) == 0
    text = readme.read_text()
    assert text.startswith(f"intro\n{start}\nMachine: ") and text.endswith(f"\n{end}\nrest\n")
    assert f"Command: `python benchmarks/run.py {' '.join(argv)}`" in text
    assert "### Temp memory" in text and "\nold\n" not in text


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        bench.main(["--sections", "nonsense"])
