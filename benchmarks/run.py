"""Runs the jaxdrop benchmark from a source checkout and can put its report into the repository's README.

    python benchmarks/run.py --quick --update-readme    # regenerate the table between the bench markers of README.md
    python benchmarks/run.py --out DIR                  # the full run; RESULTS.md/.json come from such a run

Every option but ``--update-readme`` goes to ``python -m jaxdrop bench`` (``jaxdrop.cli.bench.main``: ``--quick``,
``--out DIR``, ``--sections ...``, ``--repeats N``, ``--tiny``). ``--update-readme [PATH]`` splices the report
(``results.md``) into PATH, by default the README.md of this checkout, between ``<!-- bench:start -->`` and
``<!-- bench:end -->``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"

try:
    from jaxdrop.cli import bench
except ImportError:  # run from a source checkout without installing: use the package next to this folder
    sys.path.insert(0, str(REPO))
    from jaxdrop.cli import bench


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


def main(argv: list[str] | None = None) -> int:
    """Runs ``jaxdrop.cli.bench.main`` with ``argv`` (less ``--update-readme``), then splices its report.

    Returns:
      The process exit status: the benchmark's, or 1 when PATH has no markers.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Runs `python -m jaxdrop bench` and splices its report into the README.",
        epilog="Every other option goes to `python -m jaxdrop bench` (see `python -m jaxdrop bench --help`).",
    )
    parser.add_argument(
        "--update-readme",
        nargs="?",
        const=REPO / "README.md",
        type=Path,
        metavar="PATH",
        help=f"splice the report into PATH (default: this checkout's README.md) between {README_START} and "
        f"{README_END}",
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="directory for results.json and results.md (passed on)")
    args, bench_argv = parser.parse_known_args(argv)
    command = " ".join(["python benchmarks/run.py", *argv])
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        status = bench.main([*bench_argv, "--out", str(out)], command=command)
        if status or args.update_readme is None:
            return status
        markdown = (out / "results.md").read_text()
    if not update_readme(args.update_readme, markdown):
        print(f"{args.update_readme} has no {README_START} ... {README_END} markers; not updated", file=sys.stderr)
        return 1
    print(f"updated {args.update_readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
