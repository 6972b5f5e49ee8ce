"""Runs the jaxdrop benchmark from a source checkout and writes the repository's committed results.

    python benchmarks/run.py                    # full run: writes benchmarks/RESULTS.md and benchmarks/RESULTS.json
    python benchmarks/run.py --update-readme    # the same, and puts its summary into README.md
    python benchmarks/run.py --readme-only      # puts the summary of the committed RESULTS.md into README.md
    python benchmarks/run.py --quick            # a shorter measurement: printed only (or --out DIR elsewhere)

Every other option goes to ``python -m jaxdrop bench`` (``jaxdrop.cli.bench.main``: ``--quick``, ``--sections``,
``--repeats N``, ``--tiny``). Only a full run (no ``--quick``, ``--tiny`` or ``--sections``) writes the committed
files: the others measure fewer rows or toy shapes, so they refuse ``--update-readme`` and an ``--out`` inside
``benchmarks/``. The README summary (machine, command, targets table and a link to RESULTS.md) goes between
``<!-- bench:start -->`` and ``<!-- bench:end -->``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "benchmarks"
RESULTS_MD, RESULTS_JSON = BENCH_DIR / "RESULTS.md", BENCH_DIR / "RESULTS.json"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"
RESULTS_HEADER = (
    "# jaxdrop benchmark results: full run\n\n"
    "Written by `python benchmarks/run.py` (the full mode of `python -m jaxdrop bench`); raw samples in "
    "`benchmarks/RESULTS.json`. The ratios were measured in alternation in one process; read them, not the "
    "absolute milliseconds.\n\n"
)

try:
    from jaxdrop.cli import bench
except ImportError:  # run from a source checkout without installing: use the package next to this folder
    sys.path.insert(0, str(REPO))
    from jaxdrop.cli import bench


def readme_summary(report: str, results_link: str = "benchmarks/RESULTS.md") -> str:
    """The part of a benchmark report that goes into the README: machine, command and the targets table.

    ``report`` is a ``results.md`` (or RESULTS.md, whose header before ``Machine:`` is dropped); the section
    tables after the targets are replaced by a link to ``results_link``.
    """
    start = report.find("Machine: ")
    if start < 0:
        raise ValueError("the report has no 'Machine: ' line; is it a `python -m jaxdrop bench` report?")
    body = report[start:]
    targets = body.find("### Targets")
    following = body.find("\n### ", targets + 1) if targets >= 0 else -1
    summary = (body if following < 0 else body[:following]).rstrip()
    return f"{summary}\n\nEvery section's tables, from the same run: [{results_link}]({results_link})."


def update_readme(path: Path, markdown: str) -> bool:
    """Replaces the text between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in ``path``.

    Returns False (and leaves the file alone) when the file or either marker is missing.
    """
    if not path.exists():
        return False
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    path.write_text(text[: start + len(README_START)] + "\n" + markdown + "\n" + text[end:])
    return True


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def main(argv: list[str] | None = None) -> int:
    """Runs ``jaxdrop.cli.bench.main`` with the options it knows, then writes what this checkout commits.

    Returns:
      The process exit status: the benchmark's, or 1 when the README has no markers. Usage errors (a quick or
      tiny run asked to write committed files) exit with status 2.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Runs `python -m jaxdrop bench` and writes benchmarks/RESULTS.md/.json and the README summary.",
        epilog="Every other option goes to `python -m jaxdrop bench` (see `python -m jaxdrop bench --help`).",
    )
    parser.add_argument(
        "--update-readme",
        nargs="?",
        const=REPO / "README.md",
        type=Path,
        metavar="PATH",
        help=f"put the summary into PATH (default: this checkout's README.md) between {README_START} and "
        f"{README_END}; full runs only",
    )
    parser.add_argument(
        "--readme-only", action="store_true", help="measure nothing: put the committed RESULTS.md's summary into PATH"
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="write results.json and results.md to DIR instead of RESULTS.*"
    )
    parser.add_argument("--quick", action="store_true", help="passed on; such a run writes no committed file")
    parser.add_argument("--tiny", action="store_true", help="passed on; such a run writes no committed file")
    # --sections and --repeats go to the benchmark unparsed; a run with --sections writes no committed file either.
    args, bench_argv = parser.parse_known_args(argv)
    readme = args.update_readme or REPO / "README.md"
    if args.readme_only:
        return _splice(readme, readme_summary(RESULTS_MD.read_text()))
    if args.update_readme is not None and args.out is not None:
        parser.error("--update-readme summarises the committed RESULTS.md, which --out leaves alone; drop one")
    partial = [flag for flag in ("--quick", "--tiny") if getattr(args, flag[2:])]
    partial += ["--sections"] if any(arg.startswith("--sections") for arg in bench_argv) else []
    if partial:
        if args.update_readme is not None:
            parser.error(f"{' and '.join(partial)} results never go into the README; drop --update-readme")
        if args.out is not None and _inside(args.out, BENCH_DIR):
            parser.error(f"{' and '.join(partial)} results never go into {BENCH_DIR}; choose another --out")
        bench_argv += [flag for flag in partial if flag != "--sections"]
    command = " ".join(["python benchmarks/run.py", *argv])
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        status = bench.main([*bench_argv, "--out", str(out)], command=command)
        if status or partial:
            return status
        report = (out / "results.md").read_text()
        if args.out is None:  # a full run into the committed files
            RESULTS_MD.write_text(RESULTS_HEADER + report)
            shutil.copyfile(out / "results.json", RESULTS_JSON)
            print(f"wrote {RESULTS_MD} and {RESULTS_JSON}", file=sys.stderr)
    if args.update_readme is None:
        return 0
    return _splice(readme, readme_summary(report))


def _splice(readme: Path, summary: str) -> int:
    if not update_readme(readme, summary):
        print(f"{readme} has no {README_START} ... {README_END} markers; not updated", file=sys.stderr)
        return 1
    print(f"updated {readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
