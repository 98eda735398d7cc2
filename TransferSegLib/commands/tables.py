"""Plain text tables for the terminal: a header row, columns as wide as their widest cell.

No cell is ever cut. When the table is wider than the terminal, the last column
(free text: classes, messages, paths) wraps at spaces onto continuation lines
aligned under it; piped output (not a terminal) keeps every row on one line.
"""

import shutil
import sys
import textwrap
from typing import List, Optional, Sequence

_GAP = "  "


def terminal_width(stream=None) -> Optional[int]:
    """The terminal's width in columns, or None when the output is not a terminal (keep rows whole)."""
    stream = stream or sys.stdout
    if not getattr(stream, "isatty", lambda: False)():
        return None
    return shutil.get_terminal_size((100, 24)).columns


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: Optional[int] = None) -> str:
    """The rows under ``headers``; with ``width``, the last column wraps at spaces to fit (never mid-word)."""
    table = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    count = len(headers)
    widths = [max(len(r[i]) for r in table) for i in range(count)]
    lead = sum(widths[:-1]) + len(_GAP) * (count - 1)
    last = widths[-1]
    if width is not None:
        last = max(len(headers[-1]), min(widths[-1], width - lead), 20)
    lines: List[str] = []
    for row in table:
        prefix = _GAP.join(row[i].ljust(widths[i]) for i in range(count - 1))
        text = row[-1]
        pieces = textwrap.wrap(text, last, break_long_words=False, break_on_hyphens=False) if len(text) > last else [text]
        pieces = pieces or [""]
        first = (prefix + _GAP if count > 1 else "") + pieces[0]
        lines.append(first.rstrip())
        indent = lead + (len(_GAP) if count > 1 else 0)
        lines.extend((" " * indent + piece).rstrip() for piece in pieces[1:])
    return "\n".join(lines)
