"""Every example's ``--quick`` mode runs, writes its figures and tables, and shows what it claims."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")


def run_example(name: str, tmp_path: Path, *extra: str) -> dict:
    """Imports ``examples/<name>.py`` (with ``examples/`` on the path for ``_common``) and runs ``main``."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"jaxdrop_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # flax modules (dataclasses) look their module up in sys.modules
    spec.loader.exec_module(module)
    return module.main(["--quick", "--quiet", "--out", str(tmp_path), *extra])


def import_common():
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import _common

    return _common


def test_quick_runs_never_write_into_the_committed_results(capsys):
    """``--quick`` writes to a new temporary directory by default and refuses ``--out examples/results/...``."""
    common = import_common()
    parser = common.parser("test")
    for out in (common.RESULTS_DIR, common.RESULTS_DIR / "quick"):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(["--quick", "--out", str(out)])
        assert info.value.code == 2 and "never go into" in capsys.readouterr().err
    quick_dir = common.out_dir(parser.parse_args(["--quick"]))
    try:
        assert not quick_dir.resolve().is_relative_to(common.RESULTS_DIR)
    finally:
        quick_dir.rmdir()
    assert common.out_dir(parser.parse_args([])) == common.RESULTS_DIR  # full runs write the committed files


def test_compare_says_level_within_noise_unless_beyond_two_standard_errors():
    common = import_common()
    assert common.compare([1.0, 1.1, 0.9], [0.0, 0.1, -0.1])[0] == "higher"
    assert common.compare([0.0, 0.1, -0.1], [1.0, 1.1, 0.9])[0] == "lower"
    assert common.compare([1.0, 0.0, 0.5], [0.5, 0.5, 0.4])[0] == "level within noise"
    assert common.compare([1.0], [0.0])[0] == "not resolved (one seed)"
    assert common.mean_se([0.5]) == "0.500" and common.mean_se([0.4, 0.6]) == "0.500 ± 0.100"


def test_every_example_has_help():
    scripts = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))
    assert len(scripts) >= 9, scripts
    for name in scripts:
        source = (EXAMPLES / f"{name}.py").read_text()
        assert "_common.parser(" in source, f"{name} must build its parser with _common.parser (--quick, --out)"


@pytest.mark.slow  # the default run keeps a representative set of examples under the 10-minute budget
def test_choose_rate(tmp_path):
    result = run_example("choose_rate", tmp_path)
    assert result["rates"] == pytest.approx([0.0, 0.3, 0.6])
    assert result["best_rate"] in result["rates"]
    # more dropout, lower training accuracy: the train/validation gap shrinks as the rate grows
    assert result["train_acc"][0] >= result["train_acc"][-1]
    gaps = [t - v for t, v in zip(result["train_acc"], result["val_acc"], strict=True)]
    assert gaps[-1] < gaps[0]
    assert (tmp_path / "choose_rate.png").stat().st_size > 10_000
    assert (tmp_path / "choose_rate.md").exists()


@pytest.mark.slow  # the default suite's 10-minute budget on 2 cores (v2 masks made every compile slower)
def test_ridge_equivalence(tmp_path):
    result = run_example("ridge_equivalence", tmp_path)
    assert result["max_abs_z"] < 4.0  # Monte Carlo mean agrees with the closed form
    for sgd, ols in zip(result["sgd_to_ridge"], result["ols_to_ridge"], strict=True):
        assert sgd < 0.05 < ols  # dropout training lands on the ridge solution, not on least squares
    assert (tmp_path / "ridge_equivalence.png").exists()


def test_uci_regression(tmp_path):
    result = run_example("uci_regression", tmp_path, "--datasets", "boston")
    boston = result["boston"]
    assert 2.0 < boston["rmse"][0] < 6.0  # in $1000s; 20 epochs in quick mode, 400 in the real run
    assert -4.0 < boston["ll"][0] < -2.0
    assert (tmp_path / "uci.md").read_text().count("boston") >= 1


@pytest.mark.slow  # the default suite's 10-minute budget on 2 cores (v2 masks made every compile slower)
def test_uci_regression_reads_data_txt(tmp_path):
    import numpy as np

    rs = np.random.RandomState(0)
    inputs = rs.randn(60, 3)
    targets = inputs @ [1.0, -2.0, 0.5] + 0.1 * rs.randn(60)
    path = tmp_path / "data.txt"
    np.savetxt(path, np.column_stack([targets, inputs]))  # target in the first column
    args = ("--data", str(path), "--target-column", "0", "--p", "0.05", "--tau", "10", "--epochs", "300")
    result = run_example("uci_regression", tmp_path, *args)
    assert result[str(path)]["d"] == 3
    assert result[str(path)]["rmse"][0] < 0.8 * targets.std()  # better than predicting the mean


@pytest.mark.slow  # the default suite's 10-minute budget on 2 cores (v2 masks made every compile slower)
def test_mc_classification(tmp_path):
    result = run_example("mc_classification", tmp_path)
    mc = next(v for k, v in result.items() if k.startswith("dropout, MC"))
    assert mc["accuracy"] > 0.9
    assert mc["auroc_mi"] > 0.7 and mc["auroc_entropy"] > 0.7  # unseen digits are more uncertain
    for metrics in result.values():
        assert 0.0 <= metrics["ece"] < 0.1
    assert (tmp_path / "mc_classification_reliability.png").exists()
    assert (tmp_path / "mc_classification_selective_ood.png").exists()


@pytest.mark.slow  # the default run keeps a representative set of examples under the 10-minute budget
def test_calibrate_and_conform(tmp_path):
    result = run_example("calibrate_and_conform", tmp_path)
    for (_, _, alpha), (coverage, size) in result["conformal"].items():
        assert abs(coverage.mean() - (1 - alpha)) < 0.04  # 3 partitions of ~1,400 test images each
        assert 0.5 < size.mean() < 5
    for metrics in result["calibration"].values():  # a fitted temperature does not make the test NLL worse
        assert np.mean(metrics["nll_after"]) <= np.mean(metrics["nll_before"]) + 0.01
    assert min(np.mean(v["auroc"]) for (_, score), v in result["ood"].items() if score == "entropy") > 0.7
    assert ("MC dropout (T=10)", "mutual information") in result["ood"]
    for name in ("calibrate_and_conform.md", "calibrate_and_conform_reliability.png", "calibrate_and_conform_sets.png"):
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.slow  # the default run keeps a representative set of examples under the 10-minute budget
def test_concrete_dropout(tmp_path):
    result = run_example("concrete_dropout", tmp_path)
    rates = result["rates"]
    smallest, largest = min(rates), max(rates)
    inner = slice(1, 3)  # the two inner hidden layers
    assert max(rates[largest][inner]) < min(rates[smallest][inner])  # less dropout with more data
    assert (tmp_path / "concrete_dropout.png").exists()


@pytest.mark.slow  # the default run keeps a representative set of examples under the 10-minute budget
def test_cnn_variants(tmp_path):
    result = run_example("cnn_variants", tmp_path)
    assert list(result) == ["none", "dropout", "spatial", "dropblock"]
    for metrics in result.values():
        assert min(metrics["test_acc"]) > 0.3  # two quick epochs on 200 images: well above chance (10%)
    assert (tmp_path / "cnn_variants.png").exists()
    assert "test acc - none" in (tmp_path / "cnn_variants.md").read_text()  # differences to no dropout, by seed


@pytest.mark.slow  # the default run keeps a representative set of examples under the 10-minute budget
def test_stochastic_depth(tmp_path):
    result = run_example("stochastic_depth", tmp_path)
    names = list(result)
    assert names[0] == "none" and names[1].startswith("linear")
    linear, uniform = result[names[1]], result[names[2]]
    assert linear["expected_blocks_dropped"] == pytest.approx(uniform["expected_blocks_dropped"], rel=1e-3)
    for metrics in result.values():
        assert metrics["test_acc"] > 0.85
    assert (tmp_path / "stochastic_depth.png").exists()


@pytest.mark.slow  # the default run keeps a representative set of examples under the 10-minute budget
def test_transformer_lm(tmp_path):
    result = run_example("transformer_lm", tmp_path)
    assert list(result) == ["no dropout", "dropout 0.1", "dropout 0.1 + LayerDrop 0.2"]
    for metrics in result.values():
        assert metrics["final_val_loss"] < 3.5  # below the uniform 4.85 nats/char: it learned something in 60 steps
    assert (tmp_path / "transformer_lm.png").exists()


@pytest.mark.slow  # the default run keeps a representative set of examples under the 10-minute budget
def test_lm_uncertainty(tmp_path):
    result = run_example("lm_uncertainty", tmp_path)
    assert result["step_error"] < 1e-3  # the cached decoding step is the full-sequence network
    ood = {"English prose (pydoc topics)", "code, lines shuffled", "code, characters shuffled"}
    assert set(result["detection"]) == ood
    for methods in result["detection"].values():
        assert {"MC mutual information", "deterministic entropy"} <= set(methods)
        assert all(0.0 <= value <= 1.0 for scores in methods.values() for value in scores.values())
    assert result["threshold"] > 0 and all(0.0 <= share <= 1.0 for share in result["flagged"].values())
    assert len(result["generation"]["continuation"]) == 8
    assert (tmp_path / "lm_uncertainty.png").exists() and "MI threshold" in (tmp_path / "lm_uncertainty.md").read_text()


@pytest.mark.slow  # the default run keeps a representative set of examples under the 10-minute budget
def test_recurrent_locked(tmp_path):
    result = run_example("recurrent_locked", tmp_path)
    assert list(result) == ["none", "naive", "locked"]
    for metrics in result.values():
        assert metrics["final_val_loss"] < 4.0  # below the uniform 4.85 nats/char
    assert (tmp_path / "recurrent_locked.png").exists()


@pytest.mark.slow  # the default run keeps a representative set of examples under the 10-minute budget
def test_finetune(tmp_path):
    result = run_example("finetune", tmp_path)
    assert next(iter(result)) == "no dropout" and {"mixout 0.5", "R-Drop (dropout 0.1, alpha 1)"} <= set(result)
    for metrics in result.values():
        assert min(metrics["b_acc"]) > 0.6  # 60 quick steps on 100 images of 5 digits: well above chance (20%)
        assert min(metrics["a_acc"]) > 0.8  # task A is still recognised through the fine-tuned trunk
    # Mixout pulls the weights back towards the pre-trained ones: at rate 0.8 task A is forgotten least
    assert sum(result["mixout 0.8"]["forgetting"]) <= sum(result["no dropout"]["forgetting"])
    assert (tmp_path / "finetune.png").stat().st_size > 10_000
    assert "task B acc %" in (tmp_path / "finetune.md").read_text()


@pytest.mark.slow  # about 20 s of CPU (compilations): over this family's share of the default budget
def test_active_learning(tmp_path):
    result = run_example("active_learning", tmp_path, "--methods", "batchbald,random")
    assert result["counts"] == [20, 30]  # 20 balanced labels, then one round of 10
    assert result["weight_decay"] in (0.3, 3.0)  # chosen by validation NLL from the quick grid
    for curve in result["accuracy"].values():
        assert curve[-1] > 0.2  # 30 labels, 50 steps: well above chance (10%)
    assert result["batchbald_seconds"] > 0
    assert "paper, full MNIST" in (tmp_path / "active_learning.md").read_text()
    assert (tmp_path / "active_learning.png").exists()


@pytest.mark.slow  # about 15 s of CPU (compilations): over this family's share of the default budget
def test_drift_monitor(tmp_path):
    result = run_example("drift_monitor", tmp_path)
    assert set(result) == {"rotation", "unseen"}
    assert result["unseen"]["mi"]["detected"] >= 0.5  # 30% unseen digits: the MC monitor sees them
    assert (tmp_path / "drift_monitor.png").exists() and (tmp_path / "drift_monitor.md").exists()
