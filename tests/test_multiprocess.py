"""Many hosts, one mask: a ``jax.distributed`` job of two processes gives the bits of one process and of one device.

Two worker processes (tests/multiprocess_worker.py) of 4 CPU devices each join a job through a coordinator on a
free localhost port; a third, the reference, runs the same checks on one device and (the linen steps in the default
run, every check with ``-m slow``) in one process of 8 devices. Over 2-D ``("data", "model")`` meshes of all 8
devices (data-parallel 8x1, tensor-parallel 1x8, 2x4, and a 4x2 grid whose "model" groups span both processes) each
worker writes the shards it holds; here they are put back together and compared with the reference: the functional
variants and the linen/nnx layers (outputs; input gradients with ``-m slow``), attention dropout dense and
blockwise (outputs that are the kept weights), linen and nnx training steps (loss, outputs, parameter and input
gradients, the updated parameters; with and without ``nn.remat``; at two step keys), and ``jaxdrop.mc.predict``
with its samples split over a mesh axis spanning both processes. Everything is compared bit for bit except the
float parts documented in docs/determinism.md, whose masks are compared bit for bit and values within 1e-5. The
compiled steps' collective ops are compared with and without dropout.

The training steps' parameters and inputs are dyadic (``multiprocess_worker.dyadic``), so every float sum is exact
in any order: a sharded reduction (the gradients' all-reduce) cannot differ from an unsharded one, and a bit that
differs is a mask that differs. Every process runs under ``nice``, a time limit and a process group of its own
(killed on failure, with the workers' logs in the failure message); the port is chosen at run time and the
temporary directory is removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import multiprocess_worker as worker
import numpy as np
import pytest
from stat_bounds import binomial_bound
from test_determinism import NOT_BITWISE_ACROSS_PROGRAMS

from jaxdrop.cli.bench._sharded import collective_ops

WORKER = Path(worker.__file__)
TIMEOUT_S = {"default": 180, "full": 900}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(out: Path, suite: str, process_id: int, num_processes: int, port: int, local_devices: int):
    log = open(out / f"log{process_id if num_processes > 1 else '-reference'}.txt", "w")
    command = ["nice", sys.executable, str(WORKER), "--out", str(out), "--suite", suite]
    command += ["--process-id", str(process_id), "--num-processes", str(num_processes), "--port", str(port)]
    command += ["--local-devices", str(local_devices)]
    # The worker sets its device count itself: a forced count from the caller's XLA_FLAGS would contradict it.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    # A process group of its own: a hung job is killed whole, never anything else.
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return process, log


def run_job(out: Path, suite: str) -> None:
    """Runs the two-process job and the one-process reference side by side; raises with their logs on failure."""
    port = _free_port()
    for folder in ("job", "reference"):
        (out / folder).mkdir(exist_ok=True)
    jobs = [_launch(out / "job", suite, process_id, 2, port, 4) for process_id in (0, 1)]
    jobs.append(_launch(out / "reference", suite, 0, 1, 0, 8))
    deadline = time.monotonic() + TIMEOUT_S[suite]

    def first_failure() -> str:
        for process, log in jobs:
            if process.poll():  # exited, not 0
                return f"the worker logging to {Path(log.name).relative_to(out)} exited with {process.returncode}"
        return ""

    failed = ""
    try:
        # Poll them all: a worker that fails leaves its peer waiting on the coordinator, so stop at the first.
        while not failed and any(process.poll() is None for process, _ in jobs):
            failed = first_failure() or (f"timed out after {TIMEOUT_S[suite]} s" if time.monotonic() > deadline else "")
            time.sleep(0.2)
        failed = failed or first_failure()
    finally:
        for process, log in jobs:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()
    if failed:
        logs = sorted(out.glob("*/log*.txt"))
        tails = "\n".join(f"--- {log.relative_to(out)}\n{log.read_text()[-3000:]}" for log in logs)
        pytest.fail(f"multi-process job: {failed}\n{tails}", pytrace=False)


def assemble(files: list[Path]) -> dict[str, np.ndarray]:
    """Global arrays from the shards the processes wrote; replicas of a shard must agree bit for bit."""
    shards: dict[str, dict[tuple, np.ndarray]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with np.load(file) as data:
            for entry in data.files:
                name, *rest = entry.split("|")
                if rest == ["shape"]:
                    shapes[name] = tuple(data[entry])
                elif rest[-1] == "data":
                    index = tuple(map(tuple, data[f"{name}|{rest[0]}|index"]))
                    block = data[entry]
                    previous = shards.setdefault(name, {}).setdefault(index, block)
                    assert_bitwise(previous, block, f"{name}: two replicas of shard {index} differ")
    arrays = {}
    for name, shape in shapes.items():
        blocks = shards[name]
        first = next(iter(blocks.values()))
        array, covered = np.zeros(shape, first.dtype), np.zeros(shape, bool)
        for index, block in blocks.items():
            region = tuple(slice(start, stop) for start, stop in index)
            array[region], covered[region] = block, True
        assert covered.all(), f"{name}: the shards do not cover the array"
        arrays[name] = array
    return arrays


def assert_bitwise(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    a_bytes, b_bytes = a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)
    if not np.array_equal(a_bytes, b_bytes):
        differ = np.flatnonzero(a_bytes != b_bytes).size
        pytest.fail(f"{what}: {differ} bytes differ", pytrace=False)


def _float_part(name: str) -> bool:
    """Results whose float arithmetic after the mask may round differently on another mesh (docs/determinism.md):
    the variants in NOT_BITWISE_ACROSS_PROGRAMS, and MC summaries (softmax, log, a mean over samples that a mesh
    adds in another order); their masks and samples are compared bit for bit."""
    parts = name.split("/")
    if parts[1] == "variants":
        return parts[2] in NOT_BITWISE_ACROSS_PROGRAMS
    return parts[1] == "mc_predict" and parts[-1] != "samples"


def compare(out: Path, suite: str) -> dict[str, int]:
    """Every result of the job equals the one-device result and, for the checks the reference also ran on the job's
    meshes (all in the full suite), the one-process result, bit for bit; except the documented float parts, whose
    masks are compared bit for bit and values within 1e-5 (a gloo all-reduce across processes adds in another
    order than the in-process one)."""
    job = assemble(sorted((out / "job").glob("process*.npz")))
    reference = assemble([out / "reference" / "process0.npz"])
    checks = {name: value for name, value in worker.SUITES[suite].items() if name not in ("collectives", "reference")}
    ran = {f"{layout}/{check}" for check, layouts in checks.items() for layout in layouts}
    assert {"/".join(name.split("/")[:2]) for name in job} == ran
    counts = dict.fromkeys(("bitwise vs one process", "bitwise vs one device", "ulp-close"), 0)
    for name, array in job.items():
        references = {"one device": reference["one/" + name.split("/", 1)[1]]}
        if name.split("/")[1] in worker.SUITES[suite]["reference"]:
            references["one process"] = reference[name]
        for what, expected in references.items():
            if _float_part(name):
                np.testing.assert_array_equal(array == 0, expected == 0, err_msg=f"{name}: mask vs {what}")
                np.testing.assert_allclose(array, expected, rtol=1e-5, atol=1e-6, err_msg=f"{name} vs {what}")
                counts["ulp-close"] += 1
            else:
                assert_bitwise(array, expected, f"{name}: 2 processes vs {what}")
                counts[f"bitwise vs {what}"] += 1
    return counts


def check_not_frozen(out: Path) -> None:
    """The comparisons above are not of constants: masks differ between steps and keep about half at rate 0.5,
    gradients flow, and ``nn.remat`` recomputes the very masks of the step without it."""
    job = assemble(sorted((out / "job").glob("process*.npz")))
    for layout in worker.LAYOUTS:
        prefix = f"{layout}/linen_step/remat=False"
        if f"{prefix}/step0/out" not in job:
            continue
        step0, step1 = job[f"{prefix}/step0/out"], job[f"{prefix}/step1/out"]
        assert not np.array_equal(step0 == 0, step1 == 0), f"{layout}: steps 0 and 1 drew one mask"
        assert 0 < np.mean(step0 == 0) < 1, f"{layout}: drop path dropped {np.mean(step0 == 0):.0%} of the rows"
        assert np.abs(job[f"{prefix}/step0/x_grad"]).sum() > 0
        for name in [name for name in job if name.startswith(prefix)]:
            remat = name.replace("remat=False", "remat=True")
            assert_bitwise(job[remat], job[name], f"{remat}: nn.remat changed the step")
    for name, value in job.items():
        if name.endswith("/kept"):  # attention [batch, q, heads, k]: one mask of q x k shared, or one per head
            decisions = value.size if "per-head" in name else value.shape[1] * value.shape[3]
            bound = binomial_bound(decisions, 0.5)
            assert abs(value.mean() - 0.5) < bound, f"{name}: kept {value.mean():.1%} at rate 0.5"
        if name.endswith("blockwise_equals_dense"):
            assert bool(value), name


def check_collectives(out: Path) -> dict:
    """jaxdrop's dropout adds no collective op to a data-parallel or tensor-parallel step (flax's: recorded)."""
    counts = json.loads((out / "job" / "collectives.json").read_text())
    for layout, by_impl in counts.items():
        assert by_impl["none"], f"{layout}: the sharded step has no collective at all: {by_impl}"
        assert by_impl["jaxdrop"] == by_impl["none"], f"{layout}: jaxdrop's dropout changed the collectives {by_impl}"
    return counts


@pytest.mark.slow  # about 45 s: the default suite's 10-minute budget on 2 cores (v2 masks made every compile slower)
def test_two_processes_match_one_process_and_one_device_bit_for_bit(tmp_path):
    # One test, one launch, every check: under pytest-xdist, tests sharing a module fixture may land on different
    # workers and launch the job once each.
    run_job(tmp_path, "default")
    counts = compare(tmp_path, "default")
    # the linen steps' 88 arrays against one process; every array but the float parts against one device
    assert counts["bitwise vs one process"] >= 80 and counts["bitwise vs one device"] >= 100, counts
    check_not_frozen(tmp_path)
    assert set(check_collectives(tmp_path)) == {"data8", "model8"}  # data- and tensor-parallel steps
    shutil.rmtree(tmp_path / "job")  # the shards (a few MB); pytest removes the rest with its old temporary dirs
    shutil.rmtree(tmp_path / "reference")


@pytest.mark.slow
def test_every_variant_layer_and_mesh_on_two_processes(tmp_path):
    run_job(tmp_path, "full")  # about 250 s of CPU: 4 layouts x every variant, layer and step
    counts = compare(tmp_path, "full")
    assert counts["bitwise vs one process"] >= 500 and counts["ulp-close"] > 0, counts
    check_not_frozen(tmp_path)
    check_collectives(tmp_path)


def test_collective_counts_read_the_compiled_hlo():
    hlo = """
      %all-reduce-start.1 = (f32[8]{0}, /*index=1*/f32[2]{0}) all-reduce-start(f32[8]{0} %p, f32[2]{0} %r)
      %all-reduce-done.1 = f32[8]{0} all-reduce-done(f32[8]{0} %all-reduce-start.1)
      %ag = f32[16]{0} all-gather(f32[2]{0} %q), dimensions={0}
      %fusion.3 = f32[8]{0} fusion(f32[8]{0} %all-reduce-done.1), calls=%fused_computation
    """
    assert collective_ops(hlo) == ["all-gather f32[16]{0}", "all-reduce (f32[8]{0}, f32[2]{0})"]
