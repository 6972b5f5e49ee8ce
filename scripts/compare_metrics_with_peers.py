"""Compares the metrics of ``jaxdrop.uncertainty`` with scikit-learn, netcal and torch-uncertainty on saved arrays.

The peers are not dependencies of jaxdrop (torch-uncertainty pulls in torch and lightning). Run this script in a
throwaway environment that has jax, numpy, scikit-learn and whichever peers install::

    python -m venv /tmp/cmpvenv
    /tmp/cmpvenv/bin/pip install jax scikit-learn netcal torch-uncertainty rich torchvision
    /tmp/cmpvenv/bin/python scripts/compare_metrics_with_peers.py --out /tmp/peers

It draws one set of arrays (seed 0: 1,500 examples, so 15 equal-mass bins hold 100 examples each in every
implementation; 4 classes, sharpened softmax; a Gaussian regression with a misspecified std; OOD scores with ties),
saves them to ``OUT/arrays.npz``, evaluates every metric both here and in each installed peer on those same arrays,
and prints a markdown table: both values, the absolute difference, and the digits of agreement
``-log10(|ours - theirs| / max(|theirs|, 1e-12))`` (capped at 7, float32's precision). A peer that does not import
is reported as such. Where a peer's definition differs from jaxdrop's, the row says how (the docs guide
``docs/guide/metrics.md`` explains each).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's jaxdrop, not an installed one

NUM_EXAMPLES, NUM_CLASSES, NUM_BINS = 1_500, 4, 15


def make_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Classification, regression and OOD arrays with a known seed, float32 like a model's outputs."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(NUM_EXAMPLES, NUM_CLASSES)) * 2.0
    true_probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(NUM_CLASSES, p=p) for p in true_probs], np.int64)
    sharpened = np.exp(1.6 * logits)  # over-confident predictions of those labels
    probs = (sharpened / sharpened.sum(1, keepdims=True)).astype(np.float32)
    mean = rng.normal(size=NUM_EXAMPLES).astype(np.float32)
    std = (0.3 + rng.gamma(2.0, 0.4, NUM_EXAMPLES)).astype(np.float32)
    targets = (mean + 1.3 * std * rng.normal(size=NUM_EXAMPLES)).astype(np.float32)  # std too small by 1.3
    sample_probs = np.exp(logits[None] + rng.normal(size=(8, NUM_EXAMPLES, NUM_CLASSES)))
    return {
        "probs": probs,
        "labels": labels,
        "mean": mean,
        "std": std,
        "targets": targets,
        "scores_in": np.round(rng.normal(0.0, 1.0, 1000), 1).astype(np.float32),  # rounded: ties
        "scores_out": np.round(rng.normal(1.5, 1.0, 500), 1).astype(np.float32),
        "sample_probs": (sample_probs / sample_probs.sum(-1, keepdims=True)).astype(np.float32),
    }


def ours(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    from jaxdrop import uncertainty as U

    probs, labels = arrays["probs"], arrays["labels"].astype(np.int32)
    confidence = probs.max(1)
    errors = probs.argmax(1) != labels
    mean, std, targets = arrays["mean"], arrays["std"], arrays["targets"]
    scores_in, scores_out = arrays["scores_in"], arrays["scores_out"]
    return {
        "ECE": float(U.expected_calibration_error(probs, labels, NUM_BINS)),
        "MCE": float(U.max_calibration_error(probs, labels, NUM_BINS)),
        "adaptive ECE": float(U.adaptive_calibration_error(probs, labels, NUM_BINS)),
        "classwise ECE": float(U.classwise_calibration_error(probs, labels, NUM_BINS)),
        "NLL": float(U.nll(probs, labels)),
        "Brier": float(U.brier_score(probs, labels)),
        "AURC": float(U.aurc(-confidence, errors)),
        "E-AURC": float(U.eaurc(-confidence, errors)),
        "AUGRC": float(U.augrc(-confidence, errors)),
        "risk at 80% coverage": float(U.risk_at_coverage(-confidence, errors, 0.8)),
        "coverage at 5% risk": float(U.coverage_at_risk(-confidence, errors, 0.05)),
        "OOD AUROC": float(U.ood_auroc(scores_in, scores_out)),
        "OOD AUPR-out": float(U.ood_aupr(scores_in, scores_out)),
        "OOD AUPR-in": float(U.ood_aupr(scores_in, scores_out, positive="in")),
        "FPR95": float(U.fpr_at_tpr(scores_in, scores_out)),
        "PICP (90%, Gaussian)": float(U.picp(targets, mean=mean, std=std, coverage=0.9)),
        "MPIW (90%, Gaussian)": float(U.interval_width(mean=mean, std=std, coverage=0.9)),
        "ENCE": float(U.ence(mean, std, targets, NUM_BINS)),
        "UCE": float(U.uce(mean, std, targets, NUM_BINS)),
        "CRPS (Gaussian)": float(U.crps_gaussian(mean, std, targets)),
    }


def sklearn_values(arrays: dict[str, np.ndarray]) -> dict[str, tuple[float, str]]:
    from sklearn import metrics

    probs64 = arrays["probs"].astype(np.float64)
    probs64 /= probs64.sum(1, keepdims=True)  # float32 rows sum to 1 within 1e-7; sklearn asks for 1e-8
    labels, classes = arrays["labels"], list(range(NUM_CLASSES))
    is_out = np.r_[np.zeros(len(arrays["scores_in"])), np.ones(len(arrays["scores_out"]))]
    scores = np.r_[arrays["scores_in"], arrays["scores_out"]]
    fpr, tpr, _ = metrics.roc_curve(is_out, scores)
    return {
        "NLL": (metrics.log_loss(labels, probs64, labels=classes), "log_loss"),
        "Brier": (metrics.brier_score_loss(labels, probs64, labels=classes, scale_by_half=False), "brier_score_loss"),
        "OOD AUROC": (metrics.roc_auc_score(is_out, scores), "roc_auc_score"),
        "OOD AUPR-out": (metrics.average_precision_score(is_out, scores), "average_precision_score"),
        "OOD AUPR-in": (metrics.average_precision_score(1 - is_out, -scores), "average_precision_score"),
        "FPR95": (float(fpr[np.searchsorted(tpr, 0.95)]), "roc_curve"),
    }


def netcal_values(arrays: dict[str, np.ndarray]) -> dict[str, tuple[float, str]]:
    from netcal import metrics

    probs, labels = arrays["probs"].astype(np.float64), arrays["labels"]
    gaussian = (arrays["mean"].astype(np.float64), arrays["std"].astype(np.float64))
    targets = arrays["targets"].astype(np.float64)
    picp = metrics.PICP(bins=NUM_BINS).measure(gaussian, targets, q=0.9, kind="meanstd")
    return {
        "ECE": (float(metrics.ECE(bins=NUM_BINS).measure(probs, labels)), "ECE"),
        "MCE": (float(metrics.MCE(bins=NUM_BINS).measure(probs, labels)), "MCE"),
        "adaptive ECE": (
            float(metrics.ECE(bins=NUM_BINS, equal_intervals=False).measure(probs, labels)),
            "ECE(equal_intervals=False)",
        ),  # netcal's `ACE` is another metric: the unweighted mean gap over equal-width bins (Neumann et al. 2018)
        "PICP (90%, Gaussian)": (float(np.mean(picp.picp)), "PICP"),
        "MPIW (90%, Gaussian)": (float(np.mean(picp.mpiw)), "PICP (mpiw)"),
        "ENCE": (float(np.mean(metrics.ENCE(bins=NUM_BINS).measure(gaussian, targets, kind="meanstd"))), "ENCE"),
        "UCE": (float(np.mean(metrics.UCE(bins=NUM_BINS).measure(gaussian, targets, kind="meanstd"))), "UCE"),
    }


def torch_uncertainty_values(arrays: dict[str, np.ndarray]) -> dict[str, tuple[float, str]]:
    import torch
    from torch_uncertainty import metrics

    probs = torch.as_tensor(arrays["probs"])
    labels = torch.as_tensor(arrays["labels"])
    out: dict[str, tuple[float, str]] = {}

    def run(metric, *args) -> float:
        metric.update(*args)
        return float(metric.compute())

    classification = {
        "ECE": (
            metrics.CalibrationError(task="multiclass", num_classes=NUM_CLASSES, num_bins=NUM_BINS),
            "CalibrationError",
        ),
        "MCE": (
            metrics.CalibrationError(task="multiclass", num_classes=NUM_CLASSES, num_bins=NUM_BINS, norm="max"),
            "CalibrationError(norm='max')",
        ),
        "adaptive ECE": (
            metrics.AdaptiveCalibrationError(task="multiclass", num_classes=NUM_CLASSES, num_bins=NUM_BINS),
            "AdaptiveCalibrationError",
        ),
        "classwise ECE": (
            metrics.ClasswiseCalibrationError(num_classes=NUM_CLASSES, num_bins=NUM_BINS),
            "ClasswiseCalibrationError",
        ),
        "AURC": (metrics.AURC(), "AURC"),
        "AUGRC": (metrics.AUGRC(), "AUGRC"),
        "risk at 80% coverage": (metrics.RiskAtxCov(cov_threshold=0.8), "RiskAtxCov"),
        "coverage at 5% risk": (metrics.CovAtxRisk(risk_threshold=0.05), "CovAtxRisk"),
    }
    for name, (metric, label) in classification.items():
        out[name] = (run(metric, probs, labels), label)
    is_out = torch.as_tensor(np.r_[np.zeros(len(arrays["scores_in"])), np.ones(len(arrays["scores_out"]))])
    scores = torch.as_tensor(np.r_[arrays["scores_in"], arrays["scores_out"]])
    out["FPR95"] = (run(metrics.FPR95(pos_label=1), scores, is_out), "FPR95")
    from scipy import stats

    lower, upper = stats.norm.interval(0.9, arrays["mean"].astype(np.float64), arrays["std"].astype(np.float64))
    bounds = torch.as_tensor(lower), torch.as_tensor(upper)
    out["PICP (90%, Gaussian)"] = (
        run(metrics.IntervalCoverage(), *bounds, torch.as_tensor(arrays["targets"])),
        "IntervalCoverage",
    )
    out["MPIW (90%, Gaussian)"] = (run(metrics.MeanIntervalWidth(), *bounds), "MeanIntervalWidth")
    return out


PEERS: dict[str, tuple[str, Callable[[dict[str, np.ndarray]], dict[str, tuple[float, str]]]]] = {
    "scikit-learn": ("sklearn", sklearn_values),
    "netcal": ("netcal", netcal_values),
    "torch-uncertainty": ("torch_uncertainty", torch_uncertainty_values),
}


def digits(a: float, b: float) -> float:
    """Digits of agreement of ``a`` with the reference ``b``, capped at 7 (float32)."""
    difference = abs(a - b)
    if difference == 0:
        return 7.0
    return min(7.0, -math.log10(difference / max(abs(b), 1e-12)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory for arrays.npz and results.md (default: a temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="jaxdrop-peers-"))
    out.mkdir(parents=True, exist_ok=True)
    arrays = make_arrays()
    np.savez(out / "arrays.npz", **arrays)
    arrays = dict(np.load(out / "arrays.npz"))  # every implementation reads the saved arrays
    mine = ours(arrays)

    from jaxdrop.cli._table import markdown_table

    lines, versions = [], []
    for peer, (module_name, evaluate) in PEERS.items():
        try:
            module = importlib.import_module(module_name)
            values = evaluate(arrays)
        except Exception as error:  # an absent or broken peer is reported, not fatal
            versions.append(f"{peer}: not available ({type(error).__name__}: {error})")
            continue
        versions.append(f"{peer} {getattr(module, '__version__', '?')}")
        for name, (theirs, label) in values.items():
            ours_value = mine[name]
            lines.append(
                [
                    name,
                    f"{peer} `{label}`",
                    f"{ours_value:.7g}",
                    f"{theirs:.7g}",
                    f"{abs(ours_value - theirs):.1e}",
                    f"{digits(ours_value, theirs):.1f}",
                ]
            )
    table = markdown_table(["metric", "peer", "jaxdrop", "peer value", "abs. difference", "digits"], lines, "llrrrr")
    report = "\n\n".join(
        [
            f"Arrays: seed 0, {NUM_EXAMPLES} examples, {NUM_CLASSES} classes, {NUM_BINS} bins ({out / 'arrays.npz'}).",
            "Peers: " + "; ".join(versions) + ".",
            table,
        ]
    )
    print(report)
    (out / "results.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
