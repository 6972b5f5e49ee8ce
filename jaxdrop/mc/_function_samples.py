"""Function samples: within one Monte Carlo sample every example of the batch gets the same dropout masks.

Each sample is then one function drawn from the approximate posterior, evaluated on the whole batch (Gal 2016, PhD
thesis, section 3.3; baal's ``ConsistentDropout``). Joint scores over a batch, such as BatchBALD (Kirsch, van
Amersfoort & Gal 2019, NeurIPS), need it: with a fresh mask per example the samples of two inputs are drawn from
different functions. With the option on, the model is ``vmap``-ped over the batch with the sample's key unbatched,
each example run as a batch of one (``x[None]`` in, ``[0]`` out). Every mask is therefore drawn for one example's
shape and shared by the batch: jaxdrop's layers, flax's own ``Dropout`` and hand-written ``jax.random`` calls all
become consistent, and a mask is drawn once per sample rather than once per example. An input's samples no longer
depend on what else is in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks
from jaxdrop.mc import _closures

BatchAxes = tuple[int | None, ...]  # one entry per array leaf: the axis of the batch, or None (shared)


def leaf_axes(args: tuple, batch_axes: object) -> BatchAxes:
    """The batch axis of every leaf of ``args`` (``jax.tree.leaves`` order), validated against the arrays.

    ``batch_axes`` follows ``jax.vmap``'s ``in_axes`` for the positional arguments: ``None`` (the default) batches
    axis 0 of every array argument, an int batches that axis of every array argument, and a tuple or list gives
    one int or None per argument (None: shared by the batch). Non-array leaves are never batched.
    """
    if batch_axes is None or (isinstance(batch_axes, (int, np.integer)) and not isinstance(batch_axes, bool)):
        per_arg: tuple = (0 if batch_axes is None else int(batch_axes),) * len(args)
    elif isinstance(batch_axes, (tuple, list)):
        per_arg = tuple(batch_axes)
        if len(per_arg) != len(args):
            raise ValueError(
                f"`batch_axes` must give one entry (an int axis or None) per positional argument of `fn`: "
                f"{len(args)} argument(s); got {len(per_arg)} entries {_checks.describe(batch_axes)}."
            )
        for entry in per_arg:
            if entry is not None and (isinstance(entry, bool) or not isinstance(entry, (int, np.integer))):
                raise TypeError(
                    f"`batch_axes` entries must be an int axis or None; got {_checks.describe(entry)} in "
                    f"{_checks.describe(batch_axes)}."
                )
    else:
        raise TypeError(
            f"`batch_axes` must be None (axis 0 of every array argument), an int, or a tuple with an int or None "
            f"per positional argument; got {_checks.describe(batch_axes)}."
        )
    axes: list[int | None] = []
    for index, (arg, axis) in enumerate(zip(args, per_arg, strict=True)):
        leaves = jax.tree.leaves(arg)
        arrays = [leaf for leaf in leaves if _closures.is_array(leaf)]
        if axis is not None and not arrays and batch_axes is not None:
            raise ValueError(
                f"`batch_axes[{index}]` is {axis} but argument {index} of `fn` holds no array to batch "
                f"(got {_checks.describe(arg)}); give it None."
            )
        for leaf in leaves:
            if axis is None or not _closures.is_array(leaf) or (batch_axes is None and np.ndim(leaf) == 0):
                axes.append(None)  # by default a scalar array (a temperature, say) is shared: it has no batch axis
            elif np.ndim(leaf) == 0:
                raise ValueError(
                    f"`batch_axes[{index}]` is {axis} but argument {index} of `fn` holds a scalar array, which has "
                    f"no batch axis; give it None."
                )
            else:
                axes.append(_checks.axis(axis, np.ndim(leaf), f"batch_axes[{index}]"))
    check_batch(jax.tree.leaves(args), axes, "batch_axes")
    return tuple(axes)


def check_batch(leaves: Sequence[Any], axes: Sequence[int | None], name: str) -> int:
    """The batch size shared by the batched leaves; a clear error when a leaf has no such axis or sizes differ."""
    sizes = {}
    for position, (leaf, axis) in enumerate(zip(leaves, axes, strict=True)):
        if axis is None:
            continue
        shape = np.shape(leaf)
        if axis >= len(shape):
            raise ValueError(
                f"`{name}`: array {position} has shape {shape}, which has no batch axis {axis}; with "
                f"`function_samples=True` every batched array needs one (pass None for a shared argument)."
            )
        sizes[position] = shape[axis]
    if not sizes:
        raise ValueError(
            f"`{name}` batches no array, so there is no batch to share masks over; `function_samples=True` needs "
            f"at least one array with a batch axis."
        )
    if len(set(sizes.values())) > 1:
        found = ", ".join(f"array {position}: {size}" for position, size in sizes.items())
        raise ValueError(
            f"`{name}`: the batched arrays must share one batch size; got {found}. Give None for an argument "
            f"that is shared by the batch (parameters, say)."
        )
    return next(iter(sizes.values()))


def _first_of_batch_of_one(output: Any) -> Any:
    if jnp.ndim(output) == 0 or jnp.shape(output)[0] != 1:
        raise ValueError(
            f"With `function_samples=True` every output of the model must keep the batch axis first: called on one "
            f"example (a batch of one) it returned an output of shape {jnp.shape(output)}, not (1, ...)."
        )
    return output[0]


def shared_masks(
    call: Callable[[jax.Array, list], Any], key: jax.Array, leaves: list, axes: Sequence[int | None]
) -> Any:
    """``call(key, leaves)`` with every example of the batch run as a batch of one, the key shared.

    ``axes`` gives each leaf's batch axis (None: shared). The outputs have the batch axis first.
    """
    mapped = [(position, axis) for position, axis in enumerate(axes) if axis is not None]

    def one_example(*examples: jax.Array) -> Any:
        batch_of_one = list(leaves)
        for (position, axis), example in zip(mapped, examples, strict=True):
            batch_of_one[position] = jnp.expand_dims(example, axis)
        return jax.tree.map(_first_of_batch_of_one, call(key, batch_of_one))

    in_axes = tuple(axis for _, axis in mapped)
    return jax.vmap(one_example, in_axes=in_axes)(*(leaves[position] for position, _ in mapped))
