"""LayerDrop: dropped layers are skipped (not computed), each layer is kept with probability 1 - rate, pruning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_bounds import binomial_bound

import jaxdrop

NUM_LAYERS = 8
BITS = 2.0 ** jnp.arange(NUM_LAYERS, dtype=jnp.float32)  # layer i adds 2**i: the output names the layers that ran


def kept_layers(total) -> np.ndarray:
    """Which layers ran, read from the bits of the output."""
    total = np.asarray(total, np.int64)
    return (total[..., None] >> np.arange(NUM_LAYERS)) & 1 == 1


def counting_layers(calls: list):
    def layer(i):
        def run(x):
            jax.debug.callback(lambda: calls.append(i))  # a side effect: runs only if the layer is computed
            return x + BITS[i]

        return run

    return [layer(i) for i in range(NUM_LAYERS)]


def test_dropped_layers_are_not_computed():
    calls: list = []
    run = jax.jit(lambda x, k: jaxdrop.layer_drop(counting_layers(calls), x, 0.5, key=k))
    hlo = run.lower(jnp.float32(0), jax.random.key(0)).as_text()
    assert hlo.count("stablehlo.case") + hlo.count("stablehlo.if") == NUM_LAYERS  # one conditional per layer
    for seed in range(5):
        calls.clear()
        out = jax.block_until_ready(run(jnp.float32(0), jax.random.key(seed)))
        jax.effects_barrier()
        assert sorted(calls) == np.flatnonzero(kept_layers(out)).tolist()  # exactly the kept layers ran


def test_scan_cond_skips_layers_and_gather_runs_a_fixed_number():
    calls: list = []

    def layer(bit, x):
        jax.debug.callback(lambda: calls.append(1))
        return x + bit

    scanned = jax.jit(lambda k: jaxdrop.scan_layer_drop(layer, BITS, jnp.float32(0), 0.5, key=k))
    gathered = jax.jit(lambda k: jaxdrop.scan_layer_drop(layer, BITS, jnp.float32(0), 0.25, key=k, mode="gather"))
    for seed in range(3):
        calls.clear()
        out = jax.block_until_ready(scanned(jax.random.key(seed)))
        jax.effects_barrier()
        assert len(calls) == kept_layers(out).sum()
        calls.clear()
        out = jax.block_until_ready(gathered(jax.random.key(seed)))
        jax.effects_barrier()
        assert len(calls) == kept_layers(out).sum() == 6  # round(8 * 0.75), every time


@pytest.mark.parametrize(
    "form", ["loop", pytest.param("scan", marks=pytest.mark.slow), pytest.param("gather", marks=pytest.mark.slow)]
)
def test_each_layer_is_kept_with_probability_one_minus_rate(form):
    rate, samples = 0.25, 1000
    layers = [lambda x, b=b: x + b for b in BITS]
    run = {
        "loop": lambda k: jaxdrop.layer_drop(layers, jnp.float32(0), rate, key=k),
        "scan": lambda k: jaxdrop.scan_layer_drop(lambda b, x: x + b, BITS, jnp.float32(0), rate, key=k),
        "gather": lambda k: jaxdrop.scan_layer_drop(
            lambda b, x: x + b, BITS, jnp.float32(0), rate, key=k, mode="gather"
        ),
    }[form]
    kept = kept_layers(jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(7), samples)))
    assert np.abs(kept.mean(0) - (1 - rate)).max() <= binomial_bound(samples, 1 - rate)
    if form != "gather":  # independent decisions: the number kept is binomial, not fixed
        assert kept.sum(1).std() > 0.5


def test_gradients_flow_to_kept_layers_only():
    weights = jnp.linspace(1.1, 1.8, NUM_LAYERS)
    key = jax.random.key(4)

    def loss(weights, scale_by_keep=False):
        layers = [lambda x, i=i: x + x * (weights[i] - 1.0) for i in range(NUM_LAYERS)]
        return jnp.sum(jaxdrop.layer_drop(layers, jnp.ones(3), 0.5, key=key, scale_by_keep=scale_by_keep))

    grad = np.asarray(jax.jit(jax.grad(loss))(weights))
    marker = jax.jit(lambda k: jaxdrop.layer_drop([lambda x, b=b: x + b for b in BITS], jnp.float32(0), 0.5, key=k))
    np.testing.assert_array_equal(grad != 0, kept_layers(marker(key)))


@pytest.mark.slow
def test_scale_by_keep_rescales_the_residual_update():
    # scale_by_keep: a kept layer's residual update is doubled at rate 0.5; E[output] is the full network's
    keys = jax.random.split(jax.random.key(5), 2000)
    scaled = jax.jit(jax.vmap(lambda k: jaxdrop.layer_drop([lambda x: x + 1.0] * 4, jnp.float32(0), 0.5, key=k,
                                                           scale_by_keep=True)))(keys)  # fmt: skip
    assert set(np.unique(scaled).tolist()) <= {0.0, 2.0, 4.0, 6.0, 8.0}
    assert abs(float(scaled.mean()) - 4.0) <= 4 * np.sqrt(4.0 / 2000)  # variance 4 * 1 per sample


def test_deterministic_static_and_traced_rates():
    layers = [lambda x, b=b: x + b for b in BITS]
    full = float(BITS.sum())
    assert float(jaxdrop.layer_drop(layers, jnp.float32(0), 0.5, deterministic=True)) == full
    assert float(jaxdrop.layer_drop(layers, jnp.float32(0), 0.0)) == full  # no key needed
    assert float(jaxdrop.layer_drop(layers, jnp.float32(0), 1.0)) == 0.0
    traced = jax.jit(lambda r: jaxdrop.scan_layer_drop(lambda b, x: x + b, BITS, jnp.float32(0), r,
                                                       key=jax.random.key(0)))  # fmt: skip
    assert float(traced(0.0)) == full and float(traced(1.0)) == 0.0
    with pytest.raises(TypeError, match=r"`rate` must be static for `mode='gather'`"):
        jax.jit(lambda r: jaxdrop.scan_layer_drop(lambda b, x: x + b, BITS, 0.0, r, key=jax.random.key(0),
                                                  mode="gather"))(0.5)  # fmt: skip
    out = jaxdrop.layer_drop([lambda x: x * 2] * 3, jnp.ones(2, jnp.bfloat16), 0.5, key=jax.random.key(0))
    assert out.dtype == jnp.bfloat16


def test_prune_layers_every_other():
    assert jaxdrop.prune_layers(list(range(12)), 0.5) == [0, 2, 4, 6, 8, 10]
    assert jaxdrop.prune_layers(tuple("abcdefgh"), 0.25) == list("abcefg")
    stacked = {"w": jnp.arange(12.0).reshape(6, 2), "b": jnp.arange(6)}
    pruned = jaxdrop.prune_layers(stacked, 1 / 3)
    assert pruned["b"].tolist() == [0, 1, 3, 4] and pruned["w"].shape == (4, 2)
    for rate in (0.0, 0.6):
        with pytest.raises(ValueError, match=r"`rate` must be in \(0, 0.5\]"):
            jaxdrop.prune_layers([1, 2], rate)
    with pytest.raises(ValueError, match=r"`layers` leaves must share the layer axis"):
        jaxdrop.prune_layers({"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, 0.5)


def test_bad_layers_raise_naming_them():
    with pytest.raises(TypeError, match=r"`layers` entry 1 must be a callable"):
        jaxdrop.layer_drop([abs, 3], jnp.ones(2), 0.5, deterministic=True)
    with pytest.raises(ValueError, match=r"`layers` must hold at least one layer"):
        jaxdrop.layer_drop([], jnp.ones(2), 0.5, deterministic=True)
    with pytest.raises(ValueError, match=r"`stacked_params` leaves must share the layer axis"):
        jaxdrop.scan_layer_drop(lambda p, x: x, {"a": jnp.ones(3), "b": jnp.ones(4)}, 0.0, 0.5, deterministic=True)
