"""The ``sharded`` benchmark section: a data-parallel MLP training step on 8 devices, with and without dropout.

The batch is split over all devices, the parameters are replicated, and the step (forward, backward, SGD update) is
timed with no dropout, with ``flax.linen.Dropout`` and with ``jaxdrop.linen.Dropout``; the share of the step spent
in dropout is (step with dropout - step without) / step without, as in the ``transformer`` section. The compiled
program's collective ops are listed for each: a mask generator that needed communication between devices would
show up there (jax issue 15895: ``jax.random.bernoulli`` in a sharded step without ``jax_threefry_partitionable``).

On a CPU backend with fewer than 8 devices the section runs in a subprocess with 8 CPU devices
(``--xla_force_host_platform_device_count=8``: the device count is fixed when JAX starts); on a GPU/TPU host it runs
in this process on all its devices.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop.cli._table import markdown_table
from jaxdrop.cli.bench._timing import Row, Section, Settings, block, dropout_share_cells, measure_group

DEVICES = 8
RATE = 0.1
COLLECTIVE_OPS = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
    "collective-broadcast",
)
# An instruction line: ``%name = RESULT-TYPE op(operands), attributes``; a tuple type may hold ``/*index=5*/``.
_COLLECTIVE = re.compile(r"^\s*%?[\w.-]+ = (?P<type>.*?) (?P<op>" + "|".join(COLLECTIVE_OPS) + r")(?:-start)?\(", re.M)
IMPLS = {"none": "no dropout", "flax": "flax.linen.Dropout", "jaxdrop": "jaxdrop.linen.Dropout (fast)"}


def collective_ops(hlo_text: str) -> list[str]:
    """The collective ops of a compiled HLO module (``executable.as_text()``), each as ``"op result-type"``, sorted.

    An async pair (``all-reduce-start``/``-done``) is listed once. XLA combines a step's gradient all-reduces into
    one op over a tuple, so the result types, not the count alone, show what is communicated.
    """
    return sorted(
        f"{match['op']} {re.sub(r'/[*].*?[*]/', '', match['type'])}" for match in _COLLECTIVE.finditer(hlo_text)
    )


def _sizes(settings: Settings) -> dict[str, int]:
    if settings.tiny:
        return {"batch": 16, "features": 8, "hidden": 16, "layers": 2}
    if settings.backend == "cpu":
        # Activations large next to the weights: dropout's cost is per activation, the matmuls' per weight too.
        return {"batch": 2048, "features": 128, "hidden": 512, "layers": 3}
    return {"batch": 8192, "features": 1024, "hidden": 4096, "layers": 4}


def _make_mlp(sizes: dict[str, int], impl: str):
    """ReLU MLP with dropout after every hidden layer; ``impl`` ("none", "flax", "jaxdrop") is all that differs."""
    import flax.linen as nn

    import jaxdrop.linen

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(sizes["layers"]):
                x = nn.relu(nn.Dense(sizes["hidden"])(x))
                if impl == "flax":
                    x = nn.Dropout(RATE, deterministic=False)(x)
                elif impl == "jaxdrop":
                    x = jaxdrop.linen.Dropout(RATE, deterministic=False)(x)
            return nn.Dense(sizes["features"])(x)

    return MLP()


def _describe(ops: list[str]) -> str:
    if not ops:
        return "none"
    counts: dict[str, int] = {}
    for op in ops:
        name = op.split(" ", 1)[0]
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{count} {name}" for name, count in counts.items())


def _call(executable: Any, args: tuple[Any, ...]) -> Any:
    return block(executable(*args))


def measure(settings: Settings) -> Section:
    """The section, measured in this process on ``jax.devices()`` (all of them)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    sizes = _sizes(settings)
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    batch_sharding, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    title = (
        f"Data-parallel MLP training step on {len(devices)} {devices[0].platform} devices, dropout {RATE} after "
        "every hidden layer (" + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ")"
    )
    section = Section("sharded", title)
    inputs = jax.device_put(jax.random.normal(jax.random.key(0), (sizes["batch"], sizes["features"])), batch_sharding)
    targets = jax.device_put(jax.random.normal(jax.random.key(1), (sizes["batch"], sizes["features"])), batch_sharding)
    params = jax.device_put(jax.jit(_make_mlp(sizes, "none").init)(jax.random.key(2), inputs), replicated)
    rows, ops = [], {}
    for impl, label in IMPLS.items():
        model = _make_mlp(sizes, impl)

        def step(params, inputs, targets, key, model=model):
            def loss_fn(params):
                out = model.apply(params, inputs, rngs={"dropout": key})
                return jnp.mean((out - targets) ** 2)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads), loss

        args = (params, inputs, targets, jax.random.key(3))
        executable = jax.jit(step).lower(*args).compile(settings.compiler_options)
        ops[impl] = collective_ops(executable.as_text() or "")
        rows.append(Row({"impl": label, "collective_ops": ops[impl]}, functools.partial(_call, executable, args)))
    # The share is a small difference of two noisy step times: three times the repeats, as in `transformer`.
    measure_group(rows, 3 * settings.repeats, min_sample_s=settings.min_sample_s)
    section.rows = rows
    lines = [
        [row.labels["impl"], *cells, _describe(row.labels["collective_ops"])]
        for row, cells in zip(rows, dropout_share_cells(rows), strict=True)
    ]
    section.summary |= {
        "devices": len(devices),
        "platform": devices[0].platform,
        "flax_share": rows[1].labels["dropout_share"],
        "jaxdrop_share": rows[2].labels["dropout_share"],
        "collective_ops": ops,
        "jaxdrop_adds_collectives": ops["jaxdrop"] != ops["none"],
        "flax_adds_collectives": ops["flax"] != ops["none"],
    }
    header = ["dropout", "step ms", "x no-dropout step", "share in dropout", "share, from the minima", "collectives"]
    section.markdown = markdown_table(header, lines)
    section.notes.append(
        "Share in dropout = (step with dropout - step without) / step without, from the medians and from the minima; "
        "the three steps were timed in alternation. The batch is split over the devices, the parameters are "
        "replicated; model, SGD update and inputs are identical, only the dropout layer differs."
    )
    added = [name for name in ("flax", "jaxdrop") if section.summary[f"{name}_adds_collectives"]]
    section.notes.append(
        "Collectives: the collective ops in each compiled step's HLO (the gradients' all-reduce, which XLA may "
        "combine into one op over a tuple). "
        + (
            f"Dropout changed them for: {', '.join(added)}."
            if added
            else "Neither dropout adds or changes one: the masks are made where the data is "
            f"(jax_threefry_partitionable={jax.config.jax_threefry_partitionable})."  # type: ignore[attr-defined]
        )
    )
    if devices[0].platform == "cpu":
        section.notes.append(
            "CPU devices here are threads of one process sharing the machine's cores: the times show the cost of "
            "dropout relative to the step, not a speed-up from sharding."
        )
    return section


_ROW_FIELDS = ("labels", "note", "value", "times_s", "first_call_s", "calls_per_sample")


def _to_json(section: Section) -> dict[str, Any]:
    return {
        "title": section.title,
        "notes": section.notes,
        "summary": section.summary,
        "markdown": section.markdown,
        "rows": [
            {
                key: getattr(row, key)
                for key in ("labels", "note", "value", "times_s", "first_call_s", "calls_per_sample")
            }
            for row in section.rows
        ],
    }


def _from_json(record: dict[str, Any]) -> Section:
    section = Section("sharded", record["title"], notes=record["notes"], markdown=record["markdown"])
    section.summary = record["summary"]
    for fields in record["rows"]:
        row = Row(fields["labels"], note=fields["note"], value=fields["value"], times_s=fields["times_s"])
        row.first_call_s, row.calls_per_sample = fields["first_call_s"], fields["calls_per_sample"]
        section.rows.append(row)
    return section


def sharded_section(settings: Settings) -> Section:
    """The section; on a CPU backend with fewer than 8 devices, measured in a subprocess with 8 CPU devices."""
    if settings.backend != "cpu" or jax.device_count() >= DEVICES:
        return measure(settings)
    flags = os.environ.get("XLA_FLAGS", "")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={DEVICES}".strip(),
    }
    code = f"from {__name__} import _subprocess_main; _subprocess_main()"
    command = [sys.executable, "-c", code, json.dumps(asdict(settings))]
    # Progress goes to stderr as in this process; the section comes back as JSON on stdout's last line.
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the sharded section's subprocess failed with status {result.returncode}")
    section = _from_json(json.loads(result.stdout.strip().splitlines()[-1]))
    section.notes.append(
        f"Measured in a subprocess with {DEVICES} CPU devices: the run's process CPU time above does not include it."
    )
    return section


def _subprocess_main() -> None:
    """The subprocess of `sharded_section`: settings as JSON in ``argv[1]``, the section as JSON on stdout."""
    print(json.dumps(_to_json(measure(Settings(**json.loads(sys.argv[1])))), default=str))
