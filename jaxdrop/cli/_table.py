"""``markdown_table``: the one table formatter of the command line and the example scripts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A GitHub markdown table with padded columns, so the same text reads as a table in a terminal too.

    Args:
      header: the column names.
      rows: one sequence of cells per row, as many as ``header``; each cell is shown with ``str``.
      align: one letter per column, ``"l"`` or ``"r"``; by default the first column is left-aligned (labels) and
        the others right-aligned (numbers).

    Returns:
      The table, one line per row, without a trailing newline.

    Raises:
      ValueError: a row or ``align`` does not have one entry per column.

    Examples:
      >>> print(markdown_table(["rate", "kept"], [[0.1, "90%"]]))
      | rate | kept |
      |------|-----:|
      | 0.1  |  90% |
    """
    cells = [[str(cell) for cell in row] for row in rows]
    align = align or "l" + "r" * (len(header) - 1)
    for entries in (align, *cells):
        if len(entries) != len(header):
            raise ValueError(f"every row and `align` need {len(header)} entries (the header's); got {list(entries)}.")
    widths = [max(3, len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(header)]

    def line(row: Sequence[str]) -> str:
        padded = (cell.rjust(w) if a == "r" else cell.ljust(w) for cell, w, a in zip(row, widths, align, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if a == "r" else "-" * (w + 2) for w, a in zip(widths, align, strict=True)
    )
    return "\n".join([line(list(header)), rule + "|", *(line(row) for row in cells)])
