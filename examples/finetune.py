"""Example 10: fine-tuning a pre-trained network on a small new task with dropout, Mixout and R-Drop.

scikit-learn's 8x8 digits, split into two tasks: task A is the digits 0-4 (all their training images), task B the
digits 5-9 with only a few hundred labelled images. An MLP (64-128-128, ReLU) with a head for task A is
pre-trained on A without dropout; then its trunk and a new head for B are fine-tuned on the small B set (task A's
head stays frozen) with each recipe:

- no dropout; dropout 0.1 or 0.3 on the hidden layers (``jaxdrop.dropout``);
- Mixout (``jaxdrop.mixout``, Lee et al. 2020) at two rates: each weight falls back to its pre-trained value
  (for the new head, its initial value, as in the paper) instead of to zero;
- R-Drop (``jaxdrop.training.r_drop_loss``, Liang et al. 2021): dropout 0.1 and the symmetric KL between two
  dropout passes added to the loss.

Task-B test accuracy measures what fine-tuning achieves; task-A test accuracy through the fine-tuned trunk and the
frozen A head measures what it forgets (retention). Every recipe and seed (initialisation, the B subset, batch
order, masks) is trained in one ``vmap``: the recipe is a row of traced numbers (dropout rate, mixout rate, R-Drop
weight), so one program trains all of them, and the recipes of a seed share its pre-trained network and data.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
from jaxdrop import training
from jaxdrop.cli import datasets

# name -> (hidden dropout rate, mixout rate, R-Drop weight alpha)
RECIPES = {
    "no dropout": (0.0, 0.0, 0.0),
    "dropout 0.1": (0.1, 0.0, 0.0),
    "dropout 0.3": (0.3, 0.0, 0.0),
    "mixout 0.5": (0.0, 0.5, 0.0),
    "mixout 0.8": (0.0, 0.8, 0.0),
    "R-Drop (dropout 0.1, alpha 1)": (0.1, 0.0, 1.0),
}
NUM_CLASSES = 5


def init_params(key, hidden):
    trunk_key, head_a, head_b = jax.random.split(key, 3)
    return {
        "trunk": _common.init_mlp(trunk_key, [64, hidden, hidden]),
        "head_a": _common.init_mlp(head_a, [hidden, NUM_CLASSES])[0],
        "head_b": _common.init_mlp(head_b, [hidden, NUM_CLASSES])[0],
    }


def features(trunk, x, *, rate, key, deterministic=False):
    for i, layer in enumerate(trunk):
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
        layer_key = None if deterministic else jaxdrop.fold_in(key, i)
        x = jaxdrop.dropout(x, rate, key=layer_key, deterministic=deterministic)
    return x


def head(params, h):
    return h @ params["w"] + params["b"]


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def split_tasks(rng: np.random.RandomState, images, labels, num_b_train: int, seeds: int):
    """Task A (digits 0-4): a fixed train/test split. Task B (digits 5-9, labels 0-4): a fixed test set and, per
    seed, ``num_b_train`` training images drawn from the rest."""
    x = images.reshape(len(images), -1)
    a, b = labels < 5, labels >= 5
    order_a, order_b = rng.permutation(np.flatnonzero(a)), rng.permutation(np.flatnonzero(b))
    a_test, a_train = order_a[: len(order_a) // 3], order_a[len(order_a) // 3 :]
    b_test, b_pool = order_b[: len(order_b) // 2], order_b[len(order_b) // 2 :]
    b_train = np.stack([rng.choice(b_pool, num_b_train, replace=False) for _ in range(seeds)])
    return {
        "a_train": (x[a_train], labels[a_train]),
        "a_test": (x[a_test], labels[a_test]),
        "b_train": (x[b_train], labels[b_train] - 5),  # (seeds, n, 64), (seeds, n)
        "b_test": (x[b_test], labels[b_test] - 5),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8, help="seeds, all trained in one vmap")
    p.add_argument("--b-train", type=int, default=200, help="labelled task-B training images per seed")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--pretrain-steps", type=int, default=1500)
    p.add_argument("--finetune-steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (both phases)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.pretrain_steps, args.finetune_steps, args.b_train = 2, 150, 60, 100
    out = _common.out_dir(args)
    images, labels = datasets.digits()
    rng = np.random.RandomState(args.seed)
    data = split_tasks(rng, images, labels, args.b_train, args.seeds)
    seeds = jnp.arange(args.seeds) + args.seed
    optimizer = optax.adam(args.lr)

    # Phase 1: pre-train trunk + head A on task A, no dropout, one network per seed.
    a_x, a_y = (jnp.asarray(v) for v in data["a_train"])
    params = jax.jit(jax.vmap(lambda s: init_params(jax.random.key(s), args.hidden)))(seeds)

    def pretrain_loss(params, batch):
        h = features(params["trunk"], a_x[batch], rate=0.0, key=None, deterministic=True)
        return cross_entropy(head(params["head_a"], h), a_y[batch])

    pretrain_step = _common.gradient_step(optimizer, pretrain_loss)

    @jax.jit
    def pretrain(params):
        def step(carry, index):
            def one_seed(params, opt_state, seed):
                key = jaxdrop.fold_in(jax.random.key(seed), "pretrain", index)
                batch = jax.random.randint(key, (args.batch_size,), 0, len(a_y))
                return pretrain_step(params, opt_state, batch)

            return jax.vmap(one_seed)(*carry, seeds), None

        opt_state = jax.vmap(optimizer.init)(params)
        return jax.lax.scan(step, (params, opt_state), jnp.arange(args.pretrain_steps))[0][0]

    pretrained = pretrain(params)

    # Phase 2: fine-tune trunk + head B on the small task-B set, every (seed, recipe) in one vmap.
    recipes = jnp.asarray(list(RECIPES.values()), jnp.float32)  # (recipes, 3)
    b_x, b_y = (jnp.asarray(v) for v in data["b_train"])

    def tuned_part(params):
        return {"trunk": params["trunk"], "head_b": params["head_b"]}

    def finetune_loss(tuned, anchor, recipe, key, x, y):
        rate, mixout_rate, alpha = recipe
        # Mixout on every weight matrix (trunk and the new head); rate 0 leaves the weights as they are.
        mixed = jaxdrop.mixout(tuned, anchor, mixout_rate, key=jaxdrop.fold_in(key, "mixout"), where="w")
        logits = [
            head(mixed["head_b"], features(mixed["trunk"], x, rate=rate, key=jaxdrop.fold_in(key, "pass", i)))
            for i in range(2)
        ]
        first, second = (cross_entropy(logit, y) for logit in logits)
        r_drop = 0.5 * (first + second) + alpha * training.r_drop_loss(*logits)
        return jnp.where(alpha > 0, r_drop, first)  # the second pass only counts for R-Drop

    finetune_step = _common.gradient_step(optimizer, finetune_loss)
    test_sets = {name: tuple(jnp.asarray(v) for v in data[name]) for name in ("a_test", "b_test")}

    def evaluate(tuned, head_a):
        a_feat = features(tuned["trunk"], test_sets["a_test"][0], rate=0.0, key=None, deterministic=True)
        b_feat = features(tuned["trunk"], test_sets["b_test"][0], rate=0.0, key=None, deterministic=True)
        a_acc = jnp.mean(jnp.argmax(head(head_a, a_feat), -1) == test_sets["a_test"][1])
        b_acc = jnp.mean(jnp.argmax(head(tuned["head_b"], b_feat), -1) == test_sets["b_test"][1])
        return a_acc, b_acc

    num_evals = 10
    chunk = max(1, args.finetune_steps // num_evals)

    @jax.jit
    def finetune_chunk(tuned, opt_state, anchor, start):
        def step(carry, index):
            def one_seed(tuned, opt_state, anchor, seed, x, y):
                key = jaxdrop.fold_in(jax.random.key(seed), "finetune", index)
                batch = jax.random.randint(key, (args.batch_size,), 0, y.shape[0])

                def one_recipe(tuned, opt_state, recipe):
                    return finetune_step(tuned, opt_state, anchor, recipe, key, x[batch], y[batch])

                return jax.vmap(one_recipe)(tuned, opt_state, recipes)

            return jax.vmap(one_seed)(*carry, anchor, seeds, b_x, b_y), None

        return jax.lax.scan(step, (tuned, opt_state), start + jnp.arange(chunk))[0]

    anchor = tuned_part(pretrained)  # the weights Mixout falls back to: pre-trained trunk, initial head B

    @jax.jit
    def start_finetuning(anchor):
        tuned = jax.tree.map(lambda a: jnp.broadcast_to(a[:, None], (a.shape[0], len(recipes), *a.shape[1:])), anchor)
        return tuned, jax.vmap(jax.vmap(optimizer.init))(tuned)

    tuned, opt_state = start_finetuning(anchor)
    evaluate_all = jax.jit(jax.vmap(jax.vmap(evaluate, in_axes=(0, None)), in_axes=(0, 0)))
    before_a, _ = jax.jit(jax.vmap(evaluate))(anchor, pretrained["head_a"])
    history = [(0, *(np.asarray(v) for v in evaluate_all(tuned, pretrained["head_a"])))]
    bar = _common.progress(total=chunk * num_evals, desc=f"{args.seeds * len(recipes)} fine-tunings", quiet=args.quiet)
    for start in range(0, chunk * num_evals, chunk):
        tuned, opt_state = finetune_chunk(tuned, opt_state, anchor, start)
        history.append((start + chunk, *(np.asarray(v) for v in evaluate_all(tuned, pretrained["head_a"]))))
        bar.update(chunk)
    bar.close()
    return report(args, out, history, np.asarray(before_a), data, chunk * num_evals)


def report(args, out, history, before_a, data, steps_run) -> dict[str, Any]:
    names = list(RECIPES)
    final_a, final_b = history[-1][1], history[-1][2]  # (seeds, recipes)
    results = {}
    for i, name in enumerate(names):
        results[name] = {
            "b_acc": final_b[:, i].tolist(),
            "a_acc": final_a[:, i].tolist(),
            "forgetting": (before_a - final_a[:, i]).tolist(),
        }
    rows = []
    for i, name in enumerate(names):
        b_word, b_detail = _common.compare(final_b[:, i], final_b[:, 0])
        a_word, a_detail = _common.compare(final_a[:, i], final_a[:, 0])
        rows.append(
            (
                name,
                _common.mean_se(final_b[:, i], scale=100, fmt=".1f"),
                _common.mean_se(final_a[:, i], scale=100, fmt=".1f"),
                _common.mean_se(before_a - final_a[:, i], scale=100, fmt=".1f"),
                "–" if i == 0 else f"{_scaled(b_detail)} ({b_word})",
                "–" if i == 0 else f"{_scaled(a_detail)} ({a_word})",
            )
        )
    best = max(range(1, len(names)), key=lambda i: final_b[:, i].mean())
    best_b_word, best_b = _common.compare(final_b[:, best], final_b[:, 0])
    best_a_word, best_a = _common.compare(final_a[:, best], final_a[:, 0])
    retained = max(range(1, len(names)), key=lambda i: final_a[:, i].mean())
    kept_word, kept_detail = _common.compare(final_a[:, retained], final_a[:, 0])
    kept_b_word, kept_b_detail = _common.compare(final_b[:, retained], final_b[:, 0])
    n_a, n_b_test = len(data["a_train"][1]), len(data["b_test"][1])
    text = (
        "# Fine-tuning on a small task: dropout, Mixout, R-Drop "
        f"(examples/finetune.py{' --quick' if args.quick else ''})\n\n"
        f"Digits 0-4 (task A: {n_a} training, {len(data['a_test'][1])} test images) pre-train an MLP 64-{args.hidden}-"
        f"{args.hidden} with a task-A head ({args.pretrain_steps} Adam steps, no dropout; task-A test accuracy "
        f"{_common.mean_se(before_a, scale=100, fmt='.1f')}%). Its trunk and a new head are then fine-tuned for "
        f"{steps_run} Adam steps (lr {args.lr:g}, batch {args.batch_size}) on {args.b_train} labelled images of "
        f"digits 5-9 (task B; a different subset per seed, tested on {n_b_test} others). Task-A accuracy after "
        "fine-tuning goes through the fine-tuned trunk and the frozen task-A head; forgetting is its drop. "
        f"{args.seeds} seeds, mean ± standard error in %; differences to no dropout are paired by seed, and called "
        "higher or lower only beyond two standard errors.\n\n"
        + _common.markdown_table(
            ["recipe", "task B acc %", "task A acc % (retention)", "forgetting (points)", "B - none", "A - none"],
            rows,
            "lrrrrr",
        )
        + f"\n\nBest recipe on task B: {names[best]}, {_scaled(best_b)} points ({best_b_word}) on B and "
        f"{_scaled(best_a)} ({best_a_word}) on A. Best retention of task A: {names[retained]}, {_scaled(kept_detail)} "
        f"points ({kept_word}) on A and {_scaled(kept_b_detail)} ({kept_b_word}) on B.\n"
    )
    print(text)
    _common.write_text(out, "finetune.md", text)

    verdicts: dict[str, dict[str, str]] = {}
    for task, final in (("A", final_a), ("B", final_b)):
        words = [_common.compare(final[:, i], final[:, 0])[0] for i in range(1, len(names))]
        verdicts[task] = {
            word: ", ".join(name for name, said in zip(names[1:], words, strict=True) if said.startswith(word))
            or "no recipe"
            for word in ("higher", "lower", "level")
        }

    plt = _common.pyplot()
    fig, (curves, scatter) = plt.subplots(1, 2, figsize=(11, 5))
    steps = [h[0] for h in history]
    for i, name in enumerate(names):
        for column, style in ((2, "-"), (1, "--")):
            mean, error = _common.seed_stats(np.stack([h[column][:, i] for h in history]) * 100, axis=1)
            curves.plot(steps, mean, style, color=f"C{i}", label=name if column == 2 else None)
            if args.seeds > 1:
                curves.fill_between(steps, mean - 2 * error, mean + 2 * error, color=f"C{i}", alpha=0.15, lw=0)
        b_mean, b_error = _common.seed_stats(final_b[:, i] * 100)
        a_mean, a_error = _common.seed_stats(final_a[:, i] * 100)
        scatter.errorbar(a_mean, b_mean, xerr=2 * a_error, yerr=2 * b_error, fmt="o", color=f"C{i}", label=name)
    curves.plot([], [], "k-", label="task B (solid)")
    curves.plot([], [], "k--", label="task A (dashed)")
    a_fall = _common.compare(final_a[:, 0], before_a)[0]
    curves.set(
        xlabel="fine-tuning step",
        ylabel="test accuracy %",
        title=f"While fine-tuning (solid: task B, dashed: task A);\nno dropout ends {a_fall} on A than before",
    )
    curves.title.set_fontsize(9)
    curves.legend(fontsize=7)
    scatter.set(
        xlabel="task A accuracy after fine-tuning % (retention)",
        ylabel="task B accuracy %",
        title=f"After {steps_run} steps, ± 2 s.e. over {args.seeds} seeds",
    )
    scatter.title.set_fontsize(9)
    verdict = (
        f"Task A retention vs no dropout (paired by seed): lower for {verdicts['A']['lower']}; level for "
        f"{verdicts['A']['level']}; higher for {verdicts['A']['higher']}. Task B vs no dropout: higher for "
        f"{verdicts['B']['higher']}; lower for {verdicts['B']['lower']}."
    )
    fig.suptitle(textwrap.fill(verdict, 150), fontsize=9)
    scatter.legend(fontsize=7)
    _common.save_figure(fig, out, "finetune.png")
    return results


def _scaled(detail: str) -> str:
    """``"+0.031 ± 0.004"`` (fractions) as percentage points ``"+3.1 ± 0.4"``."""
    parts = detail.split(" ± ")
    values = [float(part) * 100 for part in parts]
    if len(values) == 1:
        return f"{values[0]:+.1f}"
    return f"{values[0]:+.1f} ± {values[1]:.1f}"


if __name__ == "__main__":
    main()
    sys.exit(0)
