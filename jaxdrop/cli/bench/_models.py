"""Model-level benchmark sections: a transformer training step, Monte Carlo prediction, the variant family."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp

import jaxdrop
from jaxdrop.cli._table import markdown_table
from jaxdrop.cli.bench._dropout import (
    FWD,
    FWD_BWD,
    SPATIAL_FLAX,
    SPATIAL_OURS,
    compiled_row,
    find,
    forward,
    forward_backward,
    optional_module,
    shape_text,
)
from jaxdrop.cli.bench._timing import (
    Row,
    Section,
    Settings,
    block,
    dropout_share_cells,
    fmt_ratio,
    fmt_spread,
    measure_group,
    paired_ratios,
)

# --------------------------------------------------------------------------------------------------------------
# Transformer training step


def _transformer_sizes(settings: Settings) -> dict[str, int]:
    if settings.tiny:
        return {"batch": 2, "seq": 8, "d_model": 16, "heads": 2, "layers": 1, "vocab": 32}
    if settings.backend == "cpu":
        return {"batch": 8, "seq": 128, "d_model": 256, "heads": 4, "layers": 2, "vocab": 1024}
    return {"batch": 32, "seq": 512, "d_model": 768, "heads": 12, "layers": 6, "vocab": 8192}


def _make_transformer(sizes: dict[str, int], impl: str, rate: float):
    """A pre-LN decoder with dropout on embeddings, attention weights, attention output, MLP hidden and output.

    ``impl`` picks the one thing that differs between rows: "none", "flax" (``nn.Dropout``) or "jaxdrop".
    Both dropout implementations draw their key with ``make_rng("dropout")``, so key handling costs the same.
    """
    import flax.linen as nn

    class Drop(nn.Module):
        @nn.compact
        def __call__(self, x):
            if impl == "none":
                return x
            if impl == "flax":
                return nn.Dropout(rate, deterministic=False)(x)
            return jaxdrop.dropout(x, rate, key=self.make_rng("dropout"))

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            d_model, heads = sizes["d_model"], sizes["heads"]
            y = nn.LayerNorm()(x)
            qkv = nn.DenseGeneral((3, heads, d_model // heads))(y)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d_model // heads).astype(x.dtype)
            causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
            weights = Drop()(jax.nn.softmax(jnp.where(causal, logits, -1e9), axis=-1))
            attended = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
            x = x + Drop()(nn.DenseGeneral(d_model, axis=(-2, -1))(attended))
            y = nn.Dense(4 * d_model)(nn.LayerNorm()(x))
            y = nn.Dense(d_model)(Drop()(nn.gelu(y)))
            return x + Drop()(y)

    class Transformer(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(sizes["vocab"], sizes["d_model"])(tokens)
            x = x + self.param("pos", nn.initializers.normal(0.02), (sizes["seq"], sizes["d_model"]))
            x = Drop()(x)
            for _ in range(sizes["layers"]):
                x = Block()(x)
            return nn.Dense(sizes["vocab"])(nn.LayerNorm()(x))

    return Transformer()


def transformer_section(settings: Settings) -> Section:
    """A training step (forward, backward, AdamW) with dropout everywhere: the share of the step spent in dropout."""
    sizes = _transformer_sizes(settings)
    rate = 0.1
    section = Section(
        "transformer",
        f"Transformer training step, dropout {rate} everywhere ("
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + ")",
    )
    optax, reason = optional_module("optax")
    if optax is None:
        section.notes.append(f'Not run: {reason}; the AdamW step needs it: pip install "jaxdrop[compare]".')
        return section
    tokens = jax.random.randint(jax.random.key(0), (sizes["batch"], sizes["seq"]), 0, sizes["vocab"])
    # The smoke test steps with SGD: AdamW's update doubles the compile time of a step that runs in microseconds.
    optimizer = optax.sgd(1e-3) if settings.tiny else optax.adamw(1e-3)
    # Dropout has no parameters, so one initialisation serves the three models; jit keeps init to one compile.
    params = jax.jit(_make_transformer(sizes, "none", rate).init)(jax.random.key(1), tokens)
    state = jax.jit(optimizer.init)(params)
    rows = []
    for impl in ("none", "flax", "jaxdrop"):
        model = _make_transformer(sizes, impl, rate)

        def step(params, state, tokens, key, model=model):
            def loss_fn(params):
                logits = model.apply(params, tokens, rngs={"dropout": key})
                return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        label = {"none": "no dropout", "flax": "flax.linen.Dropout", "jaxdrop": "jaxdrop.dropout (fast)"}[impl]
        # Same inputs every call: the step is a pure function, so timing does not depend on training progress.
        step_args = (params, state, tokens, jax.random.key(3))
        rows.append(compiled_row({"impl": label}, step, *step_args, options=settings.compiler_options))
    # The share is a small difference of two noisy step times: three times the repeats (each is only one step).
    measure_group(rows, 3 * settings.repeats, min_sample_s=settings.min_sample_s)
    section.rows = rows
    lines = [[row.labels["impl"], *cells] for row, cells in zip(rows, dropout_share_cells(rows), strict=True)]
    section.summary |= {name: rows[i].labels["dropout_share"] for i, name in ((1, "flax_share"), (2, "jaxdrop_share"))}
    header = ["dropout", "step ms", "x no-dropout step", "share in dropout", "share, from the minima"]
    section.markdown = markdown_table(header, lines)
    section.notes.append(
        "Share in dropout = (step with dropout - step without) / step without, from the medians and from the "
        "minima (on a loaded machine the minima are the steadier estimate of a small difference); the three steps "
        "were timed in alternation. The model, optimizer (AdamW) and inputs are identical; only the dropout call "
        "differs."
    )
    return section


# --------------------------------------------------------------------------------------------------------------
# Monte Carlo dropout


def _mc_sizes(settings: Settings) -> dict[str, int]:
    if settings.tiny:
        return {"batch": 4, "inputs": 8, "hidden": 16, "classes": 3}
    if settings.backend == "cpu":
        return {"batch": 128, "inputs": 784, "hidden": 1024, "classes": 10}
    return {"batch": 1024, "inputs": 784, "hidden": 4096, "classes": 10}


def _make_mlp(sizes: dict[str, int], dropout_layer: Any, rate: float):
    """Three hidden ReLU layers, dropout only before the classification head."""
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, deterministic: bool = True):
            for _ in range(3):
                x = nn.relu(nn.Dense(sizes["hidden"])(x))
            x = dropout_layer(rate)(x, deterministic=deterministic)
            return nn.Dense(sizes["classes"])(x)

    return MLP()


FUNCTION_SAMPLES = "jaxdrop.mc.predict, function_samples=True"
PAIRED_REPEATS = 25  # back-to-back pairs for the function-samples target (about 4 s on 2 CPU cores)


def mc_section(settings: Settings) -> Section:
    """MC dropout predictions: jaxdrop.mc against a Python loop over keys and ``vmap`` over keys of a flax model."""
    import flax.linen as nn

    import jaxdrop.linen

    sizes = _mc_sizes(settings)
    rate = 0.5
    title = "Monte Carlo dropout prediction, 3-hidden-layer MLP, dropout before the head ("
    section = Section("mc", title + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f", rate {rate})")
    inputs = jax.random.normal(jax.random.key(0), (sizes["batch"], sizes["inputs"]))
    flax_model = _make_mlp(sizes, nn.Dropout, rate)
    jaxdrop_model = _make_mlp(sizes, jaxdrop.linen.Dropout, rate)
    variables = jax.jit(flax_model.init)(jax.random.key(1), inputs)  # both models have the same parameter tree
    key = jax.random.key(2)
    counts = (50,) if settings.tiny or settings.quick else (50, 1000)
    chunk = 50
    dropout_on = {"deterministic": False}

    def flax_apply(variables, inputs, key):
        return flax_model.apply(variables, inputs, deterministic=False, rngs={"dropout": key})

    deterministic = jax.jit(lambda v, x: flax_model.apply(v, x, deterministic=True))
    single = jax.jit(flax_apply)
    lines = []
    paired: list[float] = []
    for num_samples in counts:
        labels = {"samples": num_samples}

        def predict(variables, inputs, key, num_samples=num_samples, chunk_size=None, function_samples=False):
            return jaxdrop.mc.predict(
                jaxdrop_model,
                inputs,
                key=key,
                num_samples=num_samples,
                variables=variables,
                apply_kwargs=dropout_on,
                chunk_size=chunk_size,
                function_samples=function_samples,
            )

        def sample(variables, inputs, key, num_samples=num_samples):
            def per_sample(sample_key, variables, inputs):
                return jaxdrop_model.apply(variables, inputs, deterministic=False, rngs={"dropout": sample_key})

            return jaxdrop.mc.sample(per_sample, variables, inputs, key=key, num_samples=num_samples)

        def flax_vmap(variables, inputs, key, num_samples=num_samples):
            keys = jax.random.split(key, num_samples)
            return jax.vmap(flax_apply, in_axes=(None, None, 0))(variables, inputs, keys)

        def python_loop(num_samples=num_samples):
            keys = jax.random.split(key, num_samples)
            return block(jnp.stack([single(variables, inputs, sample_key) for sample_key in keys]))

        # Each T is its own group, timed in alternation with one deterministic forward (the ratios' baseline).
        options = settings.compiler_options
        baseline_labels = {**labels, "impl": "one deterministic forward"}
        rows = [compiled_row(baseline_labels, deterministic, variables, inputs, options=options)]
        rows.append(
            compiled_row({**labels, "impl": "jaxdrop.mc.predict"}, predict, variables, inputs, key, options=options)
        )
        if num_samples > chunk:
            streaming = functools.partial(predict, chunk_size=chunk)
            impl = f"jaxdrop.mc.predict, chunk_size={chunk} (streaming)"
            rows.append(compiled_row({**labels, "impl": impl}, streaming, variables, inputs, key, options=options))
        if num_samples == 50:  # one mask per sample shared by the batch (issue 15's target: <= 1.2x the default)
            shared = functools.partial(predict, function_samples=True)
            impl = FUNCTION_SAMPLES
            rows.append(compiled_row({**labels, "impl": impl}, shared, variables, inputs, key, options=options))
        rows.append(
            compiled_row({**labels, "impl": "jaxdrop.mc.sample"}, sample, variables, inputs, key, options=options)
        )
        vmap_labels = {**labels, "impl": "flax.linen: jit(vmap over keys)"}
        rows.append(compiled_row(vmap_labels, flax_vmap, variables, inputs, key, options=options))
        loop_row = Row({**labels, "impl": "flax.linen: Python loop over keys (jit per call)"}, python_loop)
        loop_row.value = rows[0].value
        loop_row.warmup = 0 if num_samples > 50 else None  # 1000 calls of an already compiled function
        rows.append(loop_row)
        # A Python loop of T=1000 calls takes seconds per sample: fewer repeats for that group.
        repeats = settings.repeats if num_samples <= 50 else max(3, settings.repeats // 2)
        measure_group(rows, repeats, min_sample_s=settings.min_sample_s)
        shared_row, default_row = find(rows, impl=FUNCTION_SAMPLES), find(rows, impl="jaxdrop.mc.predict")
        if shared_row is not None and default_row is not None:  # the target's ratio, from calls back to back
            paired = paired_ratios(shared_row, default_row, 3 if settings.tiny else PAIRED_REPEATS)
        section.rows += rows
        baseline = rows[0].median_s
        for row in rows:
            memory = "–" if row.value is None else f"{row.value / 2**20:.1f}"
            cells = [row.labels["impl"], str(num_samples if row is not rows[0] else 1), fmt_spread(row)]
            lines.append([*cells, fmt_ratio(row.median_s, baseline), memory])
    header = ["method", "T", "ms", "x one deterministic forward", "temp MiB (compiled)"]
    section.markdown = markdown_table(header, lines)
    rows = section.rows
    deterministic_row = find(rows, impl="one deterministic forward", samples=50)
    deterministic_s = deterministic_row.median_s if deterministic_row else None
    target = find(rows, impl="jaxdrop.mc.predict", samples=50)
    if target is not None and target.median_s and deterministic_s:
        section.summary["mc_t50_over_deterministic"] = target.median_s / deterministic_s
        section.summary["mc_detail"] = (
            f"T=50 predict {target.median_s * 1e3:.3g} ms vs one deterministic forward {deterministic_s * 1e3:.3g} ms"
        )
    function_row = find(rows, impl=FUNCTION_SAMPLES, samples=50)
    if target is not None and function_row is not None and paired and target.median_s and function_row.median_s:
        quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
        section.summary["mc_function_samples_over_default"] = quartiles[1]
        section.summary["mc_function_samples_ratios"] = paired
        section.summary["mc_function_samples_detail"] = (
            f"median of {len(paired)} paired ratios {quartiles[1]:.2f}x (quartiles {quartiles[0]:.2f}-"
            f"{quartiles[2]:.2f}x); row medians {function_row.median_s * 1e3:.3g} ms vs {target.median_s * 1e3:.3g} ms"
        )
    section.notes.append(
        "jaxdrop rows use `jaxdrop.linen.Dropout`, flax rows `flax.linen.Dropout`, with identical parameters. "
        "`predict` also computes the summaries (mean probabilities, entropy, mutual information); `sample` and the "
        "flax rows return the raw (T, batch, classes) logits. Temp MiB: `memory_analysis()` of the compiled "
        "function (for the Python loop: of one call). Each T was timed in its own group, in alternation with "
        f"the deterministic forward above it. The function-samples target is the median of {len(paired)} ratios "
        "of two calls made back to back (function samples, default; order alternating), taken after the group: a "
        "ratio of two medians moves with the load between their samples."
    )
    return section


# --------------------------------------------------------------------------------------------------------------
# Variant family


def _variant_sizes(settings: Settings) -> dict[str, tuple[int, ...]]:
    if settings.tiny:
        return {"feature map": (2, 8, 8, 4), "tokens": (2, 4, 8), "attention": (1, 8, 2, 4)}
    if settings.backend == "cpu":
        return {"feature map": (32, 64, 64, 64), "tokens": (64, 256, 512), "attention": (8, 512, 8, 64)}
    return {"feature map": (128, 64, 64, 128), "tokens": (256, 512, 768), "attention": (32, 1024, 16, 64)}


def timm_drop_path(x: jax.Array, key: jax.Array, rate: float) -> jax.Array:
    """timm's ``drop_path`` in ``jax.numpy``: one Bernoulli per example, kept examples scaled by ``1 / keep``."""
    keep_prob = 1.0 - rate
    keep = jax.random.bernoulli(key, keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x * (keep.astype(x.dtype) / keep_prob)


def reference_dropblock(x: jax.Array, key: jax.Array, rate: float, block_size: int) -> jax.Array:
    """DropBlock as in Ghiasi et al. 2018 (Algorithm 1) for NHWC input, one mask per example and channel.

    Seeds are drawn with probability gamma where a whole block fits, expanded to ``block_size`` squares by a max
    pool, and the kept activations are renormalised by ``count / count_ones``.
    """
    _, height, width, _ = x.shape
    gamma = rate / block_size**2 * (height * width) / ((height - block_size + 1) * (width - block_size + 1))
    rows_ok = (jnp.arange(height) >= block_size // 2) & (jnp.arange(height) < height - (block_size - 1) // 2)
    cols_ok = (jnp.arange(width) >= block_size // 2) & (jnp.arange(width) < width - (block_size - 1) // 2)
    valid = (rows_ok[:, None] & cols_ok[None, :])[None, :, :, None]
    seeds = (jax.random.bernoulli(key, gamma, x.shape) & valid).astype(x.dtype)
    window = (1, block_size, block_size, 1)
    block_mask = jax.lax.reduce_window(seeds, jnp.array(0, x.dtype), jax.lax.max, window, (1, 1, 1, 1), "SAME")
    keep = 1 - block_mask
    return x * keep * (keep.size / jnp.sum(keep))


Impls = dict[str, Callable[..., jax.Array]]
VariantImpls = dict[str, Impls]


def _variant_impls(rate: float, block_size: int, per_head_masks: bool) -> VariantImpls:
    """variant -> {implementation -> (x, key) -> y}."""
    import flax.linen as nn

    def jaxdrop_call(name: str, generator: str = "fast", **kwargs: Any) -> Callable[..., jax.Array]:
        fn = getattr(jaxdrop, name)
        return lambda x, key: fn(x, rate, key=key, generator=generator, **kwargs)

    spatial: Impls = {
        "jaxdrop.spatial_dropout (fast)": jaxdrop_call("spatial_dropout"),
        "jaxdrop.spatial_dropout (jax)": jaxdrop_call("spatial_dropout", "jax"),
        # `Module.apply` is typed `Any | tuple` (for `mutable=`); without it it returns the array.
        "flax.linen.Dropout(broadcast_dims=(1, 2))": lambda x, key: cast(
            jax.Array, nn.Dropout(rate, broadcast_dims=(1, 2)).apply({}, x, deterministic=False, rngs={"dropout": key})
        ),
    }
    drop_path: Impls = {
        "jaxdrop.drop_path (fast)": jaxdrop_call("drop_path"),
        "jaxdrop.drop_path (jax)": jaxdrop_call("drop_path", "jax"),
        "timm-style drop_path in jnp": lambda x, key: timm_drop_path(x, key, rate),
    }
    dropblock: Impls = {
        "jaxdrop.dropblock (fast)": jaxdrop_call("dropblock", block_size=block_size),
        "jaxdrop.dropblock (jax)": jaxdrop_call("dropblock", "jax", block_size=block_size),
        "DropBlock paper algorithm in jnp": lambda x, key: reference_dropblock(x, key, rate, block_size),
    }

    def attention(fn: Any, **kwargs: Any) -> Callable[..., jax.Array]:
        return lambda qkv, key: fn(*qkv, dropout_rng=key, dropout_rate=rate, deterministic=False, **kwargs)

    out: VariantImpls = {
        "spatial dropout": spatial,
        "drop path": drop_path,
        f"DropBlock (block {block_size})": dropblock,
    }
    for variant, broadcast in (("attention dropout", True), ("attention dropout, per-head masks", False)):
        if broadcast or per_head_masks:
            out[variant] = {
                "jaxdrop.dot_product_attention (fast)": attention(
                    jaxdrop.dot_product_attention, broadcast_dropout=broadcast
                ),
                "jaxdrop.dot_product_attention (jax)": attention(
                    jaxdrop.dot_product_attention, broadcast_dropout=broadcast, generator="jax"
                ),
                "flax.linen.dot_product_attention": attention(nn.dot_product_attention, broadcast_dropout=broadcast),
            }
    return out


def variants_section(settings: Settings) -> Section:
    """Spatial dropout, drop path, DropBlock and attention dropout against their nearest peer implementations."""
    rate = 0.1
    section = Section("variants", f"Dropout variants against their nearest peers, rate {rate}, f32")
    sizes = _variant_sizes(settings)
    block_size = 3 if settings.tiny else 7  # tiny 8x8 maps leave no room for 7-wide blocks
    inputs = {
        "spatial dropout": sizes["feature map"],
        "drop path": sizes["tokens"],
        f"DropBlock (block {block_size})": sizes["feature map"],
        "attention dropout": sizes["attention"],
        "attention dropout, per-head masks": sizes["attention"],
    }
    lines = []
    options = settings.compiler_options
    per_head_masks = not (settings.quick or settings.tiny)
    for variant, impls in _variant_impls(rate, block_size, per_head_masks=per_head_masks).items():
        if settings.tiny:  # the smoke test skips the bit-compatible generator: compile time dominates tiny shapes
            impls = {name: impl for name, impl in impls.items() if "(jax)" not in name}
        shape = inputs[variant]
        key = jax.random.key(0)
        if variant.startswith("attention"):
            x: Any = tuple(jax.random.normal(jax.random.key(i), shape) for i in range(3))
            batch, length, heads, _ = shape
            w = jax.random.normal(jax.random.key(3), shape)
            shape_label = f"q, k, v {shape_text(shape)} (weights {shape_text((batch, heads, length, length))})"
        else:
            x = jax.random.normal(jax.random.key(1), shape)
            w = jax.random.normal(jax.random.key(2), shape)
            shape_label = shape_text(shape)
        rows = []
        for impl_name, impl in impls.items():
            labels = {"variant": variant, "impl": impl_name, "shape": shape_label}
            try:
                if not settings.tiny:  # the smoke test compiles fwd+bwd only (which contains the forward)
                    rows.append(compiled_row({**labels, "pass": FWD}, forward(impl), x, key, w, options=options))
                rows.append(
                    compiled_row({**labels, "pass": FWD_BWD}, forward_backward(impl), x, key, w, options=options)
                )
            except Exception as error:  # an API that changed under us: report the row, keep the benchmark going
                note = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
                rows += [Row({**labels, "pass": FWD}, note=note), Row({**labels, "pass": FWD_BWD}, note=note)]
        measure_group(rows, settings.repeats, min_sample_s=settings.min_sample_s)
        if variant == "spatial dropout":  # issue 19's target: flax time / ours, from calls made back to back
            for pass_name in (FWD, FWD_BWD):
                ours, theirs = (find(rows, impl=name, **{"pass": pass_name}) for name in (SPATIAL_OURS, SPATIAL_FLAX))
                if ours is not None and theirs is not None:
                    ratios = paired_ratios(theirs, ours, 3 if settings.tiny else PAIRED_REPEATS)
                    section.summary.setdefault("spatial_paired_ratios", {})[pass_name] = ratios
        section.rows += rows
        peer_name = list(impls)[-1]
        for impl_name in impls:
            cells = [variant, impl_name, shape_label]
            for pass_name in (FWD, FWD_BWD):
                row = find(rows, impl=impl_name, **{"pass": pass_name})
                peer = find(rows, impl=peer_name, **{"pass": pass_name})
                if row is None:
                    cells += ["–", "–"]
                    continue
                cells += [fmt_spread(row), fmt_ratio(row.median_s, peer.median_s if peer else None)]
            backward = find(rows, impl=impl_name, **{"pass": FWD_BWD})
            cells.append("–" if backward is None or backward.value is None else f"{backward.value / 2**20:.1f}")
            lines.append(cells)
    header = ["variant", "impl", "shape", "fwd ms", "fwd x peer", "fwd+bwd ms", "fwd+bwd x peer"]
    section.markdown = markdown_table([*header, "fwd+bwd temp MiB"], lines, "lll" + "r" * len(header[2:]))
    section.notes.append(
        "The peer is the last row of each variant (`x peer` = median over the peer's median; below 1 means faster "
        "than the peer). flax has no drop path or DropBlock: the peers are jnp ports of timm's `drop_path` and of "
        "the DropBlock paper's algorithm. Attention: fwd+bwd is the gradient with respect to q, k and v; "
        "`attention dropout` uses flax's default `broadcast_dropout=True` (one mask shared over batch and heads), "
        "`per-head masks` `broadcast_dropout=False`. Temp MiB: `memory_analysis()` of the compiled fwd+bwd."
    )
    return section
