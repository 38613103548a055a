"""The results gallery: ``outputs/index.html``, one page with the headline numbers, figures and
tables of every run.

    python -m common.gallery              # or: make gallery
    python -m common.gallery --outputs DIR --out DIR/index.html

A section per course folder of ``outputs/`` (then any other folder). It opens with one card per
part its ``course.toml`` titles, for the part's main run (of the kinds of run the manifest lists,
the first that has a run; its newest full run, else its newest quick one): the headline numbers
its script wrote into its ``summary.json``, with human labels and units, and its best figure.
Below, per part, every run folder ``<part>/<run>/`` (``common.courses.run_folders``; the quick
ones named ``<run>_quick``), newest first, the card's run open: its numbers, figures, tables,
and its whole metrics.json and config.json folded. Images and files are linked by relative
path, so the page works where it lies and needs no network.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html as _html
import json
import os
from pathlib import Path

from . import courses as _courses
from .paths import OUTPUTS, ROOT, full_name, shown
from .summary import SUMMARY
from .runs import _stamp, is_quick_run, read_table, table_html

MAX_FIGURES = 12  # figures shown in a run's grid before the rest is folded


def caption(path: Path, run: Path) -> str:
    """``ablations/d_freq_2/loss_monitoring.png`` -> "d_freq_2 / loss monitoring"."""
    rel = path.relative_to(run)
    words = path.stem.replace("_", " ").replace("-", " ")
    return " / ".join([*rel.parts[:-1], words])


def _e(text) -> str:
    return _html.escape(str(text))


def _rel(path: Path, index_dir: Path) -> str:
    return Path(os.path.relpath(path, index_dir)).as_posix()


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _badge(run: Path) -> str:
    return '<span class="quick">quick run</span>' if is_quick_run(run) else '<span class="full">full run</span>'


def _when(run: Path) -> str:
    return _dt.datetime.fromtimestamp(_stamp(run), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _scrub(text: str) -> str:
    """No absolute path on the page: the repository's own prefix dropped, the data folder named
    ``$HW_DATA_ROOT``, the home folder ``~``."""
    for prefix, name in ((os.environ.get("HW_DATA_ROOT"), "$HW_DATA_ROOT"), (str(ROOT), "."),
                         (str(Path.home()), "~")):
        if prefix and len(prefix) > 1:
            text = text.replace(str(Path(prefix).expanduser().resolve()), name).replace(prefix, name)
    return text


def headline(run: Path) -> list[dict]:
    """The headline numbers the run's script wrote into its summary.json (none without one)."""
    return _read(run / SUMMARY).get("headline", [])


def numbers_html(rows: list[dict]) -> str:
    """Headline numbers: a human label, the value with its unit, the floor it is read against."""
    if not rows:
        return ""
    items = []
    for h in rows:
        floor = f'<span class="floor">floor {_e(h["floor_text"])}</span>' if h.get("floor_text") else ""
        hint = f' title="{_e(h["better"])} is better"' if h.get("better") else ""
        arrow = {"lower": " &darr;", "higher": " &uarr;"}.get(h.get("better"), "")
        items.append(f'<div{hint}><dt>{_e(h["label"])}{arrow}</dt><dd><b>{_e(h["text"])}</b>{floor}</dd></div>')
    return f'<dl class="numbers">{"".join(items)}</dl>'


def _figure(png: Path, run: Path, index_dir: Path, cls: str = "") -> str:
    src = _e(_rel(png, index_dir))
    return (f'<figure class="{cls}"><a href="{src}"><img loading="lazy" src="{src}" alt="{_e(png.name)}"></a>'
            f'<figcaption>{_e(caption(png, run))}</figcaption></figure>')


def best_figure(run: Path, kind) -> Path | None:
    """The run's best figure: the one its manifest names, else its first PNG (outside imgs/)."""
    if kind is not None and kind.figure and (run / kind.figure).is_file():
        return run / kind.figure
    pngs = sorted(run.glob("*.png")) or sorted(run.rglob("*.png"))
    return pngs[0] if pngs else None


class Part:
    """One part folder of a course's outputs: its runs, newest first, and the run its card shows."""

    def __init__(self, course, folder: Path, runs: list[Path]):
        self.course, self.folder = course, folder
        self.runs = sorted(runs, key=_stamp, reverse=True)
        self.main = self._main()

    def kind(self, run: Path):
        return self.course.run_kind(self.folder.name, full_name(run.name)) if self.course else None

    def _main(self) -> Path | None:
        if not self.runs:
            return None
        kinds = list(self.course.runs) if self.course else []
        ranked = sorted(self.runs, key=lambda r: (is_quick_run(r), -_stamp(r)))  # full runs first, then newest
        for kind in kinds:
            for r in ranked:
                if self.kind(r) is kind:
                    return r
        return ranked[0]

    @property
    def title(self) -> str:
        return self.course.part_title(self.folder.name) if self.course else self.folder.name


def card_html(part: Part, index_dir: Path) -> str:
    run = part.main
    kind = part.kind(run)
    fig = best_figure(run, kind)
    img = (f'<a href="{_e(_rel(fig, index_dir))}"><img src="{_e(_rel(fig, index_dir))}" alt="{_e(fig.name)}"></a>'
           f'<p class="note">{_e(caption(fig, run))}</p>') if fig else '<p class="note">no figure yet</p>'
    numbers = numbers_html(headline(run))
    if not numbers and (run / "metrics.json").is_file():
        numbers = '<p class="note">no headline numbers for this run</p>'
    return (f'<div class="card"><h3><a href="#{_e(_anchor(run, index_dir))}">{_e(part.title)}</a></h3>'
            f'<p class="run"><code>{_e(run.name)}</code> {_badge(run)}</p>{numbers}{img}</div>')


def _anchor(run: Path, index_dir: Path) -> str:
    return _rel(run, index_dir).replace("/", "-")


def run_html(run: Path, kind, index_dir: Path, open_: bool) -> str:
    parts = [f'<summary><code>{_e(_rel(run, index_dir))}/</code> {_badge(run)} <span class="when">{_when(run)}</span>'
             f"</summary>"]
    parts.append(numbers_html(headline(run)))
    # the skeleton's copies in imgs/ of figures the run folder holds too are shown once
    pngs = [p for p in sorted(run.rglob("*.png")) if not (p.parent == run / "imgs" and (run / p.name).is_file())]
    fig = best_figure(run, kind)
    # shown open: the run folder's own figures (a notebook's are in figures/); those of subfolders fold away
    top = [p for p in pngs if p.parent in (run, run / "imgs", run / "figures")] or pngs
    subs = [p for p in pngs if p not in top]
    ordered = ([fig] if fig in top else []) + [p for p in top if p != fig]
    if ordered:
        shown_now, rest = ordered[:MAX_FIGURES], ordered[MAX_FIGURES:]
        parts.append('<div class="grid">' + "".join(_figure(p, run, index_dir) for p in shown_now) + "</div>")
        subs = rest + subs
    if subs:
        groups = sorted({p.relative_to(run).parts[0] for p in subs})
        parts.append(f'<details class="sub"><summary>{len(subs)} more figures ({_e(", ".join(groups))})</summary>'
                     '<div class="grid">' + "".join(_figure(p, run, index_dir, "small") for p in subs) + "</div></details>")
    if not pngs:
        parts.append('<p class="note">no figures yet</p>')
    for md in sorted(run.rglob("*.md")):
        table = read_table(md)
        if table is not None and table[1]:
            parts.append(table_html(table[0] or caption(md, run), table[1], table[2]))
    for name, what in (("metrics.json", "every number the run wrote"), ("config.json", "the settings it ran with")):
        path = run / name
        if path.is_file():
            text = _scrub(json.dumps(_read(path), indent=2))
            parts.append(f'<details class="json"><summary>{name}: {what} &middot; '
                         f'<a href="{_e(_rel(path, index_dir))}">open the file</a></summary><pre>{_e(text)}</pre></details>')
    return f'<details id="{_e(_anchor(run, index_dir))}" class="run"{" open" if open_ else ""}>' + "".join(parts) + "</details>"


CSS = """
body { font-family: system-ui, "DejaVu Sans", sans-serif; margin: 16px 28px; color: #111; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 20px; border-bottom: 2px solid #333; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 0 0 4px; } h4 { font-size: 15px; margin: 18px 0 6px; }
nav a { margin-right: 14px; } a { color: #0645ad; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 14px; }
.card { border: 1px solid #ccc; border-radius: 8px; padding: 10px 12px; background: #fafafa; }
.card img { width: 100%; max-height: 420px; object-fit: contain; border: 1px solid #ddd; background: #fff; }
.card .run { margin: 0 0 6px; font-size: 12px; }
.numbers { margin: 4px 0 8px; font-size: 13px; max-width: 560px; }
.numbers div { display: flex; justify-content: space-between; gap: 12px; border-bottom: 1px dotted #ccc; padding: 2px 0; }
.numbers dt { color: #333; } .numbers dd { margin: 0; text-align: right; white-space: nowrap; }
.numbers b { font-size: 14px; } .floor { color: #666; font-size: 11px; margin-left: 6px; }
details.run { margin: 6px 0 12px; border: 1px solid #ccc; border-radius: 6px; padding: 6px 10px; }
details summary { cursor: pointer; font-size: 13px; } .when { color: #666; font-size: 12px; }
details.json pre { max-height: 420px; overflow: auto; background: #f4f4f4; padding: 8px; font-size: 11px; }
.quick { background: #ffe2b3; color: #7a4400; padding: 1px 6px; border-radius: 4px; font-size: 12px; }
.full { background: #d6f5d6; color: #145214; padding: 1px 6px; border-radius: 4px; font-size: 12px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; margin: 6px 0; }
figure { margin: 0; width: 360px; } figure.small { width: 220px; }
figure img { width: 100%; border: 1px solid #ddd; background: #fff; }
figcaption { font-size: 12px; color: #333; }
table { border-collapse: collapse; margin: 8px 0; font-size: 12px; }
td, th { border: 1px solid #bbb; padding: 2px 6px; text-align: right; } th { background: #eee; }
td:first-child, td.t { text-align: left; } caption { text-align: left; font-weight: bold; font-size: 12px; }
.note { color: #666; font-size: 12px; margin: 2px 0; }
"""


def build_gallery(outputs: Path | None = None, out: Path | None = None) -> Path:
    outputs = Path(outputs) if outputs else OUTPUTS
    out = Path(out) if out else outputs / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    index_dir = out.parent
    sections, nav = [], []
    for top in _courses.output_folders(outputs):
        course = _courses.lookup(top.name)
        runs = _courses.run_folders(top)  # outputs/<course>/<part>/<run>[_quick]/
        folders = sorted({r.parent for r in runs}, key=lambda p: _part_order(course, p.name))
        parts = [Part(course, f, [r for r in runs if r.parent == f]) for f in folders]
        if not parts:
            continue
        title = course.title if course else top.name
        titled = [p for p in parts if not course or p.folder.name in dict(course.parts)]  # not benchmarks
        cards = '<div class="cards">' + "".join(card_html(p, index_dir) for p in titled or parts) + "</div>"
        blocks = [f"<h4>{_e(p.title)}</h4>" + "".join(run_html(r, p.kind(r), index_dir, open_=(r == p.main))
                                                      for r in p.runs) for p in parts]
        nav.append(f'<a href="#{_e(top.name)}">{_e(title)}</a>')
        sections.append(f'<section id="{_e(top.name)}"><h2>{_e(title)}</h2>{cards}{"".join(blocks)}</section>')
    if not sections:
        sections.append('<p class="note">No runs yet: run a course target (for example <code>make demo</code>) first.</p>')
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.write_text(f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Results gallery</title><style>{CSS}</style></head>'
                   f'<body><h1>Results gallery</h1><p class="note">Built {stamp} from the run folders beside this page. '
                   f'Each course opens with a card per part (its main run: the newest full run, else the newest quick '
                   f'one); every run follows, with its figures, tables and metrics.json. &darr; lower is better, '
                   f'&uarr; higher is better.</p><nav>{"".join(nav)}</nav>{"".join(sections)}</body></html>\n')
    print(f"wrote {shown(out)}")
    return out


def _part_order(course, name: str):
    order = [p for p, _ in course.parts] if course else []
    return (order.index(name) if name in order else len(order), name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write outputs/index.html: the headline numbers, figures and tables of every run.")
    parser.add_argument("--outputs", default=None, help="the outputs folder (default: outputs/)")
    parser.add_argument("--out", default=None, help="the page to write (default: <outputs>/index.html)")
    args = parser.parse_args(argv)
    build_gallery(args.outputs, args.out)


if __name__ == "__main__":
    main()
