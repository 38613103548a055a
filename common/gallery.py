"""The results gallery: ``outputs/index.html``, one page with every figure and table of the runs.

    python -m common.gallery              # or: make gallery
    python -m common.gallery --outputs DIR --out DIR/index.html

A section per course folder of ``outputs/``, a sub-section per part (``step1``, ``problem2``,
...), and in it each run folder (one holding ``config.json`` or ``metrics.json``), newest first:
the newest run of a part is open, older ones are folded. For each run: its key numbers (the
scalars of ``metrics.json``), its tables (``*.md``, read from the ``.csv`` twin when there is one),
and every PNG under it with a caption made from its file name. Images are linked by relative
path, so the page works where it lies and needs no network.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html as _html
import json
import os
from pathlib import Path

from .courses import courses as known_courses
from .paths import OUTPUTS, shown
from .runs import _stamp, fmt_value, is_run_folder, read_table, table_html

MAX_KEYS = 40


def caption(path: Path, run: Path) -> str:
    """``ablations/d_freq_2/loss_monitoring.png`` -> "d_freq_2 / loss monitoring"."""
    rel = path.relative_to(run)
    words = path.stem.replace("_", " ").replace("-", " ")
    return " / ".join([*rel.parts[:-1], words])


def key_numbers(metrics: dict, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """The scalar entries of ``metrics`` (two levels of nesting), as (dotted key, text)."""
    out = []
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 2:
            out += key_numbers(v, key + ".", depth + 1)
        elif isinstance(v, (int, float, bool)) or v is None or (isinstance(v, str) and len(v) <= 80):
            out.append((key, fmt_value(v)))
    return out


def run_folders(part: Path) -> list[Path]:
    """The top run folders under ``part`` (a run folder's own sub-runs stay inside it), newest first."""
    found = []

    def walk(d: Path):
        if is_run_folder(d) or (d != part and any(p.suffix in (".png", ".md") for p in d.iterdir() if p.is_file())):
            found.append(d)
            return
        for c in sorted(d.iterdir()):
            if c.is_dir():
                walk(c)

    walk(part)
    return sorted(found, key=_stamp, reverse=True)


def run_html(run: Path, index_dir: Path, course_dir: Path, open_: bool) -> str:
    cfg = _read(run / "config.json")
    metrics = _read(run / "metrics.json")
    quick = cfg.get("quick") is True or metrics.get("quick") is True or any(
        _read(c / "config.json").get("quick") is True for c in run.iterdir() if c.is_dir())
    when = _dt.datetime.fromtimestamp(_stamp(run), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    badge = '<span class="quick">quick run</span>' if quick else '<span class="full">full run</span>'
    rel = run.relative_to(course_dir.parent)
    parts = [f"<summary><code>{_html.escape(str(rel))}</code> {badge} <span class=\"when\">{when}</span></summary>"]
    numbers = key_numbers(metrics)
    if numbers:
        rows = "".join(f"<div><span>{_html.escape(k)}</span> <b>{v}</b></div>" for k, v in numbers[:MAX_KEYS])
        more = f"<p class=\"note\">{len(numbers) - MAX_KEYS} more in metrics.json</p>" if len(numbers) > MAX_KEYS else ""
        parts.append(f'<p class="label">key numbers (metrics.json)</p><div class="keys">{rows}</div>{more}')
    for md in sorted(run.rglob("*.md")):
        table = read_table(md)
        if table is not None:
            title = table[0] or caption(md, run)
            parts.append(table_html(title, table[1], table[2]))
    figures = []
    for png in sorted(run.rglob("*.png")):
        src = Path(os.path.relpath(png, index_dir)).as_posix()
        figures.append(f'<figure><a href="{_html.escape(src)}"><img loading="lazy" src="{_html.escape(src)}" '
                       f'alt="{_html.escape(png.name)}"></a><figcaption>{_html.escape(caption(png, run))}</figcaption></figure>')
    if figures:
        parts.append('<div class="grid">' + "".join(figures) + "</div>")
    else:
        parts.append('<p class="note">no figures yet</p>')
    return f'<details{" open" if open_ else ""}>' + "".join(parts) + "</details>"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


CSS = """
body { font-family: system-ui, "DejaVu Sans", sans-serif; margin: 20px 28px; color: #111; background: #fff; }
h1 { font-size: 24px; } h2 { font-size: 20px; border-bottom: 2px solid #333; margin-top: 30px; }
h3 { font-size: 16px; margin: 16px 0 6px; } nav a { margin-right: 14px; }
details { margin: 6px 0 14px; border: 1px solid #ccc; border-radius: 6px; padding: 6px 10px; }
summary { cursor: pointer; font-size: 14px; } .when { color: #666; font-size: 12px; }
.quick { background: #ffe2b3; color: #7a4400; padding: 1px 6px; border-radius: 4px; font-size: 12px; }
.full { background: #d6f5d6; color: #145214; padding: 1px 6px; border-radius: 4px; font-size: 12px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 360px; } figure img { width: 100%; border: 1px solid #ddd; background: #fff; }
figcaption { font-size: 12px; color: #333; }
table { border-collapse: collapse; margin: 8px 0; font-size: 12px; }
td, th { border: 1px solid #bbb; padding: 2px 6px; text-align: right; } th { background: #eee; }
td:first-child, td.t { text-align: left; } caption { text-align: left; font-weight: bold; font-size: 12px; }
.note { color: #666; font-size: 12px; } .label { font-weight: bold; font-size: 12px; margin: 6px 0 2px; }
.keys { columns: 17em; column-gap: 24px; font-size: 12px; } .keys div { break-inside: avoid; border-bottom: 1px dotted #ddd; }
.keys div { display: flex; justify-content: space-between; gap: 10px; } .keys span { overflow-wrap: anywhere; } .keys b { font-weight: 600; white-space: nowrap; }
"""


def build_gallery(outputs: Path | None = None, out: Path | None = None) -> Path:
    outputs = Path(outputs) if outputs else OUTPUTS
    out = Path(out) if out else outputs / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    courses = sorted(d for d in outputs.iterdir() if d.is_dir()) if outputs.is_dir() else []
    sections, nav = [], []
    titles = {c.outputs: c.title for c in known_courses()}
    for course in courses:
        parts = sorted(p for p in course.iterdir() if p.is_dir())
        blocks = []
        for part in parts:
            runs = run_folders(part)
            if runs:
                blocks.append(f"<h3>{_html.escape(part.name)}</h3>" +
                              "".join(run_html(r, out.parent, course, open_=(i == 0)) for i, r in enumerate(runs)))
        if blocks:
            title = titles.get(course.name, course.name)
            nav.append(f'<a href="#{_html.escape(course.name)}">{_html.escape(title)}</a>')
            sections.append(f'<section id="{_html.escape(course.name)}"><h2>{_html.escape(title)}</h2>{"".join(blocks)}</section>')
    if not sections:
        sections.append('<p class="note">No runs yet: run a course target (for example <code>make demo</code>) first.</p>')
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.write_text(f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Results gallery</title><style>{CSS}</style></head>'
                   f'<body><h1>Results gallery</h1><p class="note">Built {stamp} from <code>{_html.escape(str(outputs))}</code>. '
                   f'The newest run of each part is open; older runs are folded.</p><nav>{"".join(nav)}</nav>'
                   f'{"".join(sections)}</body></html>\n')
    print(f"wrote {shown(out)}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write outputs/index.html: every figure and table of the runs.")
    parser.add_argument("--outputs", default=None, help="the outputs folder (default: outputs/)")
    parser.add_argument("--out", default=None, help="the page to write (default: <outputs>/index.html)")
    args = parser.parse_args(argv)
    build_gallery(args.outputs, args.out)


if __name__ == "__main__":
    main()
