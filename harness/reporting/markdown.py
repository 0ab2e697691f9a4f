"""Markdown tables: the one helper every report table goes through."""

from collections.abc import Sequence


def cell(value: object) -> str:
    # A '|' inside a cell would split it into two columns.
    return str(value).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; values are str()-ed and '|' escaped."""
    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
