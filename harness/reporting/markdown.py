"""Markdown tables: the one helper every report table goes through."""

from collections.abc import Sequence


def cell(value: object) -> str:
    # A '|' inside a cell would split it into two columns.
    return str(value).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A GitHub-flavoured markdown table; values are str()-ed and '|' escaped.

    `align` has one letter per column, 'l' or 'r' (numbers read best right-aligned); columns
    it leaves out are left-aligned.
    """
    if len(align) > len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align={align!r} must be 'l'/'r' letters, at most one per column")
    rules = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(rules) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(cell(value) for value in row) + " |")
    return "\n".join(lines)
