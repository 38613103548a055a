"""Course reports: a Markdown source filled in from run folders, to HTML (local MathJax) and PDF.

    python -m common.report ee8520 --name Smith     # dist/Smith_EE8520_F25.pdf (and .html)
    make report-ee8520 NAME=Smith                     # the same

The source is ``<course folder>/report.md``. It opens with a header block that names the PDF, the
course's folder under ``outputs/`` and the runs it reads, each with the make target that makes it:

    ---
    title: EE 8520 Homework 2
    pdf: {name}_EE8520_F25.pdf
    outputs: ee8520
    max-pages: 3                                  (optional: warn when the PDF is longer)
    compact: yes                                  (optional: smaller type and margins, for a page limit)
    run gan: step1/gan | make ee8520-step1
    run p1: problem1/* | make ece685d-p1         (/*: the newest run folder under problem1/)
    ---

Placeholders in the body (filled before Markdown sees the text, so they work in tables too):

    {{ gan.metrics.frechet_distance:.2f }}    a value of the run's metrics.json (dotted keys, format spec optional)
    {{ gan.config.epochs }}                   a value of its config.json
    {{ abl/d_freq_2.metrics.final_d_loss }}   the same, in a sub-folder of the run
    {{ table: abl/ablation_table }}           a table the run wrote (<stem>.csv, else <stem>.md)
    {{ figure: gan/loss_monitoring.png | caption | 60% }}   a figure (caption and width optional)
    {{ text: sweep/chosen.txt }}              the text of a small file the run wrote, inline
    {{ markdown: sc/conclusion.md }}          a Markdown file the run wrote, as a block (its title dropped)
    {{ name }}                                the --name given

A run, file or key that does not exist renders as a visible "(not yet run: make <target>)": a
report builds at every stage of the work. Numbers are never typed into the source by hand. When a
run the report reads was a ``--quick`` run (``"quick": true`` in its config.json or metrics.json),
the first page says so. Math is written as ``$...$`` and ``$$...$$`` and kept away from Markdown,
then typeset by the MathJax copy of ``common.deliver.mathjax_url()`` (offline).
"""
from __future__ import annotations

import argparse
import base64
import csv
import datetime as _dt
import html as _html
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import courses
from .paths import DIST, OUTPUTS, ROOT, shown

# make report-<key>: the course folder holding report.md

PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.S)
VALUE = re.compile(r"^(?P<ref>[\w\-./]+?)\.(?P<file>metrics|config)\.(?P<key>[^:{}]+?)(?::(?P<fmt>[^:{}]*))?$")
RUN_MARKERS = ("metrics.json", "config.json")


# --------------------------------------------------------------------------------------------
# The header block and the runs


@dataclass
class RunRef:
    alias: str
    spec: str  # path under outputs/<course>/
    target: str  # "make ..." that produces it
    folder: Path | None = None  # resolved run folder, None when missing

    @property
    def quick(self) -> bool:
        return self.folder is not None and is_quick_run(self.folder)


@dataclass
class Source:
    meta: dict
    runs: dict[str, RunRef]
    body: str
    path: Path
    figures: int = 0
    used: set = field(default_factory=set)


def parse_source(path: Path) -> Source:
    text = Path(path).read_text()
    meta, runs, body = {}, {}, text
    m = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if m:
        body = text[m.end():]
        for line in m.group(1).splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key.startswith("run "):
                spec, _, target = value.partition("|")
                alias = key[4:].strip()
                runs[alias] = RunRef(alias, spec.strip().rstrip("/"), target.strip() or "make")
            else:
                meta[key] = value
    return Source(meta, runs, body, Path(path))


def is_run_folder(path: Path) -> bool:
    return any((path / f).is_file() for f in RUN_MARKERS)


def is_quick_run(folder: Path) -> bool:
    """Made by a --quick run: "quick": true in its config.json or metrics.json (for a study
    folder without them, in any of its sub-runs' config.json)."""
    if is_run_folder(folder):
        return any(_read_json(folder / f).get("quick") is True for f in RUN_MARKERS)
    return any(_read_json(c / "config.json").get("quick") is True for c in folder.iterdir() if c.is_dir())


def _stamp(path: Path) -> float:
    files = [path / f for f in RUN_MARKERS if (path / f).is_file()] or [p for p in path.iterdir() if p.is_file()]
    return max((f.stat().st_mtime for f in files), default=path.stat().st_mtime)


def resolve_run(base: Path, newest: bool = False) -> Path | None:
    """The run folder ``base`` (None when it does not exist); with ``newest``, its newest child
    run folder (one with metrics.json or config.json, by that file's time), full runs before
    ``--quick`` ones (a smoke run after the real one must not replace it in the report), else None."""
    if not base.is_dir():
        return None
    if not newest:
        return base
    children = [c for c in base.iterdir() if c.is_dir() and is_run_folder(c)]
    return max(children, key=lambda c: (not is_quick_run(c), _stamp(c))) if children else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------------------------
# Filling the placeholders


def missing(target: str, what: str = "") -> str:
    hint = f" ({_html.escape(what)})" if what else ""
    return f'<span class="missing">(not yet run: {_html.escape(target)}){hint}</span>'


def fmt_value(v, spec: str | None = None) -> str:
    if isinstance(v, float) and v == 0:
        v = 0.0  # no "-0.000"
    if spec:
        try:
            return format(v, spec)
        except (TypeError, ValueError):
            pass
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return _html.escape(json.dumps(v))
    return _html.escape(str(v))


def _lookup(obj, dotted: str):
    for part in dotted.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise KeyError(dotted)
    return obj


def _split_ref(src: Source, ref: str) -> tuple[RunRef | None, Path | None, str]:
    """``alias/sub/path`` -> (its run, the path inside the run folder (None if the run is missing), the rest)."""
    alias, _, rest = ref.strip().partition("/")
    run = src.runs.get(alias)
    if run is None:
        raise ValueError(f"{src.path}: unknown run {alias!r} in a placeholder; declare it in the header as `run {alias}: ...`")
    src.used.add(alias)
    return run, (run.folder / rest if run.folder is not None and rest else run.folder), rest


def read_table(stem: Path) -> tuple[str, list[str], list[list[str]]] | None:
    """(title, columns, rows) of ``stem.csv`` (title from ``stem.md``'s heading), else of ``stem.md``."""
    stem = stem.with_suffix("") if stem.suffix in (".md", ".csv") else stem
    md, csv_path = stem.with_suffix(".md"), stem.with_suffix(".csv")
    title = ""
    if md.is_file():
        first = md.read_text().lstrip().splitlines()[:1]
        if first and first[0].startswith("#"):
            title = first[0].lstrip("#").strip()
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f))
        if rows:
            return title, rows[0], rows[1:]
    if md.is_file():
        lines = [ln.strip() for ln in md.read_text().splitlines() if ln.strip().startswith("|")]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        cells = [c for c in cells if not all(re.fullmatch(r":?-+:?", x) for x in c)]
        if cells:
            return title, cells[0], cells[1:]
    return None


WIDE_TABLE_COLUMNS = 10  # more columns than this: a smaller font, so the table fits the page width


def _num_cell(text: str, wrap: bool = True) -> str:
    """A ``<td>``: numbers to 4 significant digits, right-aligned; text left-aligned (may wrap if ``wrap``)."""
    try:
        v = float(text)
    except ValueError:
        return f'<td class="t">{_breakable(text)}</td>' if wrap else f'<td class="t nowrap">{_html.escape(text)}</td>'
    if text.strip().lstrip("-").isdigit():
        return f"<td>{text.strip()}</td>"
    return f"<td>{v:.4g}</td>"


def _breakable(text: str) -> str:
    """Escaped text that may wrap after ``_`` or ``/`` (run names, hidden sizes), so wide tables fit the page."""
    return _html.escape(text).replace("_", "_<wbr>").replace("/", "/<wbr>")


def table_html(title: str, columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_breakable(c)}</th>" for c in columns)
    # the first column names the row: kept on one line
    body = "".join("<tr>" + "".join(_num_cell(c, wrap=i > 0) for i, c in enumerate(r)) + "</tr>" for r in rows)
    cap = f"<caption>{_html.escape(title)}</caption>" if title else ""
    wide = " wide" if len(columns) > WIDE_TABLE_COLUMNS else ""
    return f'<table class="results{wide}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def image_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def fill(src: Source, name: str) -> str:
    """The body with every placeholder replaced by HTML or text."""

    def one(m: re.Match) -> str:
        inner = m.group(1).strip()
        kind, sep, arg = inner.partition(":")
        kind = kind.strip()
        if inner == "name":
            return _html.escape(name)
        if sep and kind == "figure":
            parts = [p.strip() for p in arg.split("|")]
            run, path, rest = _split_ref(src, parts[0])
            caption = parts[1] if len(parts) > 1 else Path(rest).stem.replace("_", " ")
            width = parts[2] if len(parts) > 2 else "80%"
            src.figures += 1
            label = f"Figure {src.figures}."
            if path is None or not path.is_file():
                body = f'<div class="missing-figure">{missing(run.target, rest)}</div>'
            else:
                body = f'<img src="{image_data_uri(path)}" style="width:{_html.escape(width)}" alt="{_html.escape(caption)}">'
            return f'\n\n<figure>{body}<figcaption><b>{label}</b> {caption}</figcaption></figure>\n\n'
        if sep and kind == "table":
            run, path, rest = _split_ref(src, arg)
            table = read_table(path) if path is not None else None
            if table is None:
                return f"\n\n<p>{missing(run.target, rest + ' table')}</p>\n\n"
            return "\n\n" + table_html(*table) + "\n\n"
        if sep and kind in ("text", "markdown"):
            run, path, rest = _split_ref(src, arg)
            if path is None or not path.is_file():
                return missing(run.target, rest)
            text = path.read_text().strip()
            if kind == "text":
                return _html.escape(text)
            lines = text.splitlines()
            if lines and lines[0].startswith("#"):  # the file's own title: the report has its headings
                lines = lines[1:]
            return "\n\n" + "\n".join(lines).strip() + "\n\n"
        v = VALUE.match(inner)
        if v is None:
            raise ValueError(f"{src.path}: cannot read the placeholder {{{{ {inner} }}}}")
        run, folder, rest = _split_ref(src, v["ref"])
        if folder is None:
            return missing(run.target)
        try:
            value = _lookup(_read_json(folder / f"{v['file']}.json"), v["key"])
        except KeyError:
            return missing(run.target, f"no {v['key']} in {(rest + '/') if rest else ''}{v['file']}.json")
        return fmt_value(value, v["fmt"])

    return PLACEHOLDER.sub(one, src.body)


def references(path: Path) -> dict:
    """What a report source reads, by kind: {"values": [(ref, file, key, fmt)], "figures": [ref],
    "tables": [ref], "texts": [ref], "markdowns": [ref], "runs": {alias: spec}} (the tests build fake runs from it)."""
    src = parse_source(path)
    out = {"values": [], "figures": [], "tables": [], "texts": [], "markdowns": [], "runs": {a: r.spec for a, r in src.runs.items()}}
    for m in PLACEHOLDER.finditer(src.body):
        inner = m.group(1).strip()
        kind, sep, arg = inner.partition(":")
        if sep and kind.strip() in ("figure", "table", "text", "markdown"):
            out[kind.strip() + "s"].append(arg.split("|")[0].strip())
        elif (v := VALUE.match(inner)) is not None:
            out["values"].append((v["ref"], v["file"], v["key"], v["fmt"]))
    return out


# --------------------------------------------------------------------------------------------
# Markdown with math -> HTML


MATH = re.compile(r"(```.*?```|`[^`\n]*`)|(?<!\\)(\$\$.+?\$\$|\$[^$\n]+?\$)", re.S)


def markdown_with_math(text: str) -> str:
    """Markdown to HTML, with ``$...$`` and ``$$...$$`` passed through untouched for MathJax
    (Markdown would otherwise read ``_`` and ``*`` inside formulas as emphasis)."""
    import markdown

    stash = []

    def protect(m):
        if m.group(1):
            return m.group(1)
        stash.append(m.group(2))
        return f"MATHSTASH{len(stash) - 1}X"

    protected = MATH.sub(protect, text)
    html = markdown.markdown(protected, extensions=["extra", "sane_lists", "toc"], output_format="html5")

    def restore(m):
        return _html.escape(stash[int(m.group(1))], quote=False)

    return re.sub(r"MATHSTASH(\d+)X", restore, html)


CSS = """
@page { size: A4; margin: 15mm 16mm 15mm 16mm; }
body { font-family: "DejaVu Serif", "Liberation Serif", Georgia, serif; font-size: 10.5pt; line-height: 1.38;
       color: #111; max-width: 180mm; margin: 0 auto; }
h1 { font-size: 17pt; margin: 0 0 2pt 0; } h2 { font-size: 13pt; margin: 12pt 0 4pt; border-bottom: 1px solid #bbb; }
h3 { font-size: 11pt; margin: 9pt 0 3pt; } p { margin: 4pt 0; text-align: justify; }
.byline { color: #444; margin-bottom: 8pt; }
figure { margin: 6pt auto; text-align: center; break-inside: avoid; page-break-inside: avoid; }
figure img { max-width: 100%; } figcaption { font-size: 9pt; color: #333; margin-top: 2pt; }
table { border-collapse: collapse; margin: 6pt auto; font-size: 8pt; break-inside: avoid; max-width: 100%; }
th, td { border: 1px solid #aaa; padding: 1.5pt 3pt; text-align: right; } td { white-space: nowrap; } th { background: #eee; text-align: center; }
td:first-child, td.t { text-align: left; } td.t { white-space: normal; } td.nowrap { white-space: nowrap; }
table.wide { font-size: 6.5pt; } table.wide th, table.wide td { padding: 1pt 2pt; } caption { font-size: 9pt; caption-side: top; margin-bottom: 2pt; color: #333; }
code { font-size: 9pt; } pre { background: #f5f5f5; padding: 4pt; font-size: 8.5pt; overflow-x: hidden; }
.missing { color: #b00020; font-style: italic; font-family: sans-serif; font-size: 9pt; }
.missing-figure { border: 1px dashed #b00020; padding: 14pt; }
.banner { border: 2px solid #b36b00; background: #fff4e0; padding: 6pt 8pt; margin: 6pt 0 10pt; font-family: sans-serif;
          font-size: 9.5pt; }
.provenance { font-size: 7.5pt; color: #444; margin-top: 8pt; border-top: 1px solid #ccc; padding-top: 3pt;
              text-align: left; } .provenance code { font-size: 7.5pt; }
.MathJax_Display { margin: 4pt 0 !important; }
"""

# "compact: yes" in the header: for reports with a page limit
COMPACT_CSS = """
@page { margin: 11mm 13mm 11mm 13mm; }
body { font-size: 9.5pt; line-height: 1.3; max-width: none; } h1 { font-size: 15pt; } h2 { font-size: 11.5pt; margin: 8pt 0 3pt; }
figure { margin: 3pt auto; } figcaption { font-size: 8pt; } table { font-size: 7.5pt; } .banner { font-size: 8.5pt; padding: 4pt 6pt; }
"""

MATHJAX_CONFIG = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({tex2jax: {inlineMath: [['$','$'], ['\\\\(','\\\\)']], displayMath: [['$$','$$'], ['\\\\[','\\\\]']],
  processEscapes: true}, "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", scale: 95}, messageStyle: "none",
  TeX: {equationNumbers: {autoNumber: "none"}}});
</script>"""


def quick_banner(runs: list[RunRef]) -> str:
    quick = [r for r in runs if r.quick]
    if not quick:
        return ""
    names = ", ".join(f"<code>{_html.escape(r.alias)}</code> ({_html.escape(r.target)})" for r in quick)
    return (f'<div class="banner"><b>Built from quick runs.</b> These runs used <code>--quick</code> (a few hundred '
            f"images, one or two epochs): {names}. Their numbers and figures only show that the code runs end to "
            "end; they say nothing about the models' quality. Rerun the targets without QUICK=1 and build the report "
            "again.</div>")


def provenance(src: Source, outputs_root: Path) -> str:
    """One small paragraph: which run folder each name stands for, when it was written, quick or full."""
    items = []
    for r in src.runs.values():
        if r.alias not in src.used:
            continue
        if r.folder is None:
            items.append(f"<b>{r.alias}</b>: {missing(r.target)}")
            continue
        try:
            where = r.folder.relative_to(outputs_root.parent)
        except ValueError:
            where = r.folder
        when = _dt.datetime.fromtimestamp(_stamp(r.folder), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        items.append(f"<b>{r.alias}</b>: <code>{_html.escape(str(where))}</code> ({'quick' if r.quick else 'full'} run, "
                     f"{when})")
    if not items:
        return ""
    return '<p class="provenance"><b>Runs this report was built from.</b> ' + "; ".join(items) + ".</p>"


def render_html(source: Path, name: str, outputs_root: Path | None = None) -> str:
    """The whole report page as HTML (MathJax from the local copy)."""
    from .deliver import mathjax_url

    src = parse_source(source)
    outputs_root = Path(outputs_root) if outputs_root else OUTPUTS
    course_out = outputs_root / src.meta.get("outputs", "")
    for r in src.runs.values():
        spec, newest = (r.spec[:-2], True) if r.spec.endswith("/*") else (r.spec, False)
        r.folder = resolve_run(course_out / spec, newest)
    body = markdown_with_math(fill(src, name))
    used = [r for r in src.runs.values() if r.alias in src.used]
    title = _html.escape(src.meta.get("title", "Report"))
    byline = " &middot; ".join(_html.escape(x) for x in (src.meta.get("subtitle", ""), name,
                                                        _dt.date.today().strftime("%B %d, %Y")) if x)
    css = CSS + (COMPACT_CSS if src.meta.get("compact", "").lower() in ("yes", "true", "1") else "")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>{css}</style>\n'
            f'{MATHJAX_CONFIG}\n<script type="text/javascript" src="{mathjax_url()}"></script></head>\n'
            f'<body>\n<h1>{title}</h1><div class="byline">{byline}</div>\n{quick_banner(used)}\n{body}\n'
            f"{provenance(src, outputs_root)}\n</body></html>\n")


def pdf_pages(pdf: Path) -> int | None:
    try:
        out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"^Pages:\s+(\d+)", out, re.M)
    return int(m.group(1)) if m else None


def build_report(course: str, name: str, outputs_root: Path | None = None, dist: Path | None = None,
                 pdf: bool = True, source: Path | None = None) -> dict:
    """Write ``dist/<handout's name>.html`` and ``.pdf`` for ``course`` (its key or folder, see ``course.toml``)."""
    from .deliver import html_to_pdf

    info = courses.find(course)
    folder = info.folder
    if source is None and info.report is None:
        raise SystemExit(f"error: {folder} has no report (its course.toml names none); courses with one: "
                         + ", ".join(c.key for c in courses.courses() if c.report))
    source = Path(source) if source else info.path / info.report
    meta = parse_source(source).meta
    stem = Path(meta.get("pdf", f"{{name}}_{folder}.pdf").format(name=name)).with_suffix("")
    dist = Path(dist) if dist else DIST
    dist.mkdir(parents=True, exist_ok=True)
    html = dist / f"{stem}.html"
    page = render_html(source, name, outputs_root)
    html.write_text(page)
    print(f"wrote {shown(html)}")
    todo = sorted(set(re.findall(r'class="missing">\(not yet run: ([^)]*)\)', page)))
    if todo:
        n = page.count('class="missing"')
        print(f"note: {n} numbers, tables or figures are not filled yet; run: "
              + ", ".join(_html.unescape(t) for t in todo))
    if "Built from quick runs" in page:
        print("note: built from --quick runs; the report says so on its first page")
    out = {"html": html, "pdf": None, "pages": None}
    if pdf:
        out["pdf"] = html_to_pdf(html, dist / f"{stem}.pdf")
        if out["pdf"] is not None:
            print(f"wrote {shown(out['pdf'])}")
            out["pages"] = pages = pdf_pages(out["pdf"])
            limit = int(meta["max-pages"]) if meta.get("max-pages") else None
            if pages is not None and limit is not None and pages > limit:
                print(f"warning: {out['pdf'].name} has {pages} pages; the handout allows {limit}", file=sys.stderr)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build a course report (HTML and PDF) from its report.md and runs.")
    parser.add_argument("course", help="a course's key or folder (course.toml): " + ", ".join(
        c.key for c in courses.courses() if c.report))
    parser.add_argument("--name", default="YourName", help="your (last) name, for the file name (default: YourName)")
    parser.add_argument("--outputs", default=None, help="the outputs folder to read runs from (default: outputs/)")
    parser.add_argument("--dist", default=None, help="where to write (default: dist/)")
    parser.add_argument("--no-pdf", action="store_true", help="write the HTML only")
    args = parser.parse_args(argv)
    build_report(args.course, args.name, args.outputs, args.dist, pdf=not args.no_pdf)


if __name__ == "__main__":
    main()
