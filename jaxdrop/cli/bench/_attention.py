"""Attention dropout at any length: the blockwise path against dense attention (flax's and jaxdrop's ``"xla"``).

Every row is ``grad`` of ``sum(attention(q, k, v) * w)`` with respect to query, key and value, with dropout on
the attention weights (rate 0.1, flax's default ``broadcast_dropout=True``), batch 1, 8 heads, depth 64, f32. The
memory curve is compile-only (``memory_analysis().temp_size_in_bytes``, nothing is allocated); the times are
measured in alternation (``measure_group``); the longest length runs once, first, so the process's peak resident
memory belongs to it.
"""

from __future__ import annotations

import functools
import resource
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

import jaxdrop
from jaxdrop.cli._table import markdown_table
from jaxdrop.cli.bench._dropout import compiled_row, find, optional_module, temp_bytes
from jaxdrop.cli.bench._timing import Row, Section, Settings, block, fmt_ratio, fmt_spread, measure_group

FLAX = "flax.linen (dense)"
XLA = "jaxdrop, implementation='xla' (dense)"
DEFAULT = "jaxdrop, default (blockwise)"
NO_DROPOUT = "jaxdrop, default, rate 0"
RATE = 0.1
MiB = 2**20
FIGURE_NAME = "attention-memory.png"


def _sizes(settings: Settings) -> dict[str, Any]:
    """Heads, depth, the lengths of the memory curve, the timed lengths and the one long run."""
    if settings.tiny:
        return {"heads": 2, "depth": 16, "curve": (128,), "timed": (64,), "long": 128, "blocks": (16, 16)}
    curve = (1024, 4096) if settings.quick else (512, 1024, 2048, 4096, 8192, 16384, 32768)
    long = None if settings.quick else 32768  # minutes on a 2-core CPU: the full run only
    return {"heads": 8, "depth": 64, "curve": curve, "timed": (1024, 4096), "long": long, "blocks": (None, None)}


def _implementations(settings: Settings) -> dict[str, Callable[..., jax.Array] | str]:
    """``(q, k, v, key, rate) -> out`` per row; a str says why a row is absent."""
    block_q, block_kv = _sizes(settings)["blocks"]
    ours = functools.partial(jaxdrop.dot_product_attention, block_q=block_q, block_kv=block_kv)
    impls: dict[str, Callable[..., jax.Array] | str] = {}
    linen, reason = optional_module("flax.linen")
    impls[FLAX] = reason or (
        lambda q, k, v, key, rate: linen.dot_product_attention(q, k, v, dropout_rng=key, dropout_rate=rate)
    )
    impls[XLA] = lambda q, k, v, key, rate: ours(q, k, v, dropout_rng=key, dropout_rate=rate, implementation="xla")
    impls[DEFAULT] = lambda q, k, v, key, rate: ours(q, k, v, dropout_rng=key, dropout_rate=rate)
    return impls


def _gradient(attend: Callable[..., jax.Array], rate: float) -> Callable[..., Any]:
    """``grad(sum(attend(q, k, v) * w))`` with respect to q, k, v: the same structure for every row."""
    return jax.grad(lambda q, k, v, w, key: jnp.sum(attend(q, k, v, key, rate) * w), argnums=(0, 1, 2))


def _inputs(length: int, sizes: dict[str, Any]) -> list[jax.Array]:
    shape = (1, length, sizes["heads"], sizes["depth"])
    return [jax.random.normal(jax.random.key(seed), shape, jnp.float32) for seed in range(4)]


def _long_run(settings: Settings, sizes: dict[str, Any], section: Section) -> None:
    """One forward+backward at the longest length with the default implementation: time and peak memory."""
    length = sizes["long"]
    grad = _gradient(_implementations(settings)[DEFAULT], RATE)  # type: ignore[arg-type]
    args = (*_inputs(length, sizes), jax.random.key(0))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    executable = jax.jit(grad).lower(*args).compile(settings.compiler_options)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    block(executable(*args))
    run_s = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    analysis = executable.memory_analysis()
    compiled = None
    if analysis is not None:
        compiled = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
    row = Row({"group": "long", "impl": DEFAULT, "length": length}, value=compiled)
    row.times_s, row.first_call_s = [run_s], compile_s + run_s
    section.rows.append(row)
    section.summary["long"] = {
        "length": length,
        "run_s": run_s,
        "compile_s": compile_s,
        "compiled_peak_bytes": compiled,
        "process_peak_rss_bytes": rss_after * 1024,
        "process_peak_rss_before_bytes": rss_before * 1024,
    }
    print(f"[jaxdrop bench]   attention L={length}: fwd+bwd {run_s:.1f} s", file=sys.stderr, flush=True)


def _memory_curve(settings: Settings, sizes: dict[str, Any], section: Section) -> None:
    """Compiled temp memory of the gradient per implementation and length (compile only)."""
    for length in sizes["curve"]:
        spec = jax.ShapeDtypeStruct((1, length, sizes["heads"], sizes["depth"]), jnp.float32)
        for name, attend in _implementations(settings).items():
            labels = {"group": "memory", "impl": name, "length": length}
            if isinstance(attend, str):
                section.rows.append(Row(labels, note=attend))
                continue
            value = temp_bytes(
                _gradient(attend, RATE), spec, spec, spec, spec, jax.random.key(0), options=settings.compiler_options
            )
            section.rows.append(Row(labels, value=value))


def _timed(settings: Settings, sizes: dict[str, Any], section: Section) -> None:
    """Forward+backward times, rows of one length measured in alternation."""
    for length in sizes["timed"]:
        args = (*_inputs(length, sizes), jax.random.key(0))
        rows = []
        impls = _implementations(settings)
        for name, rate in ((FLAX, RATE), (XLA, RATE), (DEFAULT, RATE), (NO_DROPOUT, 0.0)):
            attend = impls[DEFAULT if name == NO_DROPOUT else name]
            labels = {"group": f"attention L={length}", "impl": name, "length": length}
            if isinstance(attend, str):
                rows.append(Row(labels, note=attend))
                continue
            rows.append(compiled_row(labels, _gradient(attend, rate), *args, options=settings.compiler_options))
        measure_group(rows, settings.repeats, min_sample_s=settings.min_sample_s)
        section.rows += rows


def attention_section(settings: Settings) -> Section:
    """Memory curve, times at 1k and 4k tokens, and one run at 32k tokens of attention with dropout."""
    sizes = _sizes(settings)
    section = Section(
        "attention",
        f"Attention dropout at any length: grad of attention with dropout {RATE}, batch 1, {sizes['heads']} heads, "
        f"depth {sizes['depth']}, f32",
    )
    if sizes["long"] is not None:
        _long_run(settings, sizes, section)
    _memory_curve(settings, sizes, section)
    _timed(settings, sizes, section)

    lines = []
    for length in sizes["curve"]:
        flax_row = find(section.rows, group="memory", impl=FLAX, length=length)
        for name in (FLAX, XLA, DEFAULT):
            row = find(section.rows, group="memory", impl=name, length=length)
            value = None if row is None else row.value
            share = (
                "–"
                if value is None or flax_row is None or not flax_row.value
                else f"{100 * value / flax_row.value:.2f}%"
            )
            lines.append([str(length), name, "–" if value is None else f"{value / MiB:,.1f}", share])
    memory_table = markdown_table(["length", "implementation", "temp MiB (compiled)", "of flax"], lines, "rlrr")
    lines = []
    for length in sizes["timed"]:
        flax_row = find(section.rows, group=f"attention L={length}", impl=FLAX)
        for name in (FLAX, XLA, DEFAULT, NO_DROPOUT):
            row = find(section.rows, group=f"attention L={length}", impl=name)
            if row is None:
                continue
            lines.append(
                [str(length), name, fmt_spread(row), fmt_ratio(row.median_s, flax_row.median_s if flax_row else None)]
            )
    time_table = markdown_table(["length", "implementation", "fwd+bwd ms", "x flax"], lines, "rlrr")
    long = section.summary.get("long")
    long_text = "The long run is part of the full benchmark only (not `--quick`)."
    if long is not None:
        compiled = long["compiled_peak_bytes"]
        long_text = (
            f"L = {long['length']:,}: one forward+backward with dropout (default implementation) took "
            f"{long['run_s']:.1f} s (compiling: {long['compile_s']:.1f} s); compiled peak memory (temp + arguments + "
            f"outputs) {'–' if compiled is None else f'{compiled / MiB:,.0f} MiB'}, process peak resident memory "
            f"{long['process_peak_rss_bytes'] / MiB:,.0f} MiB."
        )
    section.markdown = "\n\n".join([memory_table, time_table, long_text])
    section.notes += [
        "Temp MiB: `memory_analysis()` of the compiled gradient with respect to q, k and v, nothing allocated. The "
        "dense paths store (q_length, kv_length) arrays for the backward pass; the blockwise path stores the "
        "output and one log-sum-exp per query row, and regenerates each tile's dropout mask from the key.",
        "Times: rows of one length measured in alternation, order rotated each repeat; median (min–max).",
    ]
    return section


def attention_targets(section: Section | None, tiny: bool) -> list[dict[str, Any]]:
    """The issue's targets, in the runner's target format (``target``, ``required``, ``measured``, ``status``,
    ``detail``); n/a when the section did not run."""
    targets: list[dict[str, Any]] = []

    def add(name: str, required: str, measured: float | None, passed: bool | None, detail: str) -> None:
        status = "n/a" if passed is None else ("PASS" if passed else "FAIL")
        if tiny and passed is not None:
            status, detail = "not judged (tiny)", detail + " (tiny sizes: a smoke test, not the target shapes)"
        targets.append({"target": name, "required": required, "measured": measured, "status": status, "detail": detail})

    rows = section.rows if section is not None else []
    length = 4096 if not tiny else 128
    ours = find(rows, group="memory", impl=DEFAULT, length=length)
    flax_row = find(rows, group="memory", impl=FLAX, length=length)
    measured, detail = None, ""
    if ours and flax_row and ours.value is not None and flax_row.value:
        measured = ours.value / flax_row.value
        detail = f"{ours.value / MiB:.1f} MiB vs {flax_row.value / MiB:,.0f} MiB"
    add(
        f"attention: temp memory of grad at L={length}, default / flax",
        "<= 2%",
        measured,
        None if measured is None else measured <= 0.02,
        detail,
    )

    long = section.summary.get("long") if section is not None else None
    add(
        f"attention: fwd+bwd with dropout at L={'–' if long is None else long['length']} runs (s)",
        "runs",
        None if long is None else long["run_s"],
        None if long is None else True,
        ""
        if long is None
        else f"{long['run_s']:.1f} s, process peak RSS {long['process_peak_rss_bytes'] / MiB:,.0f} MiB",
    )
    for timed_length, limit, strict in ((1024, 1.2, False), (4096, 1.0, True)):
        timed_length = timed_length if not tiny else 64
        group = f"attention L={timed_length}"
        ours, flax_row = find(rows, group=group, impl=DEFAULT), find(rows, group=group, impl=FLAX)
        ratio = None
        if ours and flax_row and ours.median_s and flax_row.median_s:
            ratio = ours.median_s / flax_row.median_s
        add(
            f"attention: fwd+bwd time at L={timed_length}, default / flax",
            f"{'<' if strict else '<='} {limit:g}x",
            ratio,
            None if ratio is None else (ratio < limit if strict else ratio <= limit),
            "",
        )
    ratios = []
    for row in rows:
        if row.labels.get("impl") == NO_DROPOUT and row.median_s:
            dropped = find(rows, group=row.labels["group"], impl=DEFAULT)
            if dropped and dropped.median_s:
                ratios.append((dropped.median_s / row.median_s, row.labels["length"]))
    worst = max(ratios) if ratios else None
    add(
        "attention: dropout overhead in the blockwise path, rate 0.1 / rate 0, fwd+bwd",
        "<= 1.3x",
        None if worst is None else worst[0],
        None if worst is None else worst[0] <= 1.3,
        ", ".join(f"L={length}: {ratio:.2f}x" for ratio, length in ratios),
    )
    return targets


def memory_figure(section: Section, path: Path, machine: str = "") -> Path:
    """Writes the memory curve of ``section`` (temp MiB of the gradient against the length, log-log) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    for name, style in ((FLAX, "s-"), (XLA, "o-"), (DEFAULT, "^-")):
        points = [
            (row.labels["length"], row.value / MiB)
            for row in section.rows
            if row.labels.get("group") == "memory" and row.labels["impl"] == name and row.value
        ]
        if points:
            axes.plot(*zip(*points, strict=True), style, label=name)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("sequence length (q_length = kv_length)")
    axes.set_ylabel("temp memory of grad, MiB (compiled)")
    axes.set_title(section.title.split(": ", 1)[-1], fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    footer = textwrap.fill(machine, 150)
    if footer:
        figure.text(0.01, 0.01, footer, fontsize=5.5, alpha=0.7)
    figure.tight_layout(rect=(0, 0.025 * (footer.count("\n") + 1.5) if footer else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
