"""One process of the multi-process determinism test (tests/test_multiprocess.py); not collected by pytest.

``python tests/multiprocess_worker.py --out DIR --suite default --process-id I --num-processes N --port P
--local-devices D`` starts JAX with ``D`` CPU devices in this process, joins a ``jax.distributed`` job of ``N``
processes through a coordinator on ``127.0.0.1:P`` (CPU collectives over gloo), runs every check of the suite on
every layout of the suite's 2-D ``("data", "model")`` meshes over all ``N * D`` devices, and writes what this
process holds: ``DIR/process{I}.npz`` (every output's addressable shards with their global index) and, from
process 0, ``DIR/collectives.json`` (the collective ops of compiled training steps). ``--num-processes 1`` is the
reference: one process that runs every check on one device (the ``one`` layout) and the suite's ``reference``
checks on the job's layouts too (the same programs on 8 devices of one process).

The configuration of JAX (device count, collectives) is set here, in the test's worker, never in the library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TESTS_DIR = Path(__file__).resolve().parent
RATE = 0.5  # a scale of exactly 2: products with dyadic values stay exact (see `dyadic`)
BATCH, FEATURES, HIDDEN, OUTPUTS = 16, 16, 32, 8

# mesh shape (data, model) per layout, over the devices in ``jax.devices()`` order (process 0's first). "2d-cross"
# transposes a (2, 4) grid, so each "model" group has devices of both processes (the 2-process job has 4 each).
LAYOUTS = {"one": (1, 1), "data8": (8, 1), "model8": (1, 8), "2d": (2, 4), "2d-cross": (4, 2)}

# One variant per family in the default run (the one-process mesh test in test_determinism.py covers all of them
# on fake devices); the full suite runs every variant of test_determinism.VARIANTS.
DEFAULT_VARIANTS = (
    "dropout/broadcast(0,2)",
    "dropout/jax",
    "alpha_dropout",
    "gaussian_noise",
    "concrete_dropout",
    "dropblock",
    "locked_dropout",
    "word_dropout",
)
# Dropout, DropPath and DropConnect layers run in the training steps; these in the variants program.
DEFAULT_LAYERS = ("linen.SpatialDropout", "nnx.LockedDropout")
# The layouts each check runs on, per suite. The one-process reference runs every check on one device ("one") and
# the checks of "reference" on the same layouts as the job. "collectives" names the layouts whose compiled linen steps
# (no dropout, jaxdrop, flax) have their collective ops counted.
SUITES = {
    "default": {
        "variants": ("2d-cross",),
        "attention": ("2d",),
        "linen_step": ("data8", "model8"),
        "nnx_step": ("2d-cross",),
        "mc_predict": ("data8",),
        "collectives": ("data8", "model8"),
        "reference": ("linen_step",),
    },
    "full": {
        "variants": ("data8", "model8", "2d", "2d-cross"),
        "attention": ("data8", "2d", "2d-cross"),
        "linen_step": ("data8", "model8", "2d", "2d-cross"),
        "nnx_step": ("data8", "model8", "2d", "2d-cross"),
        "mc_predict": ("data8", "2d", "2d-cross"),
        "collectives": ("data8", "model8", "2d"),
        "reference": ("variants", "attention", "linen_step", "nnx_step", "mc_predict"),
    },
}


def dyadic(seed: int, shape: tuple[int, ...], numerator: int = 4, denominator: int = 8) -> np.ndarray:
    """float32 multiples of ``1 / denominator`` in ``[-numerator, numerator] / denominator``.

    Sums and products of such numbers (and their doubles, the dropout scale at rate 0.5) stay exact in float32 at
    these sizes, so a sharded reduction adds them in any order to the same bits: a difference between meshes can
    only come from a mask.
    """
    values = np.random.default_rng(seed).integers(-numerator, numerator + 1, shape)
    return (values / denominator).astype(np.float32)


class Job:
    """The meshes and placement helpers of this process's part of the job."""

    def __init__(self, layout: str):
        import jax
        from jax.sharding import Mesh

        shape = LAYOUTS[layout]
        devices = np.array(jax.devices())
        if layout == "one":
            grid = devices[:1].reshape(1, 1)
        elif layout == "2d-cross":
            grid = devices.reshape(2, 4).T
        else:
            grid = devices.reshape(shape)
        self.layout = layout
        self.mesh = Mesh(grid, ("data", "model"))

    def sharding(self, *spec: str | None):
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def put(self, array: np.ndarray, *spec: str | None):
        """A global array from a host array every process holds in full; each process places its own shards."""
        import jax

        return jax.make_array_from_callback(array.shape, self.sharding(*spec), lambda index: array[index])


# --- the checks: each returns {name: global array (or pytree of them)} ----------------------------------------


def _variant_table(suite: str) -> dict[str, tuple[Callable, tuple[int, ...]]]:
    sys.path.insert(0, str(TESTS_DIR))
    from test_determinism import VARIANTS

    names = list(VARIANTS) if suite == "full" else list(DEFAULT_VARIANTS)
    return {name: VARIANTS[name] for name in names}


def _layer_table() -> dict[str, tuple[Callable, tuple[int, ...]]]:
    """The linen and nnx layers, as ``fn(x, rate, key)``."""
    from flax import nnx

    import jaxdrop.linen as jl
    import jaxdrop.nnx as jn

    def linen(layer, **call):
        return lambda x, rate, key: layer.apply({}, x, deterministic=False, rngs={"dropout": key}, **call)

    def nnx_layer(cls, *args, **kwargs):
        return lambda x, rate, key: cls(*args, **kwargs, rngs=nnx.Rngs(dropout=key))(x, deterministic=False)

    ids = (np.arange(8 * 16).reshape(8, 16) * 7) % 5
    return {
        "linen.Dropout": (linen(jl.Dropout(RATE, broadcast_dims=(1,))), (8, 16, 8)),
        "linen.SpatialDropout": (linen(jl.SpatialDropout(RATE)), (8, 8, 8, 8)),
        "linen.DropPath": (linen(jl.DropPath(RATE)), (8, 16, 8)),
        "linen.DropBlock": (linen(jl.DropBlock(RATE, block_size=3)), (8, 8, 8, 8)),
        "linen.LockedDropout": (linen(jl.LockedDropout(RATE)), (8, 16, 8)),
        "linen.TokenDropout": (linen(jl.TokenDropout(RATE)), (8, 16, 8)),
        "linen.WordDropout": (
            lambda x, rate, key: jl.WordDropout(RATE).apply({}, x, ids, deterministic=False, rngs={"dropout": key}),
            (8, 16, 8),
        ),
        "nnx.Dropout": (nnx_layer(jn.Dropout, RATE, broadcast_dims=(0,)), (8, 16, 8)),
        "nnx.DropPath": (nnx_layer(jn.DropPath, RATE), (8, 16, 8)),
        "nnx.DropBlock": (nnx_layer(jn.DropBlock, RATE, block_size=3), (8, 8, 8, 8)),
        "nnx.LockedDropout": (nnx_layer(jn.LockedDropout, RATE), (8, 16, 8)),
    }


def check_variants(job: Job, suite: str) -> dict[str, Any]:
    """The functional variants (test_determinism.VARIANTS) and the linen/nnx layers: every output and (in the full
    suite: a gradient triples the compile time) its input gradient for a dyadic cotangent, in one compiled program."""
    import jax

    sys.path.insert(0, str(TESTS_DIR))
    from test_determinism import _inputs

    table = _variant_table(suite) | {
        name: layer for name, layer in _layer_table().items() if suite == "full" or name in DEFAULT_LAYERS
    }

    shapes = sorted({shape for _, shape in table.values()})
    # batch axis on "data", last axis on "model": both sharded in the 2-D layouts
    specs = {shape: ("data", *([None] * (len(shape) - 2)), "model") for shape in shapes}
    inputs = {shape: job.put(np.asarray(_inputs(shape)), *specs[shape]) for shape in shapes}
    cotangents = {shape: job.put(dyadic(len(shape), shape), *specs[shape]) for shape in shapes}

    @jax.jit
    def run(inputs, cotangents):
        key = jax.random.key(11)  # one key for the whole job: every process builds the same one
        out = {}
        for name, (fn, shape) in table.items():
            if suite != "full":  # the default run takes gradients in the training steps and attention only
                out[name] = {"out": fn(inputs[shape], RATE, key)}
                continue
            y, vjp = jax.vjp(lambda x, fn=fn: fn(x, RATE, key), inputs[shape])
            out[name] = {"out": y, "grad": vjp(cotangents[shape])[0]}
        return out

    return run(inputs, cotangents)


def check_attention(job: Job, suite: str) -> dict[str, Any]:
    """Attention dropout, dense and blockwise: outputs that *are* the dropped weights, and value gradients.

    With zero queries and keys the softmax is uniform (1/8, exact) and the values are one-hot over key positions,
    so output ``[b, q, h, k]`` is the kept weight ``keep * 2 / 8``: the mask itself, exactly, whatever the tiling.
    """
    import jax
    import jax.numpy as jnp

    import jaxdrop

    batch, length, heads = 8, 8, 8
    value_np = np.broadcast_to(np.eye(length, dtype=np.float32)[None, :, None, :], (batch, length, heads, length))
    value = job.put(np.ascontiguousarray(value_np), "data", None, "model")
    zeros = job.put(np.zeros((batch, length, heads, length), np.float32), "data", None, "model")
    cotangent = job.put(dyadic(3, (batch, length, heads, length)), "data", None, "model")
    blockwise = {"implementation": "blockwise", "block_q": 4, "block_kv": 4}  # 2 x 2 tiles
    calls = {"xla": {"implementation": "xla"}, "blockwise": blockwise}
    if suite == "full":
        per_head = {"broadcast_dropout": False}
        calls |= {"xla/per-head": calls["xla"] | per_head, "blockwise/per-head": blockwise | per_head}

    @jax.jit
    def run(zeros, value, cotangent):
        key = jax.random.key(12)
        out = {}
        for name, kwargs in calls.items():

            def attend(value, kwargs=kwargs):
                return jaxdrop.dot_product_attention(zeros, zeros, value, dropout_rng=key, dropout_rate=RATE, **kwargs)

            y, vjp = jax.vjp(attend, value)
            out[name] = {"out": y, "grad": vjp(cotangent)[0], "kept": y != 0}
        out["blockwise_equals_dense"] = jnp.array_equal(out["xla"]["out"], out["blockwise"]["out"])
        return out

    return run(zeros, value, cotangent)


def _linen_mlp(impl: str, remat: bool):
    """Dense (hidden sharded on "model") -> relu -> Dropout -> DropConnectDense (rows on "model") -> DropPath.

    ``impl``: "jaxdrop", "flax" (flax's Dropout; a plain Dense; flax's Dropout over the batch axis for drop path)
    or "none" (no dropout). ``remat`` wraps the first block in ``nn.remat``.
    """
    import flax.linen as nn

    import jaxdrop.linen as jl

    class Hidden(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            h = nn.relu(nn.Dense(HIDDEN, name="dense")(x))
            if impl == "jaxdrop":
                return jl.Dropout(RATE)(h, deterministic=not train)
            if impl == "flax":
                return nn.Dropout(RATE)(h, deterministic=not train)
            return h

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            hidden = nn.remat(Hidden, static_argnums=(2,)) if remat else Hidden
            h = hidden(name="hidden")(x, train)
            if impl == "jaxdrop":
                y = jl.DropConnectDense(OUTPUTS, rate=RATE, name="out")(h, deterministic=not train)
                return jl.DropPath(RATE)(y, deterministic=not train)
            y = nn.Dense(OUTPUTS, name="out")(h)
            if impl == "flax":
                return nn.Dropout(RATE, broadcast_dims=(1,))(y, deterministic=not train)
            return y

    return MLP()


def _linen_params(job: Job) -> dict[str, Any]:
    """Dyadic parameters, the first kernel's columns and the second kernel's rows on "model" (Megatron style)."""
    return {
        "params": {
            "hidden": {
                "dense": {
                    "kernel": job.put(dyadic(20, (FEATURES, HIDDEN)), None, "model"),
                    "bias": job.put(dyadic(21, (HIDDEN,)), "model"),
                }
            },
            "out": {
                "kernel": job.put(dyadic(22, (HIDDEN, OUTPUTS)), "model", None),
                "bias": job.put(dyadic(23, (OUTPUTS,))),
            },
        }
    }


def _linen_step(impl: str, remat: bool) -> Callable:
    """One SGD step (learning rate 1/8) on ``sum(output * target) / 8``: loss, new parameters, gradients."""
    import jax

    model = _linen_mlp(impl, remat)

    def step(variables, x, target, step_number):
        key = jax.random.fold_in(jax.random.key(13), step_number)  # per-step key: fold the step into one root

        def loss_fn(variables, x):
            out = model.apply(variables, x, rngs={"dropout": key})
            return (out * target).sum() / 8, out

        (loss, out), (grads, x_grad) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(variables, x)
        new = jax.tree.map(lambda p, g: p - g / 8, variables, grads)
        return {"loss": loss, "out": out, "grads": grads, "x_grad": x_grad, "new_params": new}

    return step


COLLECTIVES: dict[str, dict[str, list[str]]] = {}  # layout -> impl -> collective ops, filled by the linen step


def check_linen_step(job: Job, suite: str) -> dict[str, Any]:
    """A data/tensor/2-D parallel linen training step, with and without ``nn.remat`` (which must not matter).

    On the suite's "collectives" layouts the compiled step's collective ops are counted, and those of the same step
    with no dropout and with flax's ``nn.Dropout`` (``jax.random.bernoulli``).
    """
    import jax

    from jaxdrop.cli.bench._sharded import collective_ops

    variables = _linen_params(job)
    x = job.put(dyadic(24, (BATCH, FEATURES), 4, 4), "data", None)
    target = job.put(dyadic(25, (BATCH, OUTPUTS), 2, 2), "data", None)
    count = job.layout in SUITES[suite]["collectives"]
    steps = [("jaxdrop", False), ("jaxdrop", True)]
    if count:  # flax's step is recorded, not asserted on: the full suite only
        steps += [("none", False)] + ([("flax", False)] if suite == "full" else [])
    out, counts = {}, {}
    for impl, remat in steps:
        step = jax.jit(_linen_step(impl, remat)).lower(variables, x, target, 0).compile()
        if count and not remat:
            counts[impl] = collective_ops(step.as_text())  # the benchmark's reader: one home
        if impl == "jaxdrop":
            for step_number in (0, 1):
                out[f"remat={remat}/step{step_number}"] = step(variables, x, target, step_number)
    if count:
        COLLECTIVES[job.layout] = counts
    return out


def check_nnx_step(job: Job, suite: str) -> dict[str, Any]:
    """A data/tensor/2-D parallel nnx training step; dropout keys from ``nnx.Rngs`` passed at call time."""
    import jax
    from flax import nnx

    import jaxdrop.nnx as jn

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
            self.drop = jn.Dropout(RATE)
            self.out = nnx.Linear(HIDDEN, OUTPUTS, rngs=rngs)
            self.drop_path = jn.DropPath(RATE)

        def __call__(self, x, rngs):
            h = self.drop(nnx.relu(self.dense(x)), deterministic=False, rngs=rngs)
            return self.drop_path(self.out(h), deterministic=False, rngs=rngs)

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: MLP(nnx.Rngs(0))), nnx.Param)
    specs = {"dense": {"kernel": (None, "model"), "bias": ("model",)}, "out": {"kernel": ("model", None), "bias": ()}}
    params = nnx.State(
        {
            layer: {
                name: nnx.Param(job.put(dyadic(30 + i, abstract[layer][name].shape), *specs[layer][name]))
                for i, name in enumerate(("kernel", "bias"))
            }
            for layer in ("dense", "out")
        }
    )
    x = job.put(dyadic(24, (BATCH, FEATURES), 4, 4), "data", None)
    target = job.put(dyadic(25, (BATCH, OUTPUTS), 2, 2), "data", None)

    @jax.jit
    def step(params, x, target):
        def loss_fn(params, x):
            out = nnx.merge(graphdef, params)(x, nnx.Rngs(dropout=jax.random.key(14)))
            return (out * target).sum() / 8, out

        (loss, out), (grads, x_grad) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(params, x)
        return {"loss": loss, "out": out, "grads": nnx.to_pure_dict(grads), "x_grad": x_grad}

    return step(params, x, target)


def check_mc_predict(job: Job, suite: str) -> dict[str, Any]:
    """``jaxdrop.mc.predict`` of the linen MLP, samples split over the "data" axis (both processes)."""
    import jax

    import jaxdrop

    model = _linen_mlp("jaxdrop", remat=False)
    variables = _linen_params(job)
    x = job.put(dyadic(26, (BATCH, FEATURES), 4, 4), None, None)
    out = {}
    for task in ("classification", "regression") if suite == "full" else ("classification",):
        prediction = jaxdrop.mc.predict(
            model,
            x,
            key=jax.random.key(15),
            num_samples=16,
            task=task,
            variables=variables,
            apply_kwargs={"train": False},  # evaluation flags: jaxdrop's layers sample inside mc
            return_samples=True,
            mesh=None if job.layout == "one" else job.mesh,
            mesh_axis=None if job.layout == "one" else "data",
        )
        out[task] = {name: value for name, value in vars(prediction).items() if value is not None}
    return out


CHECKS: dict[str, Callable[[Job, str], dict[str, Any]]] = {
    "variants": check_variants,
    "attention": check_attention,
    "linen_step": check_linen_step,
    "nnx_step": check_nnx_step,
    "mc_predict": check_mc_predict,
}


# --- writing what this process holds -----------------------------------------------------------------------------


def flatten(tree: Any, prefix: str) -> dict[str, Any]:
    """``{"prefix/path/to/leaf": leaf}`` for a nested dict of arrays."""
    if isinstance(tree, dict):
        out = {}
        for name, value in tree.items():
            out |= flatten(value, f"{prefix}/{name}")
        return out
    return {prefix: tree}


def shard_records(name: str, array: Any) -> dict[str, np.ndarray]:
    """npz entries for the shards of ``array`` this process holds: data, global index (start, stop per axis)."""
    records = {f"{name}|shape": np.array(array.shape, np.int64)}
    for number, shard in enumerate(array.addressable_shards):
        bounds = [
            (0 if part.start is None else part.start, size if part.stop is None else part.stop)
            for part, size in zip(shard.index, array.shape, strict=True)
        ]
        records[f"{name}|{number}|data"] = np.asarray(shard.data)
        records[f"{name}|{number}|index"] = np.array(bounds, np.int64).reshape(-1, 2)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--suite", choices=sorted(SUITES), default="default")
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--local-devices", type=int, default=8)
    args = parser.parse_args(argv)
    start = time.perf_counter()

    import jax

    # Before the backend starts: this process's CPU devices and the cross-process collectives (gloo over TCP).
    jax.config.update("jax_num_cpu_devices", args.local_devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_platforms", "cpu")
    if args.num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=60,
        )
    assert jax.device_count() == 8 and jax.process_count() == args.num_processes, (jax.devices(), args)
    wall, cpu = time.perf_counter() - start, time.process_time()
    print(f"process {args.process_id}: started in {wall:.1f} s ({cpu:.1f} s of CPU)", flush=True)

    records: dict[str, np.ndarray] = {}
    for check, layouts in SUITES[args.suite].items():
        if check in ("collectives", "reference"):
            continue
        if args.num_processes == 1:  # the reference: one device, and the job's layouts for some checks
            layouts = ("one", *(layouts if check in SUITES[args.suite]["reference"] else ()))
        for layout in layouts:
            check_start, cpu_start = time.perf_counter(), time.process_time()
            results = CHECKS[check](Job(layout), args.suite)
            for name, array in flatten(results, f"{layout}/{check}").items():
                records |= shard_records(name, array)
            wall, cpu = time.perf_counter() - check_start, time.process_time() - cpu_start
            print(f"process {args.process_id}: {check} on {layout}: {wall:.1f} s ({cpu:.1f} s of CPU)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / f"process{args.process_id}.npz", **records)
    if args.process_id == 0:
        (args.out / "collectives.json").write_text(json.dumps(COLLECTIVES, indent=1))
    wall, cpu = time.perf_counter() - start, time.process_time()
    print(f"process {args.process_id}: done in {wall:.1f} s ({cpu:.1f} s of CPU)", flush=True)
    if args.num_processes > 1:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main())
