"""Timing and machine description for ``python -m jaxdrop bench``: rows measured side by side, in alternation.

Every row of a group is compiled and warmed up first; then each repeat times one sample of every row in turn
(starting from a different row each repeat), so slow drift of a shared machine hits all rows alike and the
ratios between rows stay meaningful even when the absolute times do not.
"""

from __future__ import annotations

import datetime
import gc
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax


@dataclass
class Row:
    """One line of a benchmark table: what is measured (``labels``) and how (``run``, a zero-argument callable).

    ``run`` must return only when the work is done (``jax.block_until_ready`` or a synchronous library call).
    A row whose ``run`` is None is reported with ``note`` (e.g. "not available") instead of a time. ``value``
    holds a number measured without timing (bytes of temp memory).
    """

    labels: dict[str, Any]
    run: Callable[[], Any] | None = None
    note: str = ""
    value: float | None = None
    times_s: list[float] = field(default_factory=list)
    first_call_s: float | None = None
    calls_per_sample: int = 1
    warmup: int | None = None  # calls after the first before timing; None: the group's default

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s else None

    @property
    def min_s(self) -> float | None:
        return min(self.times_s) if self.times_s else None

    @property
    def max_s(self) -> float | None:
        return max(self.times_s) if self.times_s else None

    def to_json(self) -> dict[str, Any]:
        """The raw numbers of this row, JSON-serialisable."""
        return {
            **self.labels,
            "note": self.note,
            "value": self.value,
            "median_s": self.median_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
            "times_s": self.times_s,
            "first_call_s": self.first_call_s,
            "calls_per_sample": self.calls_per_sample,
        }


def block(result: Any) -> Any:
    """Waits for every array in ``result`` (a no-op for non-JAX values such as torch tensors)."""
    return jax.block_until_ready(result)


def measure_group(
    rows: list[Row], repeats: int, warmup: int = 1, min_sample_s: float = 0.0, settle_s: float = 0.05
) -> None:
    """Times every runnable row of ``rows`` ``repeats`` times, in alternation; fills ``times_s`` in place.

    Before each sample the process sleeps ``settle_s`` (untimed), so the previous row's deferred work (freeing its
    buffers: ~20 ms after a flax call on a 2-core CPU) is not charged to the next row.

    The first call of each row (compilation included) is recorded separately, then ``warmup`` more calls are
    made. Rows faster than ``min_sample_s`` run several calls per sample (time per call is stored), so tiny
    shapes are not dominated by timer resolution.
    """
    runnable = [(row, row.run) for row in rows if row.run is not None]
    group_start = time.perf_counter()
    for row, run in runnable:
        start = time.perf_counter()
        run()
        row.first_call_s = time.perf_counter() - start
        elapsed = math.inf
        for _ in range(warmup if row.warmup is None else row.warmup):
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
        if min_sample_s > 0 and elapsed < min_sample_s:
            row.calls_per_sample = min(1000, math.ceil(min_sample_s / max(elapsed, 1e-7)))
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection landing in one row's sample would be charged to that row alone
    try:
        for repeat in range(repeats):
            offset = repeat % max(len(runnable), 1)
            for row, run in runnable[offset:] + runnable[:offset]:
                time.sleep(settle_s)
                start = time.perf_counter()
                for _ in range(row.calls_per_sample):
                    run()
                row.times_s.append((time.perf_counter() - start) / row.calls_per_sample)
    finally:
        if gc_was_enabled:
            gc.enable()
    labels = rows[0].labels if rows else {}
    name = labels.get("group") or labels.get("variant") or (f"T={labels['samples']}" if "samples" in labels else "")
    elapsed = time.perf_counter() - group_start
    print(f"[jaxdrop bench]   {name}: {len(runnable)} rows x {repeats} repeats, {elapsed:.0f} s", file=sys.stderr)


def paired_ratios(numerator: Row, denominator: Row, repeats: int, settle_s: float = 0.05) -> list[float]:
    """``repeats`` ratios ``numerator time / denominator time``, each from two calls made back to back.

    For a target that is a ratio of two rows: on a shared machine the load drifts between the samples of a group,
    and a ratio of two medians taken over different moments moves with it (1.04x to 1.78x for one pair of
    programs in four runs); a ratio of calls a few milliseconds apart sees the same load. The order alternates
    (AB, BA, ...) so neither row always runs right after the settle. Both rows must already be warm
    (``measure_group`` first); their ``times_s`` are not touched.
    """
    if numerator.run is None or denominator.run is None:
        return []
    pair = [numerator.run, denominator.run]
    ratios = []
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for repeat in range(repeats):
            elapsed = [0.0, 0.0]
            for index in (0, 1) if repeat % 2 == 0 else (1, 0):
                time.sleep(settle_s)
                start = time.perf_counter()
                pair[index]()
                elapsed[index] = time.perf_counter() - start
            ratios.append(elapsed[0] / elapsed[1])
    finally:
        if gc_was_enabled:
            gc.enable()
    return ratios


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name: str) -> str | None:
    try:
        module = __import__(module_name)
    except Exception:  # an absent or broken optional peer is recorded as missing, not fatal
        return None
    return getattr(module, "__version__", "unknown")


def machine_info() -> dict[str, Any]:
    """The machine, backend, library versions and active PRNG settings (recorded, never changed)."""
    import jaxlib

    import jaxdrop

    device = jax.devices()[0]
    cores = os.cpu_count()
    usable_cores: int | None
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = cores
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": cores,
        "usable_cpu_count": usable_cores,
        "load_average_at_start": load,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "versions": {
            "jaxdrop": jaxdrop.__version__,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": _version("flax"),
            "equinox": _version("equinox"),
            "haiku": _version("haiku"),
            "optax": _version("optax"),
            "numpy": _version("numpy"),
            "torch": _version("torch"),
        },
        "prng": {
            # jax's Config stub omits its flag attributes; `jax.config.read` refuses these context-manager flags.
            "jax_default_prng_impl": jax.config.jax_default_prng_impl,  # type: ignore[attr-defined]
            "jax_threefry_partitionable": jax.config.jax_threefry_partitionable,  # type: ignore[attr-defined]
            "default_key_impl": str(jax.random.key_impl(jax.random.key(0))),
        },
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def describe_machine(info: dict[str, Any]) -> str:
    """One sentence naming the machine a table was taken on."""
    versions = info["versions"]
    peers = ", ".join(f"{name} {versions[name]}" for name in ("flax", "equinox", "haiku", "torch") if versions[name])
    load = info["load_average_at_start"]
    load_text = f", load average {load[0]:.2f} at start" if load else ""
    return (
        f"{info['cpu_model']} ({info['usable_cpu_count']} usable cores{load_text}), backend {info['backend']} "
        f"({info['device_kind']}), {info['platform']}, Python {info['python']}; jax {versions['jax']}, "
        f"jaxlib {versions['jaxlib']}, {peers}; default PRNG {info['prng']['jax_default_prng_impl']}, "
        f"threefry_partitionable={info['prng']['jax_threefry_partitionable']}; {info['date']}"
    )


@dataclass
class Settings:
    """What a run measures: the backend's sizes, how many repeats, which optional rows."""

    quick: bool
    tiny: bool
    repeats: int
    backend: str

    @property
    def min_sample_s(self) -> float:
        # Tiny shapes take microseconds per call; several calls per sample keep the timer's resolution out.
        return 2e-3 if self.tiny else 0.0

    @property
    def compiler_options(self) -> dict[str, Any] | None:
        """XLA options for every executable of the run: none, except for the ``--tiny`` smoke test.

        Compiling is nearly all of a tiny run (toy shapes run in microseconds); without backend optimisation XLA
        compiles the CPU programs about twice as fast. Timings taken so are not comparable, which is why tiny
        runs judge no target.
        """
        return {"xla_backend_optimization_level": 0} if self.tiny else None


@dataclass
class Section:
    """The rows of one part of the benchmark, their notes, and the markdown that shows them."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    markdown: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Rows, notes and derived numbers of this section, JSON-serialisable."""
        return {
            "title": self.title,
            "notes": self.notes,
            "summary": self.summary,
            "rows": [row.to_json() for row in self.rows],
        }


def fmt_ms(seconds: float | None) -> str:
    """Milliseconds with three significant digits, or a dash."""
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def fmt_spread(row: Row) -> str:
    """``median (min–max)`` in milliseconds."""
    if row.median_s is None:
        return row.note or "–"
    return f"{fmt_ms(row.median_s)} ({fmt_ms(row.min_s)}–{fmt_ms(row.max_s)})"


def fmt_ratio(numerator: float | None, denominator: float | None) -> str:
    """``numerator / denominator`` as ``1.23x``, or a dash when either is missing."""
    if numerator is None or denominator is None or denominator == 0:
        return "–"
    ratio = numerator / denominator
    return f"{ratio:.3g}x" if ratio < 100 else f"{ratio:.0f}x"


def dropout_share_cells(rows: list[Row]) -> list[list[str]]:
    """Per row: its time, its ratio to the first row (the step without dropout) and dropout's share of the step.

    The share is ``(step with dropout - step without) / step without``, from the medians and from the minima (on a
    loaded machine the minima are the steadier estimate of a small difference); both go into ``row.labels``
    (``dropout_share``, ``dropout_share_of_minima``).
    """
    base, base_min = rows[0].median_s, rows[0].min_s
    cells = []
    for row in rows:
        share = None if row.median_s is None or not base else (row.median_s - base) / base
        share_min = None if row.min_s is None or not base_min else (row.min_s - base_min) / base_min
        row.labels["dropout_share"], row.labels["dropout_share_of_minima"] = share, share_min
        shares = ["–" if value is None else f"{value:.1%}" for value in (share, share_min)]
        cells.append([fmt_spread(row), fmt_ratio(row.median_s, base), *shares])
    return cells
