"""Tables of results as Markdown (for reports and the README) and CSV (for spreadsheets)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict], path_stem, columns: Sequence[str] | None = None, title: str = "") -> Path:
    """Write ``<stem>.md`` and ``<stem>.csv``; returns the Markdown path."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    md = stem.with_suffix(".md")
    md.write_text((f"### {title}\n\n" if title else "") + markdown_table(rows, columns))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return md
