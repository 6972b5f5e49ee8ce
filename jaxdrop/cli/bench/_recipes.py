"""Training recipes that should save time or cost little: LayerDrop, PatchDropout, Mixout (``--sections recipes``).

Three groups, each a training step (forward and backward: ``grad`` of a loss with respect to every parameter),
its rows measured in alternation (``measure_group``):

- LayerDrop, rate 0.5, over 12 pre-norm residual MLP blocks, against the same 12 blocks without it: the Python
  loop of ``lax.cond`` (``layer_drop``), the ``scan`` with a ``cond`` per layer and the ``scan`` over the gathered
  kept layers (``scan_layer_drop``). Each call draws a new key, so the number of layers run varies from call to
  call (binomial for the ``cond`` forms); a sample averages ``CALLS_PER_SAMPLE`` calls, each with its own key.
- PatchDropout keeping 50% of 256 patch tokens (plus a class token) in front of a small vision transformer,
  against all tokens.
- Mixout (rate 0.5, towards pre-trained weights) against DropConnect (``dropconnect_params``, rate 0.5) on the
  weights of an MLP, and the same step without weight dropout.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxdrop
from jaxdrop.cli._table import markdown_table
from jaxdrop.cli.bench._dropout import find
from jaxdrop.cli.bench._timing import Row, Section, Settings, block, fmt_ratio, fmt_spread, measure_group

RATE = 0.5
CALLS_PER_SAMPLE = 8
LAYER_GROUP, PATCH_GROUP, MIXOUT_GROUP = "LayerDrop", "PatchDropout", "Mixout"
NO_LAYER_DROP = "no LayerDrop (12 blocks, Python loop)"
NO_LAYER_DROP_SCAN = "no LayerDrop (12 blocks, scan)"
LOOP = "layer_drop 0.5 (Python loop of lax.cond)"
SCAN_COND = "scan_layer_drop 0.5 (scan, cond per layer)"
SCAN_GATHER = "scan_layer_drop 0.5 (scan over 6 gathered layers)"
ALL_TOKENS = "all 256 tokens"
HALF_TOKENS = "patch_dropout keep 0.5"
NO_WEIGHT_DROP = "no weight dropout"
DROPCONNECT = "dropconnect_params 0.5"
MIXOUT = "mixout 0.5"


def _sizes(settings: Settings) -> dict[str, Any]:
    if settings.tiny:
        return {"blocks": 4, "rows": 16, "width": 16, "tokens": 16, "vit_width": 16, "vit_blocks": 1, "batch": 2,
                "mlp": 32}  # fmt: skip
    return {"blocks": 12, "rows": 256, "width": 256, "tokens": 256, "vit_width": 128, "vit_blocks": 4, "batch": 8,
            "mlp": 1024}  # fmt: skip


def _normal(seed: int, shape: tuple[int, ...], scale: float) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, jnp.float32)


def _norm(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(x**2, -1, keepdims=True) + 1e-6)


def _keyed_row(labels: dict[str, Any], fn: Callable[..., Any], *args: Any, settings: Settings) -> Row:
    """A compiled step that gets a new key every call (a seed counter), averaged over several calls per sample."""
    executable = jax.jit(fn).lower(*args, np.uint32(0)).compile(settings.compiler_options)
    seeds = itertools.count()
    row = Row(labels, lambda: block(executable(*args, np.uint32(next(seeds) % 2**32))))
    row.calls_per_sample = 1 if settings.tiny else CALLS_PER_SAMPLE
    return row


def _layer_drop_rows(settings: Settings, sizes: dict[str, Any]) -> list[Row]:
    blocks, width = sizes["blocks"], sizes["width"]
    # The loop forms take a list of per-layer parameters (separate arrays, as a Python loop of layers has them);
    # the scan forms take the same values stacked. Each is compared with the same form without LayerDrop.
    stacked = {
        "up": _normal(0, (blocks, width, 4 * width), width**-0.5),
        "down": _normal(1, (blocks, 4 * width, width), (4 * width) ** -0.5 / blocks),
    }
    x = _normal(2, (sizes["rows"], width), 1.0)

    def block_fn(layer, x):
        return x + jax.nn.gelu(_norm(x) @ layer["up"]) @ layer["down"]

    per_layer = [jax.tree.map(lambda p, i=i: p[i], stacked) for i in range(blocks)]

    def loop(params, x, seed, rate):
        layers = [lambda x, layer=layer: block_fn(layer, x) for layer in params]
        return jaxdrop.layer_drop(layers, x, rate, key=jax.random.key(seed))

    def scan(mode, rate=RATE):
        return lambda params, x, seed: jaxdrop.scan_layer_drop(
            block_fn, params, x, rate, key=jax.random.key(seed), mode=mode
        )

    forms: dict[str, tuple[Callable[..., jax.Array], Any]] = {
        NO_LAYER_DROP: (lambda params, x, seed: loop(params, x, seed, 0.0), per_layer),
        LOOP: (lambda params, x, seed: loop(params, x, seed, RATE), per_layer),
        NO_LAYER_DROP_SCAN: (scan("cond", 0.0), stacked),
        SCAN_COND: (scan("cond"), stacked),
        SCAN_GATHER: (scan("gather"), stacked),
    }
    rows = []
    for name, (forward, params) in forms.items():
        step = jax.grad(lambda params, x, seed, forward=forward: jnp.mean(forward(params, x, seed) ** 2))
        label = name.replace("12", str(blocks)).replace("6 gathered", f"{round(blocks * (1 - RATE))} gathered")
        labels = {"group": LAYER_GROUP, "impl": name, "label": label}
        rows.append(_keyed_row(labels, step, params, x, settings=settings))
    return rows


BASELINES = {
    LOOP: NO_LAYER_DROP,
    NO_LAYER_DROP_SCAN: NO_LAYER_DROP_SCAN,
    SCAN_COND: NO_LAYER_DROP_SCAN,
    SCAN_GATHER: NO_LAYER_DROP_SCAN,
}


def _patch_rows(settings: Settings, sizes: dict[str, Any]) -> list[Row]:
    width, depth, tokens = sizes["vit_width"], sizes["vit_blocks"], sizes["tokens"]
    heads = 4
    params = {
        "qkv": _normal(3, (depth, width, 3 * width), width**-0.5),
        "out": _normal(4, (depth, width, width), width**-0.5 / depth),
        "up": _normal(5, (depth, width, 4 * width), width**-0.5),
        "down": _normal(6, (depth, 4 * width, width), (4 * width) ** -0.5 / depth),
        "cls": _normal(7, (1, 1, width), 0.02),
    }
    patches = _normal(8, (sizes["batch"], tokens, width), 1.0)

    def encoder_block(x, layer):
        batch, length, _ = x.shape
        q, k, v = jnp.split((_norm(x) @ layer["qkv"]).reshape(batch, length, 3 * heads, -1), 3, axis=2)
        attended = jax.nn.dot_product_attention(q, k, v).reshape(batch, length, width)
        x = x + attended @ layer["out"]
        return x + jax.nn.gelu(_norm(x) @ layer["up"]) @ layer["down"], None

    def vit_loss(params, patches, seed, keep):
        cls = jnp.broadcast_to(params["cls"], (patches.shape[0], 1, width))
        x = jnp.concatenate([cls, patches], axis=1)
        if keep < 1.0:
            x = jaxdrop.patch_dropout(x, keep, key=jax.random.key(seed), num_prefix_tokens=1)
        layers = {name: params[name] for name in ("qkv", "out", "up", "down")}
        x = jax.lax.scan(encoder_block, x, layers)[0]
        return jnp.mean(_norm(x[:, 0]) ** 2)

    rows = []
    for name, keep in ((ALL_TOKENS, 1.0), (HALF_TOKENS, 0.5)):
        step = jax.grad(lambda params, patches, seed, keep=keep: vit_loss(params, patches, seed, keep))
        label = name.replace("256", str(tokens))
        rows.append(_keyed_row({"group": PATCH_GROUP, "impl": name, "label": label}, step, params, patches,
                               settings=settings))  # fmt: skip
    return rows


def _mixout_rows(settings: Settings, sizes: dict[str, Any]) -> list[Row]:
    width = sizes["mlp"]
    params = {f"dense_{i}": {"kernel": _normal(10 + i, (width, width), width**-0.5), "bias": jnp.zeros(width)}
              for i in range(3)}  # fmt: skip
    pretrained = jax.tree.map(lambda p: p * 0.9, params)
    x = _normal(20, (sizes["rows"] // 2, width), 1.0)

    def mlp_loss(params, x):
        for i in range(3):
            x = jax.nn.relu(x @ params[f"dense_{i}"]["kernel"] + params[f"dense_{i}"]["bias"])
        return jnp.mean(x**2)

    transforms: dict[str, Callable[..., Any]] = {
        NO_WEIGHT_DROP: lambda params, seed: params,
        DROPCONNECT: lambda params, seed: jaxdrop.dropconnect_params(params, RATE, key=jax.random.key(seed)),
        MIXOUT: lambda params, seed: jaxdrop.mixout(params, pretrained, RATE, key=jax.random.key(seed)),
    }
    rows = []
    for name, transform in transforms.items():
        step = jax.grad(lambda params, x, seed, transform=transform: mlp_loss(transform(params, seed), x))
        rows.append(_keyed_row({"group": MIXOUT_GROUP, "impl": name, "label": name}, step, params, x,
                               settings=settings))  # fmt: skip
    return rows


def recipes_section(settings: Settings) -> Section:
    """Training-step times of LayerDrop, PatchDropout and Mixout against their baselines (forward+backward)."""
    sizes = _sizes(settings)
    section = Section(
        "recipes",
        f"Training recipes: step time (grad of a loss, f32) of LayerDrop over {sizes['blocks']} blocks, PatchDropout "
        f"on {sizes['tokens']} tokens and Mixout against their baselines",
    )
    lines = []
    for group, make, baseline in (
        (LAYER_GROUP, _layer_drop_rows, NO_LAYER_DROP),
        (PATCH_GROUP, _patch_rows, ALL_TOKENS),
        (MIXOUT_GROUP, _mixout_rows, DROPCONNECT),
    ):
        rows = make(settings, sizes)
        measure_group(rows, settings.repeats, min_sample_s=settings.min_sample_s)
        section.rows += rows
        for row in rows:
            reference = find(rows, impl=BASELINES.get(row.labels["impl"], baseline))
            ratio = fmt_ratio(row.median_s, reference.median_s if reference else None)
            lines.append([group, row.labels["label"], fmt_spread(row), ratio])
    section.markdown = markdown_table(["recipe", "step", "ms per step", "x baseline"], lines, "llrr")
    section.notes += [
        f"LayerDrop: {sizes['blocks']} pre-norm residual MLP blocks (width {sizes['width']}, hidden "
        f"{4 * sizes['width']}) on {sizes['rows']} rows; PatchDropout: a class token and {sizes['tokens']} patch "
        f"tokens of width {sizes['vit_width']}, {sizes['vit_blocks']} encoder blocks (4 heads), batch "
        f"{sizes['batch']}; Mixout: 3 dense layers {sizes['mlp']}x{sizes['mlp']} on {sizes['rows'] // 2} rows.",
        "Baselines (x baseline): the same form without LayerDrop (loop or scan), all tokens, DropConnect; a new key "
        "every call, "
        f"{1 if settings.tiny else CALLS_PER_SAMPLE} calls per sample; median (min–max) of the samples, rows "
        "measured in alternation, order rotated each repeat.",
    ]
    return section


def recipes_targets(section: Section | None, tiny: bool) -> list[dict[str, Any]]:
    """The issue's three targets, in the runner's target format; n/a when the section did not run."""
    targets: list[dict[str, Any]] = []
    rows = section.rows if section is not None else []

    def ratio(impl: str, baseline: str) -> float | None:
        row, reference = find(rows, impl=impl), find(rows, impl=baseline)
        if row and reference and row.median_s and reference.median_s:
            return row.median_s / reference.median_s
        return None

    def add(name: str, required: str, limit: float, measured: float | None, detail: str) -> None:
        passed = None if measured is None else measured <= limit
        status = "n/a" if passed is None else ("PASS" if passed else "FAIL")
        if tiny and passed is not None:
            status, detail = "not judged (tiny)", detail + " (tiny sizes: a smoke test, not the target shapes)"
        targets.append({"target": name, "required": required, "measured": measured, "status": status, "detail": detail})

    loop = ratio(LOOP, NO_LAYER_DROP)
    scan_cond, gather = (ratio(impl, NO_LAYER_DROP_SCAN) for impl in (SCAN_COND, SCAN_GATHER))
    detail = ", ".join(
        f"{name} / plain scan: {value:.2f}x"
        for name, value in (("scan+cond", scan_cond), ("gather", gather))
        if value is not None
    )
    add("recipes: LayerDrop 0.5 over 12 blocks / no LayerDrop, step (loop of cond)", "<= 0.65x", 0.65, loop, detail)
    add("recipes: PatchDropout keep 0.5 of 256 tokens / all tokens, fwd+bwd", "<= 0.6x", 0.6,
        ratio(HALF_TOKENS, ALL_TOKENS), "")  # fmt: skip
    mixout_detail = ""
    plain = ratio(NO_WEIGHT_DROP, DROPCONNECT)
    if plain is not None:
        mixout_detail = f"no weight dropout: {plain:.2f}x DropConnect"
    add("recipes: Mixout step / DropConnect step", "<= 1.2x", 1.2, ratio(MIXOUT, DROPCONNECT), mixout_detail)
    return targets
