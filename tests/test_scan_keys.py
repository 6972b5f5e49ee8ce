"""Key recipes for stacked layers in ``scan`` (docs/guide/distributed.md): one mask per layer and per step.

A scan over stacked layers runs one body for every layer; if that body sees one key, every layer draws the same
mask, and if a step reuses the previous step's key, masks freeze across steps (flax issue 4950 reported frozen
masks for ``nn.scan`` in functional form; issue 4589 an error for Dropout layers stacked with ``nnx.vmap`` over
``nnx.split_rngs``, the layout of the nnx recipe here). Each recipe is checked the same way: masks of 4 layers
over 2 steps are pairwise unlike (their agreement is that of independent masks, within a binomial bound), the same
step key gives the same masks, and the scan gives the bits of the unrolled loop where there is one.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from stat_bounds import binomial_bound

import jaxdrop
import jaxdrop.linen
import jaxdrop.nnx

LAYERS, WIDTH, BATCH, RATE = 4, 64, 8, 0.5


def assert_independent_masks(masks_per_step: list[np.ndarray]) -> None:
    """``masks_per_step[s][layer]`` are boolean keep-masks; every two of them (any layer, any step) agree on about
    half their elements, as independent rate-0.5 masks do, and each keeps about half."""
    masks = [np.asarray(mask) for step in masks_per_step for mask in step]
    assert len(masks) == LAYERS * len(masks_per_step)
    size = masks[0].size
    bound = binomial_bound(size, 0.5, sigmas=5.0)
    for mask in masks:
        assert abs(mask.mean() - (1 - RATE)) < bound, mask.mean()
    for first, second in itertools.combinations(range(len(masks)), 2):
        agreement = np.mean(masks[first] == masks[second])
        assert abs(agreement - 0.5) < bound, f"masks {first} and {second} agree on {agreement:.0%}"


# --- jax.lax.scan over stacked parameters: fold the step, then the layer index -----------------------------------


def _stacked_params():
    return {"w": jax.random.normal(jax.random.key(0), (LAYERS, WIDTH, WIDTH)) / np.sqrt(WIDTH)}


def _lax_scan_forward(params, x, root, step):
    step_key = jaxdrop.fold_in(root, step)

    def layer(x, layer_input):
        w, index = layer_input
        h = jnp.tanh(x @ w)
        y = jaxdrop.dropout(h, RATE, key=jaxdrop.fold_in(step_key, index))
        return y, y != 0

    return jax.lax.scan(layer, x, (params["w"], jnp.arange(LAYERS)))


def test_lax_scan_recipe_one_mask_per_layer_and_step():
    params, x, root = _stacked_params(), jnp.ones((BATCH, WIDTH)), jax.random.key(1)
    forward = jax.jit(_lax_scan_forward)
    masks = [forward(params, x, root, step)[1] for step in (0, 1)]
    assert_independent_masks(masks)
    np.testing.assert_array_equal(forward(params, x, root, 0)[1], masks[0])  # same step key, same masks

    @jax.jit
    def unrolled(params, x, step_key):
        kept = []
        for index in range(LAYERS):
            x = jaxdrop.dropout(jnp.tanh(x @ params["w"][index]), RATE, key=jaxdrop.fold_in(step_key, index))
            kept.append(x != 0)
        return jnp.stack(kept)

    # The scan draws the masks of the unrolled loop, bit for bit.
    np.testing.assert_array_equal(unrolled(params, x, jaxdrop.fold_in(root, 1)), masks[1])


# --- flax.linen: nn.scan over a module, split_rngs={"params": True, "dropout": True} ------------------------------


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        y = jaxdrop.linen.Dropout(RATE)(jnp.tanh(nn.Dense(WIDTH)(x)), deterministic=False)
        return y, y != 0


class LinenStack(nn.Module):
    @nn.compact
    def __call__(self, x):
        stack = nn.scan(
            LinenBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},  # a key per layer from the one "dropout" key
            length=LAYERS,
        )
        return stack()(x, None)


def test_linen_nn_scan_recipe_one_mask_per_layer_and_step():
    model, x, root = LinenStack(), jnp.ones((BATCH, WIDTH)), jax.random.key(2)
    variables = model.init({"params": jax.random.key(0), "dropout": root}, x)
    assert variables["params"]["ScanLinenBlock_0"]["Dense_0"]["kernel"].shape == (LAYERS, WIDTH, WIDTH)
    apply = jax.jit(lambda variables, key: model.apply(variables, x, rngs={"dropout": key})[1])
    masks = [apply(variables, jaxdrop.fold_in(root, step)) for step in (0, 1)]
    assert_independent_masks(masks)
    np.testing.assert_array_equal(apply(variables, jaxdrop.fold_in(root, 0)), masks[0])


# --- flax.nnx: layers stacked with nnx.vmap over split streams, then nnx.scan -------------------------------------


class NnxBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs | None, stream: bool):
        self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
        self.drop = jaxdrop.nnx.Dropout(RATE, rngs=rngs if stream else None)

    def __call__(self, x, key=None):
        return self.drop(jnp.tanh(self.linear(x)), deterministic=False, rngs=key)


def _nnx_stack(stream: bool):
    @nnx.split_rngs(splits=LAYERS)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
        return NnxBlock(rngs, stream)

    return make(nnx.Rngs(params=0, dropout=3))


def test_nnx_scan_recipe_with_the_layers_own_streams():
    # Each stacked layer holds its own "dropout" stream (a key per layer; the count advances every call): flax
    # issue 4589's layout, without its error and with a new mask per layer and per step.
    stack = _nnx_stack(stream=True)

    @nnx.jit
    def forward(stack, x):
        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=(nnx.Carry, 0))
        def layer(block, x):
            y = block(x)
            return y, y != 0

        return layer(stack, x)[1]

    x = jnp.ones((BATCH, WIDTH))
    masks = [forward(stack, x) for _ in range(2)]
    assert_independent_masks(masks)


def test_nnx_scan_recipe_with_explicit_keys():
    # Layers without a stream; the step key is folded with the layer index and handed to each layer: the masks
    # depend only on (root, step, layer), as in the lax.scan recipe, so a restarted job draws them again.
    stack = _nnx_stack(stream=False)

    @nnx.jit
    def forward(stack, x, step_key):
        @nnx.scan(in_axes=(0, nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def layer(block, x, index):
            y = block(x, jaxdrop.fold_in(step_key, index))
            return y, y != 0

        return layer(stack, x, jnp.arange(LAYERS))[1]

    x, root = jnp.ones((BATCH, WIDTH)), jax.random.key(4)
    masks = [forward(stack, x, jaxdrop.fold_in(root, step)) for step in (0, 1)]
    assert_independent_masks(masks)
    np.testing.assert_array_equal(forward(stack, x, jaxdrop.fold_in(root, 1)), masks[1])
