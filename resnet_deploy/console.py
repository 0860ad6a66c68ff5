"""How tables reach the reader: a rich table on a terminal, plain aligned text anywhere else.

Off a terminal (CI logs, `| tee`, `| less`, a file) rich assumes 80 columns and cuts or folds cells, so that
`cifar_resnet110` and `cifar_resnet1202` both read `cifar_resnet1…`. There every cell is printed whole, in columns
padded to the widest cell and two spaces apart: one line per row, greppable, never wrapped.
Every table of the command line goes through `print_table`; every cell is printed escaped (`printable`).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from resnet_deploy.runtime.errors import printable


def is_terminal(stream: TextIO | None = None) -> bool:
    """True when `stream` (default stdout) is a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def table(title: str, columns: list[str] | tuple[str, ...], rows: list[list[Any]],
          right: tuple[str, ...] = ()) -> list[str]:
    """The plain-text lines of a table: title, header, a rule, one line per row; `right`: columns aligned right."""
    cells = [[printable(str(c)) for c in columns]] + [[printable(str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if col in right else c.ljust(w) for c, w, col in zip(row, widths, columns, strict=True)]
        return "  ".join(parts).rstrip()

    out = [printable(title)] if title else []
    return [*out, line(cells[0]), "  ".join("-" * w for w in widths), *(line(r) for r in cells[1:])]


def print_table(title: str, columns: list[str] | tuple[str, ...], rows: list[list[Any]],
                right: tuple[str, ...] = (), styles: dict[str, dict[str, str]] | None = None) -> None:
    """Print a table: rich's on a terminal (a long cell folds, never cut), plain lines elsewhere.

    Args:
        title: the table's title ("" for none).
        columns: the header; rows: one list of cells per row (any values, shown with str()).
        right: the columns aligned right (numbers).
        styles: per column, a colour per cell value (doctor's status), used on a terminal only.
    """
    if not is_terminal():
        print("\n".join(table(title, columns, rows, right)), flush=True)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(printable(title)) if title else None)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", overflow="fold")
    styles = styles or {}
    for row in rows:
        t.add_row(*(Text(printable(str(c)), style=styles.get(col, {}).get(str(c), ""))
                    for c, col in zip(row, columns, strict=True)))
    Console().print(t)  # a cell wider than its share of the window folds onto more lines: never cut
