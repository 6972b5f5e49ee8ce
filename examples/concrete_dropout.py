"""Example 8: concrete dropout learns its dropout rates, and they fall as the data grow (Gal, Hron & Kendall 2017).

The setting of the reference notebook (yaringal/ConcreteDropout, ``concrete-dropout-keras.ipynb``): synthetic
``y = 2x + 8 + N(0, 1)`` with ``x ~ N(0, 1)`` for N = 10, 100 and 10,000 points; three ReLU layers of 1,024 units
and a heteroscedastic head (mean and log-variance), every dense layer preceded by ``jaxdrop.concrete_dropout``
whose rate is a learned parameter (initialised at 0.1), plus ``jaxdrop.concrete_dropout_regularizer`` with
``weight_regularizer = l^2 / N`` (l = 1e-4) and ``dropout_regularizer = 2 / N``; Adam, batch 20, and the notebook's
epoch counts (2,000 / 200 / 2 for N = 10 / 100 / 10,000, about 1,000-2,000 steps each). With more data the model
needs less regularisation, so the learned rates fall: the notebook reports about 0.24 on the inner layers at
N = 100 and about 0.13 at N = 10,000.
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

LAYER_NAMES = ("input", "hidden 1", "hidden 2", "mean head", "log-var head")
EPOCHS = {10: 2000, 100: 200, 10_000: 2}  # the reference notebook's epoch counts
LENGTHSCALE = 1e-4


def make_data(num_points: int, seed: int):
    rs = np.random.RandomState(seed)
    x = rs.randn(num_points, 1).astype(np.float32)
    y = (2 * x + 8 + rs.randn(num_points, 1)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def init_params(key, width: int):
    sizes = [(1, width), (width, width), (width, width), (width, 1), (width, 1)]
    keys = jax.random.split(key, len(sizes))
    glorot = jax.nn.initializers.glorot_uniform()
    init_logit = jnp.log(0.1) - jnp.log(0.9)  # rate 0.1, as the reference's init_min = init_max = 0.1
    return [
        {"w": glorot(k, shape), "b": jnp.zeros(shape[1]), "p_logit": init_logit}
        for k, shape in zip(keys, sizes, strict=True)
    ]


def forward(params, x, key):
    """Concrete dropout before every dense layer (the reference wraps each Dense in ConcreteDropout)."""

    def dense(i, h):
        h = jaxdrop.concrete_dropout(h, params[i]["p_logit"], key=jaxdrop.fold_in(key, i))
        return h @ params[i]["w"] + params[i]["b"]

    h = x
    for i in range(3):
        h = jax.nn.relu(dense(i, h))
    return dense(3, h), dense(4, h)  # mean, log-variance


def regularizer(params, num_points):
    return sum(
        jaxdrop.concrete_dropout_regularizer(
            layer["p_logit"],
            layer["w"],
            weight_regularizer=LENGTHSCALE**2 / num_points,
            dropout_regularizer=2.0 / num_points,
            input_dim=layer["w"].shape[0],
        )
        for layer in params
    )


def heteroscedastic_loss(mean, log_var, y):
    return jnp.mean(jnp.sum(jnp.exp(-log_var) * (y - mean) ** 2 + log_var, axis=-1))


OPTIMIZER = optax.adam(1e-3)


def loss_fn(params, key, xb, yb, num_points):
    mean, log_var = forward(params, xb, key)
    return heteroscedastic_loss(mean, log_var, yb) + regularizer(params, num_points)


@jax.jit
def run_steps(params, opt_state, xs, ys, step_keys, num_points):
    """A chunk of Adam steps; the batches are gathered on the host, so one program serves every N."""
    update = _common.gradient_step(OPTIMIZER, loss_fn)

    def step(carry, inputs):
        params, opt_state = carry
        xb, yb, key = inputs
        return update(params, opt_state, key, xb, yb, num_points), None

    return jax.lax.scan(step, (params, opt_state), (xs, ys, step_keys))[0]


def fit(num_points: int, *, width: int, epochs: int, seed: int, quiet: bool, chunk: int = 100):
    x, y = (np.asarray(a) for a in make_data(num_points, seed))
    batch_size = min(20, num_points)
    params = init_params(jax.random.key(seed), width)
    opt_state = OPTIMIZER.init(params)
    rng = np.random.RandomState(seed)
    batches = np.concatenate([_common.minibatches(rng, num_points, batch_size) for _ in range(epochs)])
    if len(batches) % chunk:  # keep one compiled shape: wrap around to fill the last chunk
        batches = np.concatenate([batches, batches[: chunk - len(batches) % chunk]])
    root = jax.random.key(seed + 1)
    for start in _common.progress(range(0, len(batches), chunk), desc=f"N = {num_points:,}", quiet=quiet):
        part = batches[start : start + chunk]
        keys = jax.vmap(lambda i: jaxdrop.fold_in(root, i))(jnp.arange(start, start + chunk))
        params, opt_state = run_steps(params, opt_state, x[part], y[part], keys, jnp.float32(num_points))
    return [float(jax.nn.sigmoid(layer["p_logit"])) for layer in params]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 10_000], help="data set sizes N")
    p.add_argument("--width", type=int, default=1024, help="units per hidden layer")
    p.add_argument("--epoch-scale", type=float, default=1.0, help="multiply the reference epoch counts")
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.epoch_scale, args.sizes = 64, 0.1, [10, 100, 2000]
    out = _common.out_dir(args)
    rates = {}
    for num_points in args.sizes:
        reference_epochs = EPOCHS.get(num_points, max(1, 20_000 // num_points))
        epochs = max(1, round(reference_epochs * args.epoch_scale))
        rates[num_points] = fit(num_points, width=args.width, epochs=epochs, seed=args.seed, quiet=args.quiet)
    rows = [(f"{n:,}", *(f"{r:.3f}" for r in layer_rates)) for n, layer_rates in rates.items()]
    text = (
        "# Concrete dropout: learned rates vs data size (examples/concrete_dropout.py"
        f"{' --quick' if args.quick else ''})\n\n"
        f"y = 2x + 8 + N(0, 1); 3 x {args.width} ReLU units, heteroscedastic head, l = 1e-4, Adam, batch 20, "
        f"epochs x {args.epoch_scale} of the reference notebook's. Reference: about 0.24 on the inner layers at "
        "N = 100 and about 0.13 at N = 10,000.\n\n"
        + _common.markdown_table(["N", *(f"p ({name})" for name in LAYER_NAMES)], rows)
    )
    print(text)
    _common.write_text(out, "concrete_dropout.md", text)

    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    sizes = list(rates)
    for i, name in enumerate(LAYER_NAMES):
        ax.plot(sizes, [rates[n][i] for n in sizes], "o-", label=name)
    # What the curves show, from the numbers: which layers' rates fall by a fifth or more from the smallest N to
    # the largest, and which do not.
    first, last = (np.asarray(rates[n]) for n in (sizes[0], sizes[-1]))
    falling = [name for name, a, b in zip(LAYER_NAMES, first, last, strict=True) if b < 0.8 * a]
    level = [name for name in LAYER_NAMES if name not in falling]
    parts = [f"fall as N grows: {', '.join(falling)}"] if falling else []
    parts += [f"change by less than a fifth: {', '.join(level)}"] if level else []
    ax.set(xscale="log", xlabel="number of training points N", ylabel="learned dropout rate p")
    ax.set_title("Concrete dropout, learned rates (one seed)\n" + "\n".join(parts), fontsize=9)
    ax.legend()
    _common.save_figure(fig, out, "concrete_dropout.png")
    return {"rates": rates}


if __name__ == "__main__":
    main()
    sys.exit(0)
