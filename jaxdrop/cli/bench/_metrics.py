"""Uncertainty metrics against scikit-learn on 100,000 examples (only with ``--sections metrics``).

Each metric that scikit-learn also computes is timed three ways on the same arrays, in alternation
(``measure_group``): the jaxdrop metric under ``jax.jit`` (values checked inside the program, as under any ``jit``),
the eager jaxdrop call (Python checks, then the jitted core: what a script calling the function pays), and the
scikit-learn function (its own input validation included). The issue's target: the jitted metric at most 2x the time
of scikit-learn. Every row's result is compared with scikit-learn's before timing, so a fast wrong metric cannot pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import uncertainty
from jaxdrop.cli._table import markdown_table
from jaxdrop.cli.bench._dropout import find, optional_module
from jaxdrop.cli.bench._timing import Row, Section, Settings, block, fmt_ratio, fmt_spread, measure_group

JIT = "jaxdrop, jit"
EAGER = "jaxdrop, eager call"
SKLEARN = "scikit-learn"
TARGET_RATIO = 2.0
NUM_CLASSES = 10
TINY_METRICS = ("ood_auroc (roc_auc_score)", "nll (log_loss)")  # --tiny: few rows, a smoke test of the section


def _data(num_examples: int) -> dict[str, np.ndarray]:
    """Half in-distribution, half OOD scores (with ties: rounded), and 10-class probabilities with labels."""
    rng = np.random.default_rng(0)
    half = num_examples // 2
    logits = rng.normal(size=(num_examples, NUM_CLASSES)) * 2.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    # sklearn asks rows to sum to 1 within 1e-8: give it the float64 renormalised twin of the same float32 values.
    probs64 = probs.astype(np.float64)
    probs64 /= probs64.sum(1, keepdims=True)
    return {
        "scores_in": np.round(rng.normal(0.0, 1.0, half), 3).astype(np.float32),
        "scores_out": np.round(rng.normal(1.0, 1.0, num_examples - half), 3).astype(np.float32),
        "probs": probs,
        "probs64": probs64,
        "labels": rng.integers(0, NUM_CLASSES, num_examples).astype(np.int32),
    }


def _cases(metrics: Any, data: dict[str, np.ndarray]) -> dict[str, tuple[Callable, tuple, Callable[[], Any]]]:
    """metric name -> (jaxdrop function, its device arguments, the scikit-learn call on host arrays)."""
    is_out = np.r_[np.zeros(len(data["scores_in"])), np.ones(len(data["scores_out"]))]
    scores = np.r_[data["scores_in"], data["scores_out"]]
    classes = list(range(NUM_CLASSES))

    def fpr95() -> float:
        fpr, tpr, _ = metrics.roc_curve(is_out, scores)
        return float(fpr[np.searchsorted(tpr, 0.95)])

    ood = (jnp.asarray(data["scores_in"]), jnp.asarray(data["scores_out"]))
    calibration = (jnp.asarray(data["probs"]), jnp.asarray(data["labels"]))
    labels, probs64 = data["labels"], data["probs64"]
    return {
        "ood_auroc (roc_auc_score)": (uncertainty.ood_auroc, ood, lambda: metrics.roc_auc_score(is_out, scores)),
        "ood_aupr (average_precision_score)": (
            uncertainty.ood_aupr,
            ood,
            lambda: metrics.average_precision_score(is_out, scores),
        ),
        "fpr_at_tpr (roc_curve + searchsorted)": (uncertainty.fpr_at_tpr, ood, fpr95),
        "nll (log_loss)": (uncertainty.nll, calibration, lambda: metrics.log_loss(labels, probs64, labels=classes)),
        "brier_score (brier_score_loss)": (
            uncertainty.brier_score,
            calibration,
            lambda: metrics.brier_score_loss(labels, probs64, labels=classes, scale_by_half=False),
        ),
    }


def metrics_section(settings: Settings) -> Section:
    """Per metric: jitted and eager jaxdrop against scikit-learn on 100,000 examples (``--tiny``: two metrics on
    1,000 examples)."""
    num_examples = 1_000 if settings.tiny else 100_000
    section = Section(
        "metrics",
        f"Uncertainty metrics against scikit-learn: {num_examples:,} examples (OOD: half in, half out; "
        f"calibration: {NUM_CLASSES} classes), float32",
    )
    section.summary["num_examples"] = num_examples
    metrics, reason = optional_module("sklearn.metrics")
    data = _data(num_examples)
    cases = _cases(metrics, data)
    if settings.tiny:
        cases = {name: cases[name] for name in TINY_METRICS}
    for name, (fn, args, reference) in cases.items():
        rows = [
            Row({"group": name, "impl": JIT}),
            Row({"group": name, "impl": EAGER}),
            Row({"group": name, "impl": SKLEARN}),
        ]
        jitted = jax.jit(fn).lower(*args).compile(settings.compiler_options)  # ahead of time, like the other sections
        rows[0].run = lambda jitted=jitted, args=args: block(jitted(*args))
        rows[1].run = lambda fn=fn, args=args: block(fn(*args))
        if metrics is None:
            rows[2].note = reason
        else:
            rows[2].run = reference
            expected, got = float(reference()), float(jitted(*args))
            if not np.isclose(got, expected, rtol=1e-4, atol=1e-6):  # never time a wrong answer
                raise AssertionError(f"{name}: jaxdrop gives {got!r}, scikit-learn {expected!r}")
            section.summary.setdefault("agreement", {})[name] = {"jaxdrop": got, "sklearn": expected}
        measure_group(rows, settings.repeats, min_sample_s=settings.min_sample_s)
        section.rows += rows

    lines = []
    for name in cases:
        reference_row = find(section.rows, group=name, impl=SKLEARN)
        reference_s = reference_row.median_s if reference_row else None
        cells = [name]
        for impl in (JIT, EAGER, SKLEARN):
            row = find(section.rows, group=name, impl=impl)
            cells.append(fmt_spread(row) if row else "–")
        for impl in (JIT, EAGER):
            row = find(section.rows, group=name, impl=impl)
            cells.append(fmt_ratio(row.median_s if row else None, reference_s))
        lines.append(cells)
    section.markdown = markdown_table(
        ["metric (scikit-learn equivalent)", "jit ms", "eager ms", "sklearn ms", "jit / sklearn", "eager / sklearn"],
        lines,
        "lrrrrr",
    )
    section.notes += [
        "Times: median (min–max) ms of rows measured in alternation, order rotated each repeat, with a short settle "
        "sleep before each sample. `jit`: `jax.jit(metric)`, values checked inside the program; `eager`: the plain "
        "call, which checks values in Python first (one extra dispatch per check).",
        f"Target: jit / sklearn <= {TARGET_RATIO:g}x for each metric. Each jaxdrop result equals scikit-learn's "
        "(rtol 1e-4) before it is timed.",
    ]
    return section


def metrics_targets(section: Section | None, tiny: bool) -> list[dict[str, Any]]:
    """One target per metric (the runner's target format): the jitted jaxdrop metric within 2x of scikit-learn."""
    targets: list[dict[str, Any]] = []
    rows = section.rows if section is not None else []
    groups = dict.fromkeys(row.labels["group"] for row in rows)
    for name in groups:
        ours, theirs = find(rows, group=name, impl=JIT), find(rows, group=name, impl=SKLEARN)
        ours_s, theirs_s = (row.median_s if row else None for row in (ours, theirs))
        ratio, detail = None, ""
        if ours_s and theirs_s:
            ratio, detail = ours_s / theirs_s, f"{ours_s * 1e3:.3g} ms vs {theirs_s * 1e3:.3g} ms"
        status = "n/a" if ratio is None else ("PASS" if ratio <= TARGET_RATIO else "FAIL")
        if tiny and ratio is not None:
            status, detail = "not judged (tiny)", detail + " (tiny sizes: a smoke test, not 100,000 examples)"
        targets.append(
            {
                "target": f"metrics: {name}, jit / scikit-learn",
                "required": f"<= {TARGET_RATIO:g}x",
                "measured": ratio,
                "status": status,
                "detail": detail,
            }
        )
    return targets
