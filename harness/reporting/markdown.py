"""Markdown the report writes: tables, prose values and code, with every value that comes
from a run directory escaped. A run directory is data someone else made; none of it may add
markup to a report (a heading, a link, raw HTML such as <script>, or a line that closes the
"Regenerate" code block)."""

import re
from collections.abc import Iterable, Sequence

# CommonMark's backslash-escapable punctuation that starts markup inside a line; '_' is left
# alone (intraword underscores do not emphasise in GitHub's markdown, and names use them).
_PUNCTUATION = re.compile(r"([\\`*\[\]|!#~])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def escape(value: object) -> str:
    """`value` as literal text on one line of markdown: no markup, no raw HTML."""
    text = " ".join(str(value).split())  # a newline would start a new block
    text = "".join(_HTML.get(ch, ch) for ch in text)
    text = _PUNCTUATION.sub(r"\\\1", text)
    # A leading '-', '+' or 'N.' would start a list where a value begins a line.
    return re.sub(r"^([-+]|\d+\.)(\s)", r"\\\1\2", text)


def cell(value: object) -> str:
    # escape() covers '|', which would split the cell into two columns.
    return escape(value)


def code_span(value: object) -> str:
    """`value` as inline code: delimited by more backticks than any run inside it."""
    text = " ".join(str(value).split())
    ticks = "`" * (_longest_backtick_run(text) + 1)
    # A space on each side only where a backtick would otherwise touch the delimiter (renderers
    # strip one space from each side, so the code reads the same).
    if text.startswith("`") or text.endswith("`"):
        text = f" {text} "
    return f"{ticks}{text}{ticks}"


def fenced(lines: Iterable[str], info: str = "") -> list[str]:
    """A fenced code block whose fence is longer than any backtick run in `lines`, so no line
    can close it early (a closing fence must be at least as long as the opening one)."""
    lines = list(lines)
    fence = "`" * max(3, 1 + max((_longest_backtick_run(line) for line in lines), default=0))
    return [fence + info, *lines, fence]


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A GitHub-flavoured markdown table; values are str()-ed and escaped (`cell`).

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
