"""Tables of results as Markdown (for reports and the README) and CSV (for spreadsheets), and how a
table is shown to a reader: readable column names (:func:`column_label`) and one number format per
column (:func:`column_formats`)."""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Sequence

# metric keys the scripts write, as a reader should see them (others: :func:`column_label`)
LABELS = {
    "frechet_distance": "FD",
    "frechet_floor_train_vs_test": "FD floor",
    "fd_final": "final FD",
    "fd_best": "best FD",
    "fd_equal_epochs": "FD, equal epochs",
    "class_entropy": "class entropy",
    "class_accuracy": "class accuracy",
    "judge_confidence": "judge confidence",
    "mean_seconds_per_epoch": "s per epoch",
    "seconds_per_epoch": "s per epoch",
    "g_loss_std_last": "std of G loss (last 20%)",
    "g_loss_epoch_std_last": "std of G's epoch loss (last 20%)",
    "gap_last": "D(x) - D(G(z))",
    "divergence_epochs": "divergent epochs",
    "collapse_events": "collapses",
    "final_lr": "final lr",
    "n_samples": "samples",
    "batch_size": "batch size",
    "updates_per_epoch": "updates per epoch",
    "updates_total": "updates",
    "best_epoch": "best epoch",
}
# words of a snake_case key written the way a reader expects them
WORDS = {"fd": "FD", "g": "G", "d": "D", "lr": "lr", "nll": "NLL", "kl": "KL", "mse": "MSE", "elbo": "ELBO",
         "std": "std", "bpd": "bits/dim", "nats": "nats", "pca": "PCA", "vae": "VAE", "cvae": "C-VAE"}


def column_label(key: str) -> str:
    """A readable name for a column key: :data:`LABELS`, else its snake_case words joined by spaces
    (``fd_at_58_updates`` -> "FD at 58 updates"); a key that already reads as text is kept."""
    if key in LABELS:
        return LABELS[key]
    if " " in key or "_" not in key:
        return key
    return " ".join(WORDS.get(w.lower(), w) for w in key.split("_") if w)


def _number(text) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(str(text).strip())
    except ValueError:
        return None


def _is_int(cell) -> bool:
    if isinstance(cell, (bool, float)):
        return False
    return isinstance(cell, int) or bool(re.fullmatch(r"\s*-?\d+\s*", str(cell)))


def column_format(cells: Sequence) -> str | None:
    """One format for a whole column of cells (numbers, or text that reads as one): integers as
    they are (``"d"``); whole numbers stored as floats without decimals; else a fixed number of
    decimals that gives the smallest non-zero value 3 significant digits (1 to 4 decimals, none
    from 1000 up); scientific notation (``".2e"``) when the column spans more than that allows.
    None for a column without numbers."""
    numeric = [(c, v) for c in cells if (v := _number(c)) is not None]
    if not numeric:
        return None
    if all(_is_int(c) for c, _ in numeric):
        return "d"
    finite = [v for _, v in numeric if math.isfinite(v)]
    if finite and all(v.is_integer() for v in finite) and any(abs(v) > 1 for v in finite):
        return ".0f"  # counts stored as floats (1.0, 12.0); 0.0 and 1.0 alone are more likely shares
    nonzero = [abs(v) for v in finite if v != 0]
    if not nonzero:
        return ".2f"
    small, big = min(nonzero), max(nonzero)
    if big >= 1e6 or small < 1e-4 or (small < 1e-3 and big >= 0.1):
        return ".2e"
    decimals = 0 if small >= 1000 else max(1, min(4, 2 - math.floor(math.log10(small))))
    return f".{decimals}f"


def column_formats(rows: Sequence[Sequence]) -> list[str | None]:
    """:func:`column_format` of each column of ``rows`` (lists of cells)."""
    width = max((len(r) for r in rows), default=0)
    return [column_format([r[i] for r in rows if i < len(r)]) for i in range(width)]


def format_cell(cell, spec: str | None) -> str:
    """A cell in its column's format: "NaN" for NaN, the text unchanged when it is no number."""
    v = _number(cell)
    if v is None or spec is None:
        return str(cell)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if spec == "d":
        return f"{int(v)}" if float(v).is_integer() else f"{v:g}"
    return format(v, spec)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    cells = [[r.get(c, "") for c in columns] for r in rows]
    specs = column_formats(cells)
    lines = ["| " + " | ".join(column_label(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(v, s) for v, s in zip(row, specs)) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict], path_stem, columns: Sequence[str] | None = None, title: str = "") -> Path:
    """Write ``<stem>.md`` (readable column names, one format per column) and ``<stem>.csv`` (the
    keys and full-precision values); returns the Markdown path."""
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
