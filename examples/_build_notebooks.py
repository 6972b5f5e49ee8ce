# ruff: noqa: E501  (the notebook cells below are formatted by ruff after they are written)
"""Builds ``notebooks/*.ipynb`` from the cell sources below and executes them (outputs are committed).

    python examples/_build_notebooks.py            # build and execute every notebook
    python examples/_build_notebooks.py --no-run   # only write the cells

The tests (``tests/test_notebooks.py``) execute the committed notebooks with ``JAXDROP_QUICK=1``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

SETUP = """import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxdrop

QUICK = os.environ.get("JAXDROP_QUICK", "0") not in ("", "0")  # the tests set JAXDROP_QUICK=1 for small settings
print(f"jaxdrop {jaxdrop.__version__}, jax {jax.__version__}, backend {jax.default_backend()}, quick={QUICK}")"""

QUICKSTART = [
    (
        "md",
        """# jaxdrop quickstart

Dropout for JAX and Flax: one pure function per variant (explicit key, rate and `deterministic` flag), Flax layers
that are thin wrappers over them, and Monte Carlo dropout with uncertainty metrics. This notebook tours the
functional API, the Flax `linen` and `nnx` layers and MC dropout in one call.""",
    ),
    ("code", SETUP),
    (
        "md",
        """## 1. The functional API

`jaxdrop.dropout(x, rate, key=...)` zeroes each element with probability `rate` and scales the kept ones by
`1 / (1 - rate)` (inverted dropout), so nothing changes at inference: `deterministic=True` returns `x`.""",
    ),
    (
        "code",
        """x = jnp.ones((2, 8))
key = jax.random.key(1)
print(jaxdrop.dropout(x, 0.5, key=key))
print(jaxdrop.dropout(x, 0.5, deterministic=True))  # inference: the identity, no key needed
print(jaxdrop.dropout(x, 0.5, key=key, inverted=False))  # classic dropout: no scaling in training...
print(jaxdrop.dropout(x, 0.5, deterministic=True, inverted=False))  # ... and x * (1 - rate) at inference""",
    ),
    ("md", """`broadcast_dims` shares one mask value along axes (flax's meaning): here one decision per row."""),
    ("code", """print(jaxdrop.dropout(jnp.ones((4, 6)), 0.5, key=key, broadcast_dims=(1,)))"""),
    (
        "md",
        """## 2. Keys: one per layer, step and sample

`jaxdrop.fold_in(key, *data)` folds layer names (hashed), step numbers and sample indices into a key.""",
    ),
    (
        "code",
        """root = jax.random.key(42)
k_layer1_step7 = jaxdrop.fold_in(root, "encoder/dropout_1", 7)
k_layer2_step7 = jaxdrop.fold_in(root, "encoder/dropout_2", 7)
a = jaxdrop.dropout(jnp.ones(10), 0.5, key=k_layer1_step7)
b = jaxdrop.dropout(jnp.ones(10), 0.5, key=k_layer2_step7)
print(a, b, sep="\\n")""",
    ),
    (
        "md",
        """## 3. Traced rates: `vmap` over the rate

The rate may be a traced value (an optax schedule, or `vmap` over rates), so one compiled program serves every
rate. Here the fraction of kept elements for ten rates at once:""",
    ),
    (
        "code",
        """rates = jnp.linspace(0.0, 0.9, 10)
big = jnp.ones(100_000)
kept = jax.vmap(lambda r: jnp.mean(jaxdrop.dropout(big, r, key=key) != 0))(rates)
for r, k in zip(np.asarray(rates), np.asarray(kept), strict=True):
    print(f"rate {r:.1f}: kept {k:.3f} (expected {1 - r:.3f})")""",
    ),
    (
        "md",
        """Gradients flow through the kept elements; the mask is regenerated from the key in the backward pass rather
than stored, so memory does not grow with the activations.""",
    ),
    (
        "code",
        """grad = jax.grad(lambda x: jnp.sum(jaxdrop.dropout(x, 0.25, key=key)))(jnp.ones(8))
print(grad)  # 1 / 0.75 where kept, 0 where dropped""",
    ),
    (
        "md",
        """## 4. The variants at a glance

Every variant is a pure function with the same calling convention.""",
    ),
    (
        "code",
        """feature_maps = jnp.ones((1, 8, 8, 16))  # (batch, height, width, channels)
sequence = jnp.ones((1, 8, 6))  # (batch, time, features)
examples = {
    "dropout": jaxdrop.dropout(feature_maps, 0.3, key=key),
    "spatial_dropout2d (whole channels)": jaxdrop.spatial_dropout2d(feature_maps, 0.3, key=key),
    "dropblock2d (3x3 blocks)": jaxdrop.dropblock2d(feature_maps, 0.3, key=key, block_size=3),
    "locked_dropout (same mask every step)": jaxdrop.locked_dropout(sequence, 0.3, key=key),
    "token_dropout (whole tokens)": jaxdrop.token_dropout(sequence, 0.3, key=key),
    "drop_path (whole examples of a branch)": jaxdrop.drop_path(jnp.ones((16, 3)), 0.3, key=key),
}
for name, y in examples.items():
    print(f"{name:42s} shape {y.shape}, fraction zeroed {float(jnp.mean(y == 0)):.2f}")
print("locked mask, time x features:\\n", (examples["locked_dropout (same mask every step)"][0] != 0).astype(int))""",
    ),
    (
        "md",
        """## 5. Flax linen

`jaxdrop.linen.Dropout` is a drop-in replacement for `flax.linen.Dropout` (same arguments, same `"dropout"` RNG
stream).""",
    ),
    (
        "code",
        """import flax.linen as nn

import jaxdrop.linen


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.relu(nn.Dense(32)(x))
        x = jaxdrop.linen.Dropout(0.5)(x, deterministic=not train)
        return nn.Dense(3)(x)


model = MLP()
x = jnp.ones((4, 5))
variables = model.init(jax.random.key(0), x, train=False)
train_out = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
eval_out = model.apply(variables, x, train=False)
print(train_out[0], eval_out[0])""",
    ),
    (
        "md",
        """## 6. Flax nnx

`jaxdrop.nnx.Dropout` replaces `flax.nnx.Dropout`; `model.train()` / `model.eval()` switch it.""",
    ),
    (
        "code",
        """from flax import nnx

import jaxdrop.nnx


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(5, 32, rngs=rngs)
        self.dropout = jaxdrop.nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(32, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.dropout(nnx.relu(self.hidden(x))))


nnx_model = NnxMLP(nnx.Rngs(params=0, dropout=1))
print("train:", nnx_model(x)[0])
nnx_model.eval()
print("eval: ", nnx_model(x)[0])""",
    ),
    (
        "md",
        """## 7. MC dropout in one call

`jaxdrop.mc.predict` keeps dropout on, runs `num_samples` passes in one `vmap` (chunked if asked) and returns the
predictive mean with its uncertainty (entropy, mutual information, ...). It accepts plain functions, linen modules
with their variables, and nnx modules.""",
    ),
    (
        "code",
        """prediction = jaxdrop.mc.predict(
    model, x, key=jax.random.key(2), num_samples=100, variables=variables, apply_kwargs={"train": True}
)
print("mean probabilities:", prediction.probs[0])
print("predictive entropy:", prediction.predictive_entropy)
print("mutual information:", prediction.mutual_information)""",
    ),
    (
        "md",
        """Next: `uncertainty.ipynb` (MC dropout on real data, with plots) and `choosing_dropout.ipynb` (which variant,
which rate, where). Runnable scripts with figures are in `examples/`.""",
    ),
]

UNCERTAINTY = [
    (
        "md",
        """# Uncertainty with MC dropout

Dropout kept on at test time turns one network into an ensemble of thinned networks; the spread of their
predictions is the model's uncertainty (Gal & Ghahramani 2016). We train a dropout MLP on scikit-learn's bundled
digits **0-6 only**, then use `jaxdrop.mc.predict` and `jaxdrop.uncertainty` to

1. find the test images the model is unsure about and send them for review,
2. check calibration (reliability diagram, ECE),
3. detect digits it has never seen (7-9) by their uncertainty,
4. draw predictive uncertainty bands for a regression.""",
    ),
    (
        "code",
        SETUP
        + """

import matplotlib.pyplot as plt
import optax
from sklearn.datasets import load_digits

from jaxdrop import uncertainty as unc""",
    ),
    ("md", "## Data and model"),
    (
        "code",
        """digits = load_digits()
images, labels = (digits.images / 16.0).astype(np.float32), digits.target
seen = labels < 7
order = np.random.RandomState(0).permutation(int(seen.sum()))
x_seen, y_seen = images[seen].reshape(-1, 64)[order], labels[seen][order]
x_train, y_train = jnp.asarray(x_seen[:500]), jnp.asarray(y_seen[:500])
x_test, y_test = jnp.asarray(x_seen[500:]), jnp.asarray(y_seen[500:])
x_ood = jnp.asarray(images[~seen].reshape(-1, 64))
print(f"train {len(x_train)}, test {len(x_test)} (digits 0-6), out-of-distribution {len(x_ood)} (digits 7-9)")


def init(key, sizes=(64, 256, 256, 7)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(params, x, key=None, rate=0.5, deterministic=False):
    for i, layer in enumerate(params[:-1]):
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
        x = jaxdrop.dropout(x, rate, key=None if deterministic else jaxdrop.fold_in(key, i), deterministic=deterministic)
    return x @ params[-1]["w"] + params[-1]["b"]


optimizer = optax.adam(1e-3)


@jax.jit
def train_step(params, opt_state, key, xb, yb):
    def loss(p):
        logits = mlp(p, xb, key)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], axis=-1))

    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


params = init(jax.random.key(0))
opt_state = optimizer.init(params)
rng = np.random.RandomState(0)
for epoch in range(30 if QUICK else 150):
    for step, batch in enumerate(rng.permutation(len(x_train)).reshape(10, -1)):
        params, opt_state = train_step(params, opt_state, jaxdrop.fold_in(jax.random.key(1), epoch, step),
                                       x_train[batch], y_train[batch])
test_logits = mlp(params, x_test, deterministic=True)
print("test accuracy (dropout off):", float(jnp.mean(jnp.argmax(test_logits, -1) == y_test)))""",
    ),
    (
        "md",
        """## MC dropout predictions

`jaxdrop.mc.predict` runs `num_samples` stochastic passes (one key per sample, `fold_in(key, i)`) and summarises
them: predictive mean, total uncertainty (predictive entropy) and its epistemic part (mutual information).""",
    ),
    (
        "code",
        """num_samples = 30 if QUICK else 200
classifier = lambda key, x: mlp(params, x, key)
mc_test = jaxdrop.mc.predict(classifier, x_test, key=jax.random.key(2), num_samples=num_samples, labels=y_test)
mc_ood = jaxdrop.mc.predict(classifier, x_ood, key=jax.random.key(3), num_samples=num_samples)
print("MC accuracy:", float(jnp.mean(mc_test.predictions == y_test)))

most_uncertain = np.argsort(-np.asarray(mc_test.predictive_entropy))[:8]
fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax, i in zip(axes, most_uncertain, strict=True):
    ax.imshow(np.asarray(x_test[i]).reshape(8, 8), cmap="gray_r")
    entropy = float(mc_test.predictive_entropy[i])
    ax.set_title(f"pred {int(mc_test.predictions[i])} / true {int(y_test[i])}\\nH={entropy:.2f}", fontsize=8)
    ax.axis("off")
fig.suptitle("The eight test images MC dropout is least sure about")
plt.show()""",
    ),
    ("md", "### Send the most uncertain cases for human review"),
    (
        "code",
        """correct = np.asarray(mc_test.predictions == y_test)
print(f"{'reviewed':>9} {'accuracy on the rest':>21}")
for budget in (0.05, 0.10, 0.20):
    flagged = np.asarray(unc.flag_for_review(mc_test.predictive_entropy, budget=budget))
    print(f"{budget:>9.0%} {correct[~flagged].mean():>21.1%}")
print(f"{'none':>9} {correct.mean():>21.1%}")""",
    ),
    ("md", "## Calibration and selective prediction"),
    (
        "code",
        """det_probs = jax.nn.softmax(mlp(params, x_test, deterministic=True))
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
predictors = (("dropout off", det_probs), (f"MC dropout, T={num_samples}", mc_test.probs))
for ax, (name, probs) in zip(axes[:2], predictors, strict=True):
    ece = float(unc.expected_calibration_error(probs, y_test, num_bins=10))
    unc.plot_reliability_diagram(unc.reliability_diagram(probs, y_test, num_bins=10), ax=ax, label=name)
    ax.set_title(f"{name}: ECE {ece:.3f}")
for name, probs, score in (("dropout off (entropy)", det_probs, unc.predictive_entropy(det_probs)),
                           ("MC dropout (entropy)", mc_test.probs, mc_test.predictive_entropy)):
    errors = (jnp.argmax(probs, -1) != y_test).astype(jnp.float32)
    coverage, risk = unc.risk_coverage_curve(score, errors)
    axes[2].plot(coverage, risk, label=f"{name}, AURC {float(unc.aurc(score, errors)):.4f}")
axes[2].set(xlabel="coverage", ylabel="error rate on answered", title="Risk-coverage")
axes[2].legend()
plt.tight_layout()
plt.show()""",
    ),
    (
        "md",
        """## Out-of-distribution: digits the model never saw

Images of 7, 8 and 9 should get higher uncertainty than unseen images of 0-6. The AUROC says how well the score
separates them (0.5 is chance).""",
    ),
    (
        "code",
        """fig, ax = plt.subplots(figsize=(6, 3.5))
for name, scores_in, scores_out in (("predictive entropy", mc_test.predictive_entropy, mc_ood.predictive_entropy),
                                    ("mutual information", mc_test.mutual_information, mc_ood.mutual_information)):
    print(f"OOD AUROC by {name}: {float(unc.ood_auroc(scores_in, scores_out)):.3f}")
ax.hist(np.asarray(mc_test.mutual_information), bins=30, alpha=0.6, density=True, label="digits 0-6 (seen)")
ax.hist(np.asarray(mc_ood.mutual_information), bins=30, alpha=0.6, density=True, label="digits 7-9 (never seen)")
ax.set(xlabel="mutual information (nats)", ylabel="density", title="Epistemic uncertainty, seen vs unseen classes")
ax.legend()
plt.show()""",
    ),
    (
        "md",
        """## Regression: uncertainty bands

A 1-D regression with a gap in the data. MC dropout's predictive standard deviation (epistemic + `1/tau`) grows in
the gap and away from the data. `jaxdrop.mc.predict(task="regression", tau=...)` returns the mean and variance.""",
    ),
    (
        "code",
        """rs = np.random.RandomState(0)
x_reg = np.concatenate([rs.uniform(-3, -0.5, 60), rs.uniform(1.0, 3, 60)]).astype(np.float32)[:, None]
y_reg = (np.sin(2 * x_reg) + 0.1 * rs.randn(*x_reg.shape)).astype(np.float32)[:, 0]
reg_params = init(jax.random.key(5), sizes=(1, 128, 128, 1))
reg_opt = optax.adam(3e-3)
reg_state = reg_opt.init(reg_params)


@jax.jit
def reg_step(p, s, key):
    loss = lambda p: jnp.mean((mlp(p, jnp.asarray(x_reg), key, rate=0.1)[:, 0] - y_reg) ** 2) + 1e-5 * sum(
        jnp.sum(layer["w"] ** 2) for layer in p)
    updates, s = reg_opt.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, updates), s


for step in range(500 if QUICK else 3000):
    reg_params, reg_state = reg_step(reg_params, reg_state, jax.random.fold_in(jax.random.key(6), step))
grid = jnp.linspace(-5, 5, 300)[:, None]
reg = jaxdrop.mc.predict(lambda key, x: mlp(reg_params, x, key, rate=0.1)[:, 0], grid, key=jax.random.key(7),
                         num_samples=num_samples, task="regression", tau=100.0)
std = np.sqrt(np.asarray(reg.variance))
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(x_reg[:, 0], y_reg, "k.", label="training data")
ax.plot(grid[:, 0], reg.mean, "C0", label="MC mean")
ax.fill_between(grid[:, 0], reg.mean - 2 * std, reg.mean + 2 * std, color="C0", alpha=0.25, label="± 2 std")
ax.set(xlabel="x", ylabel="y", title="MC dropout regression: uncertainty grows where there is no data")
ax.legend()
plt.show()""",
    ),
]

CHOOSING = [
    (
        "md",
        """# Choosing dropout: which variant, which rate, where

Practical guidance, each point shown with a small computation below. Rates are drop probabilities.

| network / layer | variant | typical rate | where | reference |
|---|---|---|---|---|
| dense (MLP) hidden layers | `dropout` | 0.5 hidden, 0.1-0.2 input | after the activation | Srivastava et al. 2014 |
| convolutional feature maps | `spatial_dropout2d` or `dropblock2d` | 0.1-0.2 (DropBlock ramps to 0.1 with blocks 5-7) | after conv blocks, later stages | Tompson et al. 2015; Ghiasi et al. 2018 |
| classifier head of a CNN | `dropout` | 0.2-0.5 | before the last dense layer | |
| recurrent nets (LSTM/GRU) | `locked_dropout` on inputs/outputs, `locked_mask` on the state | 0.2-0.5 | same mask at every time step | Gal & Ghahramani 2016b |
| embeddings (text) | `word_dropout` / `token_dropout` | 0.1 | on the embedded sequence | Gal & Ghahramani 2016b |
| Transformers | `dropout` on residual branches and embeddings, `dot_product_attention(dropout_rate=...)` | 0.1 (0-0.1 for large-data pretraining) | after attention/MLP, before the residual add | Vaswani et al. 2017 |
| deep residual nets / ViTs | `residual_drop_path` with `linear_drop_path_rates` | 0.1-0.5 at the last block | on each residual branch | Huang et al. 2016 |
| uncertainty estimates | any of the above with `jaxdrop.mc.predict`; learn rates with `concrete_dropout` | 0.05-0.2 | kept on at test time | Gal & Ghahramani 2016; Gal et al. 2017 |

**When not to use dropout**: when the model underfits (training loss high) or the data are plentiful relative to
the model (large-scale pretraining often uses 0); right before BatchNorm (the variance shift below); on the
recurrent connection with a fresh mask per step; at inference, unless you want MC dropout.""",
    ),
    (
        "code",
        SETUP
        + """

import matplotlib.pyplot as plt

key = jax.random.key(1)""",
    ),
    (
        "md",
        """## Convolutional feature maps: pixels, channels or blocks

Neighbouring activations in a feature map are strongly correlated, so dropping single pixels removes little
information (the next layer reads it from the neighbours). Spatial dropout removes whole channels, DropBlock
contiguous regions.""",
    ),
    (
        "code",
        """fmap = jnp.ones((1, 16, 16, 4))
variants = {
    "dropout": jaxdrop.dropout(fmap, 0.2, key=key),
    "spatial_dropout2d": jaxdrop.spatial_dropout2d(fmap, 0.5, key=key),
    "dropblock2d, block 5": jaxdrop.dropblock2d(fmap, 0.2, key=key, block_size=5),
}
fig, axes = plt.subplots(3, 4, figsize=(8, 6))
for row, (name, y) in enumerate(variants.items()):
    for c in range(4):
        axes[row, c].imshow(np.asarray(y[0, :, :, c] != 0), cmap="gray", vmin=0, vmax=1)
        axes[row, c].set_xticks([]), axes[row, c].set_yticks([])
    axes[row, 0].set_ylabel(name, fontsize=8)
fig.suptitle("Kept (white) and dropped (black) units in 4 channels")
plt.show()""",
    ),
    (
        "md",
        """## Sequences: a fresh mask per step, or one mask per sequence

`locked_dropout` draws one mask per sequence and reuses it at every time step (variational dropout); naive
dropout draws a new one each step, which on a recurrent state destroys the memory the network carries.""",
    ),
    (
        "code",
        """seq = jnp.ones((1, 20, 12))  # (batch, time, features)
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
masks = (
    ("dropout (naive)", jaxdrop.dropout(seq, 0.3, key=key)),
    ("locked_dropout", jaxdrop.locked_dropout(seq, 0.3, key=key)),
    ("token_dropout", jaxdrop.token_dropout(seq, 0.3, key=key)),
)
for ax, (name, y) in zip(axes, masks, strict=True):
    ax.imshow(np.asarray(y[0] != 0).T, cmap="gray", aspect="auto")
    ax.set(title=name, xlabel="time step", ylabel="feature")
plt.tight_layout()
plt.show()

# How much memory survives 30 steps: a unit's state passes through the mask at every step
units, steps = jnp.ones((1000, 64)), 30
naive_survives = jnp.ones_like(units)
for t in range(steps):
    naive_survives = naive_survives * (jaxdrop.dropout(units, 0.3, key=jaxdrop.fold_in(key, t)) != 0)
locked_survives = jaxdrop.locked_mask(key, 0.3, units.shape)(units) != 0  # the same mask at every step
print(f"units whose state is never dropped over {steps} steps: naive {float(naive_survives.mean()):.5f} "
      f"(0.7^{steps} = {0.7**steps:.5f}), locked {float(locked_survives.mean()):.3f}")""",
    ),
    (
        "md",
        """## Residual networks: stochastic depth with a linear schedule

Early blocks extract low-level features every later block needs; Huang et al. (2016) drop them least. The rate
grows linearly to `p_L` at the last block.""",
    ),
    (
        "code",
        """depth = 12
rates = np.asarray(jaxdrop.linear_drop_path_rates(0.5, depth))
print("rates per block:", np.round(rates, 3))
print(f"expected number of blocks skipped per example: {rates.sum():.2f} of {depth}")
x = jnp.ones((8, 4))
out = jaxdrop.residual_drop_path(x, 10 * x, 0.5, key=key)  # whole examples of the branch dropped, skip kept
print(out[:, 0])  # 1 (skip only) or 1 + 10 / (1 - 0.5) = 21""",
    ),
    (
        "md",
        """## Typical rates: too much dropout underfits

A quick sweep on the digits (300 training images, MLP 64-256-256-10), every rate trained in one `vmap` thanks to
traced rates. Training accuracy falls as the rate grows; the validation accuracy is flat over a wide range and
drops only at high rates, so 0.2-0.5 is a safe start for dense layers. `examples/choose_rate.py` is the full
version.""",
    ),
    (
        "code",
        """import optax
from sklearn.datasets import load_digits

data = load_digits()
inputs, targets = jnp.asarray(data.data / 16.0, jnp.float32), jnp.asarray(data.target)
perm = np.random.RandomState(0).permutation(len(inputs))
tr, va = perm[:300], perm[300:]
sweep = jnp.asarray([0.0, 0.2, 0.4, 0.6, 0.8, 0.9])


def init(k):
    k1, k2, k3 = jax.random.split(k, 3)
    he = lambda k, m, n: jax.random.normal(k, (m, n)) * jnp.sqrt(2 / m)
    return [he(k1, 64, 256), he(k2, 256, 256), he(k3, 256, 10)]


def net(ws, x, rate, k=None, det=False):
    for i, w in enumerate(ws[:-1]):
        x = jaxdrop.dropout(jax.nn.relu(x @ w), rate, key=None if det else jaxdrop.fold_in(k, i), deterministic=det)
    return x @ ws[-1]


opt = optax.adam(1e-3)
params = jax.vmap(lambda r: init(jax.random.key(0)))(sweep)
state = jax.vmap(opt.init)(params)


@jax.jit
def step(params, state, k, batch):
    def one(p, s, r):
        def loss(p):
            log_probs = jax.nn.log_softmax(net(p, inputs[batch], r, k))
            return -jnp.mean(jnp.take_along_axis(log_probs, targets[batch][:, None], -1))

        u, s = opt.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    return jax.vmap(one)(params, state, sweep)


rng = np.random.RandomState(0)
for epoch in range(40 if QUICK else 200):
    for i, batch in enumerate(rng.permutation(tr).reshape(6, -1)):
        params, state = step(params, state, jax.random.fold_in(jax.random.key(1), epoch * 10 + i), batch)


def acc(idx):
    return jax.vmap(lambda p: jnp.mean(jnp.argmax(net(p, inputs[idx], 0.0, det=True), -1) == targets[idx]))(params)



fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(sweep, 100 * acc(tr), "o-", label="train")
ax.plot(sweep, 100 * acc(va), "s-", label="validation")
ax.set(xlabel="hidden dropout rate", ylabel="accuracy (%)", title="Digits, 300 training images")
ax.legend()
plt.show()""",
    ),
    (
        "md",
        """## Why not right before BatchNorm: the variance shift

Inverted dropout keeps the mean but inflates the variance of its output in training by `1 / (1 - p)` (for
zero-mean inputs); at test time dropout is off, so a BatchNorm placed after it normalises with statistics that no
longer match (Li et al. 2019, "Understanding the Disharmony between Dropout and Batch Normalization"). Put dropout
after the last BatchNorm, or use a small rate.""",
    ),
    (
        "code",
        """h = jax.random.normal(jax.random.key(3), (100_000,))
for p in (0.1, 0.3, 0.5):
    train_var = float(jnp.var(jaxdrop.dropout(h, p, key=key)))
    print(f"p = {p}: variance in training {train_var:.2f}, at test {float(jnp.var(h)):.2f} "
          f"(ratio {train_var / float(jnp.var(h)):.2f}, theory 1/(1-p) = {1 / (1 - p):.2f})")""",
    ),
]


def build(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    notebook = new_notebook()
    notebook.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def execute(path: Path, quick: bool, timeout: int = 600) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    env_before = os.environ.get("JAXDROP_QUICK")
    os.environ["JAXDROP_QUICK"] = "1" if quick else "0"
    try:
        NotebookClient(
            notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        if env_before is None:
            os.environ.pop("JAXDROP_QUICK", None)
        else:
            os.environ["JAXDROP_QUICK"] = env_before
    return notebook


ALL = {"quickstart": QUICKSTART, "uncertainty": UNCERTAINTY, "choosing_dropout": CHOOSING}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-run", action="store_true", help="write the notebooks without executing them")
    parser.add_argument("--only", nargs="+", choices=list(ALL), help="build only these notebooks")
    args = parser.parse_args(argv)
    NOTEBOOKS.mkdir(exist_ok=True)
    for name in args.only or ALL:
        path = NOTEBOOKS / f"{name}.ipynb"
        nbformat.write(build(name, ALL[name]), path)
        subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(path)], check=True)
        if not args.no_run:
            nbformat.write(execute(path, quick=False), path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
