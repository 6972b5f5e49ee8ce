"""``python -m jaxdrop demo``: dropout closes the overfitting gap, then MC dropout says which answers to check.

1. The same MLP (64-256-256-10, ReLU) is trained twice on 300 of scikit-learn's bundled 8x8 digits, once without
   dropout and once with dropout 0.2 on the input and 0.5 on the hidden layers (Srivastava et al. 2014). Both runs
   are one program: the rates are traced, so ``jax.vmap`` trains both networks side by side.
2. The dropout network is then used with MC dropout (Gal & Ghahramani 2016): T stochastic forward passes per test
   image, predictive entropy as the uncertainty, and the most uncertain images sent for human review.
3. Post-hoc calibration and conformal sets: a temperature (Guo et al. 2017) is fitted on a held-out calibration
   split (never the test images) for the weight-scaled network and for MC dropout; split conformal prediction sets
   (LAC and APS scores, calibrated on the same split) are checked for their 90% / 95% coverage on the test images.

Every number printed is computed by this run; seeds are fixed, so re-running prints the same table. The MLP and
its training step are ``jaxdrop.cli.training``'s, shared with the example scripts. Needs the ``examples`` extra
(scikit-learn for the data, optax for Adam; matplotlib for ``--plot``, tqdm for a progress bar).
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxdrop
from jaxdrop.cli import datasets, training
from jaxdrop.cli._extras import require
from jaxdrop.cli._table import markdown_table

HIDDEN = (256, 256)
NUM_CALIBRATION = 500  # held-out images per split for the temperature and the conformal threshold
ALPHAS = (0.10, 0.05)  # conformal miscoverage levels: target coverage 90% and 95%
CONFORMAL_SCORES = ("lac", "aps")
CONFIGS = (("no dropout", 0.0, 0.0), ("dropout 0.2 in / 0.5 hidden", 0.2, 0.5))
REVIEW_FRACTIONS = (0.0, 0.05, 0.10, 0.20)
# --quick (and the tests): fewer splits, fewer epochs at a higher learning rate, fewer MC samples
QUICK: dict[str, Any] = {"num_splits": 2, "epochs": 120, "learning_rate": 3e-3, "num_samples": 30}


def splits(seed: int, num_splits: int, num_train: int, num_calibration: int = NUM_CALIBRATION) -> dict[str, np.ndarray]:
    """``num_splits`` random train/calibration/test splits of the digits, stacked: ``x_train`` is
    ``(splits, num_train, 64)``; the calibration images are the ``num_calibration`` after the training ones."""
    images, labels = datasets.digits()
    inputs = images.reshape(len(images), -1)
    orders = [np.random.RandomState(seed + s).permutation(len(inputs)) for s in range(num_splits)]
    parts = {
        "train": np.stack([o[:num_train] for o in orders]),
        "cal": np.stack([o[num_train : num_train + num_calibration] for o in orders]),
        "test": np.stack([o[num_train + num_calibration :] for o in orders]),
    }
    return {
        f"{axis}_{part}": array[index]
        for part, index in parts.items()
        for axis, array in (("x", inputs), ("y", labels))
    }


def train_all(data, *, seed, epochs, batch_size, learning_rate, progress=True):
    """Trains one network per (split, row of ``CONFIGS``) in a single program: ``vmap`` over models whose dropout
    rates are traced values. Both configurations of a split start from the same initial weights."""
    optax = require("optax", "the demo's training")
    num_splits, num_train, num_inputs = data["x_train"].shape
    num_configs = len(CONFIGS)
    split_of_model = np.repeat(np.arange(num_splits), num_configs)
    rates = jnp.tile(jnp.array([[cfg[1], cfg[2]] for cfg in CONFIGS], jnp.float32), (num_splits, 1))
    init_keys = jax.vmap(lambda s: jax.random.key(seed + s))(jnp.asarray(split_of_model))
    params = jax.vmap(lambda k: training.init_mlp(k, (num_inputs, *HIDDEN, 10)))(init_keys)
    optimizer = optax.adam(learning_rate)
    opt_state = jax.vmap(optimizer.init)(params)
    steps_per_epoch = num_train // batch_size
    x_train, y_train = jnp.asarray(data["x_train"][split_of_model]), jnp.asarray(data["y_train"][split_of_model])

    def loss_fn(params, key, rate, xb, yb):
        logits = training.mlp(params, xb, key=key, input_rate=rate[0], hidden_rate=rate[1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    one_model = training.gradient_step(optimizer, loss_fn)

    def step(carry, step_index):
        params, opt_state, key = carry
        epoch_key = jax.random.fold_in(key, step_index // steps_per_epoch)
        order = jax.random.permutation(epoch_key, num_train)
        batch = jax.lax.dynamic_slice_in_dim(order, (step_index % steps_per_epoch) * batch_size, batch_size)
        dropout_key = jaxdrop.fold_in(key, "dropout", step_index)
        params, opt_state = jax.vmap(one_model, in_axes=(0, 0, None, 0, 0, 0))(
            params, opt_state, dropout_key, rates, x_train[:, batch], y_train[:, batch]
        )
        return (params, opt_state, key), None

    @jax.jit
    def run_chunk(params, opt_state, start, key):
        steps = start + jnp.arange(chunk_steps)
        (params, opt_state, _), _ = jax.lax.scan(step, (params, opt_state, key), steps)
        return params, opt_state

    total_steps = epochs * steps_per_epoch
    num_chunks = 10
    chunk_steps = max(1, total_steps // num_chunks)
    key = jax.random.key(seed + 1000)
    bar = training.progress(
        total=num_chunks * chunk_steps, desc=f"training {len(rates)} MLPs in one vmap", quiet=not progress
    )
    for chunk in range(num_chunks):
        params, opt_state = run_chunk(params, opt_state, chunk * chunk_steps, key)
        bar.update(chunk_steps)
    bar.close()
    return params, rates


def mc_predict(params, x, labels, *, key, rate, num_samples):
    """MC dropout with ``jaxdrop.mc.predict``: ``num_samples`` stochastic passes of every split's network at once,
    summarised (predictive mean, entropy, mutual information, ...) chunk by chunk; the sampled logits are kept
    (``samples``: ``(num_samples, splits, images, 10)``) for the temperature fit."""
    from jaxdrop import mc

    def classifier(sample_key, inputs):
        params, x = inputs
        return jax.vmap(lambda p, x: training.mlp(p, x, key=sample_key, input_rate=rate[0], hidden_rate=rate[1]))(
            params, x
        )

    return mc.predict(
        classifier, (params, x), key=key, num_samples=num_samples, chunk_size=25, labels=labels, return_samples=True
    )


def review_table(uncertainty, probs, labels, fractions=REVIEW_FRACTIONS) -> list[dict[str, float]]:
    """Accuracy on the images kept after ``jaxdrop.uncertainty.flag_for_review`` sends the most uncertain away."""
    from jaxdrop import uncertainty as unc

    correct = np.asarray(jnp.argmax(probs, -1) == labels)
    rows = []
    for fraction in fractions:
        flagged = np.asarray(unc.flag_for_review(uncertainty, budget=fraction if fraction > 0 else 0))
        rows.append(
            {
                "fraction": fraction,
                "num_review": int(flagged.sum()),
                "accuracy": float(correct[~flagged].mean()),
                "errors_caught": int((~correct[flagged]).sum()),
            }
        )
    return rows


@functools.partial(jax.jit, static_argnames=("mc_samples", "fit"))
def _calibration_metrics(cal_logits, cal_labels, test_logits, test_labels, *, mc_samples, fit):
    """Test accuracy, NLL, ECE and the temperature (1 without ``fit``) of one split: one compiled program."""
    from jaxdrop import uncertainty as unc

    temperature = unc.fit_temperature(cal_logits, cal_labels) if fit else jnp.float32(1.0)
    probs = unc.calibrated_probs(test_logits, temperature, mc_samples=mc_samples)
    accuracy = jnp.mean(jnp.argmax(probs, -1) == test_labels)
    ece = unc.expected_calibration_error(probs, test_labels)
    return jnp.stack([accuracy, unc.nll(probs, test_labels), ece, temperature])


def calibration_rows(cal, test) -> list[dict[str, Any]]:
    """Accuracy, NLL and ECE on the test images of each predictor, with and without a temperature fitted on the
    calibration images (`jaxdrop.uncertainty.fit_temperature`), mean over splits (``vmap``).

    ``cal`` and ``test`` hold ``"logits"`` (weight scaling, ``(splits, n, 10)``), ``"samples"`` (MC logits,
    ``(T, splits, n, 10)``) and ``"labels"``. MC dropout is tempered in the two ways the docstring of
    ``fit_temperature`` compares: each sample's logits, then the average; or the log of the averaged probabilities.
    """

    def log_mean(samples):
        return jnp.log(jax.nn.softmax(samples, -1).mean(0))

    predictors = {  # name: (logits, their split axis, whether they are MC samples, fit a temperature)
        "weight scaling": (lambda d: d["logits"], 0, False, False),
        "weight scaling + temperature": (lambda d: d["logits"], 0, False, True),
        "MC dropout": (lambda d: d["samples"], 1, True, False),
        "MC dropout + temperature (each sample)": (lambda d: d["samples"], 1, True, True),
        "MC dropout + temperature (the average)": (lambda d: log_mean(d["samples"]), 0, False, True),
    }
    rows = []
    for name, (logits_of, axis, mc_samples, fit) in predictors.items():
        evaluate = functools.partial(_calibration_metrics, mc_samples=mc_samples, fit=fit)
        per_split = jax.vmap(evaluate, in_axes=(axis, 0, axis, 0))(
            logits_of(cal), cal["labels"], logits_of(test), test["labels"]
        )
        accuracy, nll, ece, temperature = np.asarray(per_split).mean(0).tolist()
        rows.append(
            {"name": name, "accuracy": accuracy, "nll": nll, "ece": ece, "temperature": temperature if fit else None}
        )
    return rows


@functools.partial(jax.jit, static_argnames=("score",))
def _conformal_metrics(cal_probs, cal_labels, test_probs, test_labels, keys, alphas, *, score):
    """Coverage and mean set size ``(alphas, splits)`` of every alpha and split (``vmap`` over both; alpha is
    traced, so one compiled program per score)."""
    from jaxdrop import uncertainty as unc

    def one(alpha, cal_probs, cal_labels, test_probs, test_labels, key):
        sets = unc.conformal_sets(cal_probs, cal_labels, test_probs, alpha=alpha, score=score, key=key)
        return unc.set_coverage(sets, test_labels), unc.mean_set_size(sets)

    every_split = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0))
    return jax.vmap(every_split, in_axes=(0, None, None, None, None, None))(
        alphas, cal_probs, cal_labels, test_probs, test_labels, keys
    )


def conformal_rows(cal, test, *, key, alphas=ALPHAS, scores=CONFORMAL_SCORES) -> list[dict[str, Any]]:
    """Split conformal sets (`jaxdrop.uncertainty.conformal_sets`) calibrated on the calibration images of each
    split: empirical coverage and mean set size on its test images, mean over splits. APS is randomised with
    ``key`` (Romano et al. 2020): non-randomised APS counts each label's whole probability and gives far larger
    sets."""
    probs = {
        "weight scaling": lambda d: jax.nn.softmax(d["logits"], -1),
        "MC dropout": lambda d: jax.nn.softmax(d["samples"], -1).mean(0),
    }
    keys = jax.random.split(key, len(test["labels"]))
    rows = []
    for score in scores:
        for name, probs_of in probs.items():
            coverages, sizes = _conformal_metrics(
                probs_of(cal), cal["labels"], probs_of(test), test["labels"], keys, jnp.asarray(alphas), score=score
            )
            for alpha, coverage, size in zip(alphas, coverages, sizes, strict=True):
                rows.append(
                    {
                        "predictor": name,
                        "score": score,
                        "target": 1 - alpha,
                        "coverage": float(np.mean(coverage)),
                        "set_size": float(np.mean(size)),
                    }
                )
    return rows


def run(
    *,
    seed: int = 0,
    num_splits: int = 3,
    num_train: int = 300,
    epochs: int = 300,
    batch_size: int = 50,
    learning_rate: float = 1e-3,
    num_samples: int = 100,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs the demo and returns every number it prints (the tests assert on these)."""
    optax = require("optax", "the demo's training")
    start = time.perf_counter()
    data = splits(seed, num_splits, num_train)
    params, rates = train_all(
        data, seed=seed, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, progress=progress
    )
    num_configs = len(CONFIGS)
    results: dict[str, Any] = {
        "num_splits": num_splits,
        "num_train": num_train,
        "num_test": data["x_test"].shape[1],
        "num_calibration": data["x_cal"].shape[1],
        "models": [],
    }

    @jax.vmap
    def evaluate(p, x, y):
        logits = training.mlp(p, x, key=None, input_rate=0.0, hidden_rate=0.0, deterministic=True)
        return jnp.mean(jnp.argmax(logits, -1) == y), optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    model_split = np.repeat(np.arange(num_splits), num_configs)
    metrics = {
        name: [np.asarray(v).reshape(num_splits, num_configs) for v in evaluate(params, x, y)]
        for name, x, y in (
            ("train", data["x_train"][model_split], data["y_train"][model_split]),
            ("test", data["x_test"][model_split], data["y_test"][model_split]),
        )
    }
    for c, (name, *_) in enumerate(CONFIGS):
        train_acc, test_acc = metrics["train"][0][:, c], metrics["test"][0][:, c]
        results["models"].append(
            {
                "name": name,
                "train_accuracy": float(train_acc.mean()),
                "test_accuracy": float(test_acc.mean()),
                "test_accuracy_sd": float(test_acc.std()),
                "gap": float((train_acc - test_acc).mean()),
                "train_nll": float(metrics["train"][1][:, c].mean()),
                "test_nll": float(metrics["test"][1][:, c].mean()),
            }
        )

    dropout_models = np.arange(len(model_split)) % num_configs == num_configs - 1  # the last config, every split
    dropout_params = jax.tree.map(lambda a: a[dropout_models], params)
    # calibration and test images in one MC pass (one compiled program), split afterwards
    num_cal = data["x_cal"].shape[1]
    x_held_out = jnp.asarray(np.concatenate([data["x_cal"], data["x_test"]], axis=1))
    y_held_out = jnp.asarray(np.concatenate([data["y_cal"], data["y_test"]], axis=1))
    prediction = mc_predict(
        dropout_params, x_held_out, y_held_out, key=jax.random.key(seed + 2), rate=rates[-1], num_samples=num_samples
    )
    probs = np.asarray(prediction.probs[:, num_cal:]).reshape(-1, 10)  # every split's test images, pooled
    entropy = np.asarray(prediction.predictive_entropy[:, num_cal:]).reshape(-1)
    labels = data["y_test"].reshape(-1)
    results["mc"] = {
        "num_samples": num_samples,
        "accuracy": float(np.mean(probs.argmax(-1) == labels)),
        "nll": float(jnp.mean(prediction.nll[:, num_cal:])),
        "review": review_table(entropy, probs, labels),
    }
    logits = jax.vmap(lambda p, x: training.mlp(p, x, key=None, input_rate=0.0, hidden_rate=0.0, deterministic=True))(
        dropout_params, x_held_out
    )
    cal, test = (
        {"logits": logits[:, part], "samples": prediction.samples[:, :, part], "labels": y_held_out[:, part]}
        for part in (slice(None, num_cal), slice(num_cal, None))
    )
    results["calibration"] = calibration_rows(cal, test)
    results["conformal"] = conformal_rows(cal, test, key=jax.random.key(seed + 3))
    results["mean_probs"], results["entropy"], results["labels"] = probs, entropy, labels
    results["seconds"] = time.perf_counter() - start
    return results


def format_report(results: dict[str, Any]) -> str:
    """The demo's printed report: the two models side by side, then the review table of MC dropout."""
    models = [
        [
            m["name"],
            f"{m['train_accuracy']:.1%}",
            f"{m['test_accuracy']:.1%}",
            f"{100 * m['gap']:.1f}%",
            f"{m['train_nll']:.3f}",
            f"{m['test_nll']:.3f}",
        ]
        for m in results["models"]
    ]
    mc = results["mc"]
    review = [
        [f"{row['fraction']:.0%}", row["num_review"], row["errors_caught"], f"{row['accuracy']:.1%}"]
        for row in mc["review"]
    ]
    calibration = [
        [
            row["name"],
            f"{row['accuracy']:.1%}",
            f"{row['nll']:.3f}",
            f"{row['ece']:.3f}",
            "-" if row["temperature"] is None else f"{row['temperature']:.2f}",
        ]
        for row in results["calibration"]
    ]
    conformal = [
        [
            row["predictor"],
            row["score"].upper(),
            f"{row['target']:.0%}",
            f"{row['coverage']:.1%}",
            f"{row['set_size']:.2f}",
        ]
        for row in results["conformal"]
    ]
    return "\n".join(
        [
            f"Digits (scikit-learn, 8x8): {results['num_train']} training images, {results['num_calibration']} "
            f"calibration images, {results['num_test']} test images, {results['num_splits']} random splits (mean over "
            f"splits); MLP 64-{'-'.join(map(str, HIDDEN))}-10, Adam.",
            "",
            markdown_table(["model", "train acc", "test acc", "gap", "train NLL", "test NLL"], models),
            "",
            "(accuracy of the deterministic network: dropout off at test time, i.e. weight scaling)",
            "",
            f"MC dropout (T={mc['num_samples']} samples): test accuracy {mc['accuracy']:.1%}, NLL {mc['nll']:.3f}.",
            "Send the most uncertain test images (highest predictive entropy, pooled over splits) for human review:",
            "",
            markdown_table(["sent for review", "images", "errors caught", "accuracy on the rest"], review, "rrrr"),
            "",
            "Post-hoc calibration: a temperature fitted on the calibration images (never the test images):",
            "",
            markdown_table(["predictor", "test acc", "test NLL", "ECE (15 bins)", "temperature"], calibration),
            "",
            "Conformal prediction sets (split conformal, calibrated on the calibration images; coverage is guaranteed",
            "on average over calibration draws if calibration and test images are exchangeable; APS randomised), on",
            "the test images (an empty set says 'none of the classes is plausible enough'):",
            "",
            markdown_table(["predictor", "score", "target coverage", "coverage", "mean set size"], conformal),
            "",
            f"({results['seconds']:.0f} s on {jax.default_backend()})",
        ]
    )


def save_plot(results: dict[str, Any], path: str) -> None:
    """Two panels: predictive entropy of right vs wrong answers, and accuracy vs fraction sent for review."""
    matplotlib = require("matplotlib", "the demo's --plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs, labels, entropy = results["mean_probs"], results["labels"], results["entropy"]
    correct = np.argmax(probs, -1) == labels
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bins = np.linspace(0, entropy.max(), 30)
    left.hist(entropy[correct], bins=bins, alpha=0.7, label=f"correct ({correct.sum()} images)", density=True)
    left.hist(entropy[~correct], bins=bins, alpha=0.7, label=f"wrong ({(~correct).sum()} images)", density=True)
    left.set(
        xlabel="predictive entropy (nats)",
        ylabel="density (each group normalised)",
        title="Wrong answers have higher predictive entropy",
    )
    left.legend()
    fractions = [float(f) for f in np.linspace(0, 0.5, 51)]
    pooled = [100 * row["accuracy"] for row in review_table(entropy, probs, labels, fractions)]
    per_split = np.array(
        [
            [100 * row["accuracy"] for row in review_table(e, p, y, fractions)]
            for e, p, y in zip(
                *(np.split(a, results["num_splits"]) for a in (entropy, probs, labels)),
                strict=True,
            )
        ]
    )
    percent = 100 * np.asarray(fractions)
    right.fill_between(percent, per_split.min(0), per_split.max(0), alpha=0.25, label="range over the splits")
    right.plot(percent, pooled, lw=2, label=f"most uncertain first ({results['num_splits']} splits pooled)")
    right.axhline(pooled[0], color="gray", ls="--", label="random images sent (expected)")
    right.set(
        xlabel="% of test images sent for human review",
        ylabel="accuracy on the rest (%)",
        title="Reviewing the most uncertain raises accuracy",
    )
    right.legend(loc="lower right", fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options."""
    parser.add_argument("--quick", action="store_true", help="2 splits, 120 epochs, T=30: a fast check (~20 s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, initialisation and masks")
    parser.add_argument("--splits", type=int, help="random train/test splits, trained together (default 3)")
    parser.add_argument("--train-size", type=int, default=300, help="number of training images (default 300)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 300)")
    parser.add_argument("--samples", type=int, default=None, help="MC dropout samples T (default 100)")
    parser.add_argument("--plot", metavar="PATH", help="write an uncertainty figure (PNG) to PATH")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def execute(args: argparse.Namespace) -> int:
    """Runs the demo with the parsed options, prints its report and optionally writes the figure."""
    settings = dict(QUICK) if args.quick else {}
    for name, value in (("num_splits", args.splits), ("epochs", args.epochs), ("num_samples", args.samples)):
        if value is not None:
            settings[name] = value
    results = run(seed=args.seed, num_train=args.train_size, progress=not args.quiet, **settings)
    print(format_report(results))
    if args.plot:
        save_plot(results, args.plot)
        print(f"figure written to {args.plot}")
    return 0
