"""Example 9: input dropout on linear regression is ridge regression in expectation (Srivastava et al. 2014, §9.1).

For inputs ``X`` (N x D), targets ``y`` and a dropout mask ``R`` with drop rate ``q`` on every input element,
Srivastava et al. (JMLR 15, 2014, §9.1) show

    E_R || y - (R * X) w ||^2 = || y - (1-q) X w ||^2 + q (1-q) || Γ w ||^2,      Γ = diag(X^T X)^(1/2)

for classic dropout (kept inputs unscaled, ``inverted=False``); with inverted dropout (kept inputs scaled by
``1/(1-q)``, jaxdrop's default) the same algebra gives ``|| y - X w ||^2 + q/(1-q) || Γ w ||^2``, whose minimiser
is the ridge-like ``w* = (X^T X + q/(1-q) diag(X^T X))^-1 X^T y``. This script checks both on real data
(scikit-learn's bundled diabetes set, 442 x 10):

1. the Monte Carlo average of the dropout loss over many ``jaxdrop.dropout`` masks matches the closed form (within
   its Monte Carlo standard error), for both modes and several rates;
2. gradient descent on the dropout loss (fresh masks every step) converges to the closed-form ``w*``, not to the
   least-squares solution.
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
import optax

import jaxdrop


def load_diabetes():
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def closed_form_loss(x, y, w, rate, inverted):
    gamma_w = jnp.sqrt(jnp.sum(x**2, axis=0)) * w
    if inverted:
        return jnp.sum((y - x @ w) ** 2) + rate / (1 - rate) * jnp.sum(gamma_w**2)
    return jnp.sum((y - (1 - rate) * x @ w) ** 2) + rate * (1 - rate) * jnp.sum(gamma_w**2)


def dropout_loss(key, x, y, w, rate, inverted):
    """``|| y - dropout(X) w ||^2`` for one mask over every element of ``X``."""
    return jnp.sum((y - jaxdrop.dropout(x, rate, key=key, inverted=inverted) @ w) ** 2)


def mc_expected_loss(key, x, y, w, rate, inverted, num_samples):
    """Mean and standard error of the dropout loss over ``num_samples`` masks (``jaxdrop.mc.sample``).

    ``dropout_loss`` is a module-level function and the rate an array, so every call reuses one compiled program.
    """
    rate = jnp.asarray(rate, jnp.float32)
    losses = jaxdrop.mc.sample(dropout_loss, x, y, w, rate, inverted, key=key, num_samples=num_samples, chunk_size=1000)
    return float(losses.mean()), float(losses.std() / np.sqrt(num_samples))


def ridge_solution(x, y, rate):
    gram = x.T @ x
    return jnp.linalg.solve(gram + rate / (1 - rate) * jnp.diag(jnp.diag(gram)), x.T @ y)


@functools.partial(jax.jit, static_argnames="steps")
def train_with_dropout(key, x, y, rate, steps):
    """Adam on the inverted-dropout loss with a fresh mask every step; the average of the last half of the iterates
    (Polyak averaging) removes the noise of the stochastic gradients."""
    optimizer = optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=0.01))
    w = jnp.zeros(x.shape[1])
    update = _common.gradient_step(
        optimizer, lambda w, i: dropout_loss(jaxdrop.fold_in(key, i), x, y, w, rate, True) / len(y)
    )

    def step(carry, i):
        w, state, w_sum = carry
        w, state = update(w, state, i)
        w_sum = w_sum + jnp.where(i >= steps // 2, w, 0.0)
        return (w, state, w_sum), None

    (w, _, w_sum), _ = jax.lax.scan(step, (w, optimizer.init(w), jnp.zeros_like(w)), jnp.arange(steps))
    return w_sum / (steps - steps // 2)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=20_000, help="dropout masks per Monte Carlo estimate")
    p.add_argument("--steps", type=int, default=20_000, help="gradient steps on the dropout loss")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.steps = 2_000, 3_000
    out = _common.out_dir(args)
    x, y = load_diabetes()
    key = jax.random.key(args.seed)
    w_ols = jnp.linalg.lstsq(x, y)[0]
    rates = [0.1, 0.3, 0.5, 0.7]

    loss_rows, checks = [], []
    for inverted in (False, True):
        for rate in rates:
            w = w_ols + 0.1 * jax.random.normal(jaxdrop.fold_in(key, "w", round(100 * rate)), w_ols.shape)
            mc_mean, mc_se = mc_expected_loss(
                jaxdrop.fold_in(key, "mc", round(100 * rate)), x, y, w, rate, inverted, args.samples
            )
            exact = float(closed_form_loss(x, y, w, rate, inverted))
            z = (mc_mean - exact) / mc_se
            checks.append(abs(z))
            loss_rows.append(
                (
                    ["classic", "inverted"][inverted],
                    rate,
                    f"{mc_mean:.2f} ± {mc_se:.2f}",
                    f"{exact:.2f}",
                    f"{(mc_mean - exact) / exact:+.2%}",
                    f"{z:+.2f}",
                )
            )

    fit_rows, fits = [], {}
    bar = _common.progress(rates, desc="gradient descent on the dropout loss", quiet=args.quiet)
    for rate in bar:
        w_star = ridge_solution(x, y, rate)
        w_sgd = train_with_dropout(
            jaxdrop.fold_in(key, "sgd", round(100 * rate)), x, y, jnp.float32(rate), steps=args.steps
        )
        to_star = float(jnp.linalg.norm(w_sgd - w_star) / jnp.linalg.norm(w_star))
        ols_to_star = float(jnp.linalg.norm(w_ols - w_star) / jnp.linalg.norm(w_star))
        fits[rate] = (np.asarray(w_sgd), np.asarray(w_star))
        fit_rows.append((rate, f"{to_star:.2%}", f"{ols_to_star:.1%}"))

    text = (
        "# Input dropout on linear regression = ridge in expectation (Srivastava et al. 2014, §9.1)\n\n"
        "Data: scikit-learn diabetes (442 x 10), standardised. Produced by `examples/ridge_equivalence.py`"
        f"{' --quick' if args.quick else ''}.\n\n"
        f"## 1. Expected loss: Monte Carlo over {args.samples:,} masks vs closed form\n\n"
        "Each row evaluates the loss at its own weights (least squares plus a random perturbation drawn per rate), so "
        "rows are not points of one curve; the figure uses one perturbed weight vector for every rate, so its values "
        "differ from the table's.\n\n"
        + _common.markdown_table(["dropout", "rate q", "MC mean ± s.e.", "closed form", "rel. diff", "z"], loss_rows)
        + f"\n\nLargest |z| = {max(checks):.2f} (|z| < 3 expected if the formula holds).\n\n"
        f"## 2. Minimiser: gradient descent with dropout ({args.steps:,} steps) vs ridge closed form\n\n"
        + _common.markdown_table(["rate q", "||w_sgd - w*|| / ||w*||", "||w_ols - w*|| / ||w*|| (for scale)"], fit_rows)
    )
    print(text)
    _common.write_text(out, "ridge_equivalence.md", text)

    plt = _common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    qs = np.linspace(0.02, 0.9, 60)
    w = w_ols + 0.1 * jax.random.normal(jaxdrop.fold_in(key, "curve"), w_ols.shape)
    for inverted, color in ((False, "C0"), (True, "C1")):
        label = "inverted (jaxdrop default)" if inverted else "classic (inverted=False)"
        left.plot(
            qs, [float(closed_form_loss(x, y, w, q, inverted)) for q in qs], color=color, label=f"{label}: formula"
        )
        mc = [
            mc_expected_loss(
                jaxdrop.fold_in(key, "curve", round(100 * q)), x, y, w, q, inverted, max(args.samples // 10, 200)
            )
            for q in rates
        ]
        left.errorbar(
            rates,
            [m for m, _ in mc],
            yerr=[3 * s for _, s in mc],
            fmt="o",
            color=color,
            label=f"{label}: Monte Carlo (±3 s.e.)",
        )
    left.set(
        xlabel="drop rate q",
        ylabel="expected squared error",
        yscale="log",
        title="E||y - (R*X)w||² : formula vs Monte Carlo",
    )
    left.legend(fontsize=8)
    features = np.arange(x.shape[1])
    right.plot(features, np.asarray(w_ols), "k*", ms=10, label="least squares")
    for i, rate in enumerate(rates):
        w_sgd, w_star = fits[rate]
        right.plot(features, w_star, "-", color=f"C{i}", label=f"ridge closed form, q={rate}")
        right.plot(features, w_sgd, "o", color=f"C{i}", mfc="none", ms=8)
    right.set(xlabel="feature", ylabel="coefficient", title="Trained with dropout (o) = ridge closed form (—)")
    right.legend(fontsize=8)
    _common.save_figure(fig, out, "ridge_equivalence.png")
    return {
        "max_abs_z": max(checks),
        "sgd_to_ridge": [float(r[1].rstrip("%")) / 100 for r in fit_rows],
        "ols_to_ridge": [float(r[2].rstrip("%")) / 100 for r in fit_rows],
    }


if __name__ == "__main__":
    main()
    sys.exit(0)
