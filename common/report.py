"""Course reports: a Markdown source filled in from run folders, to HTML (local MathJax) and PDF.

    python -m common.report ee8520 --name Smith     # dist/Smith_EE8520_F25.pdf (and .html)
    make report-ee8520 NAME=Smith                     # the same

The source is ``<course folder>/report.md``. It opens with a header block that names the PDF, the
course's folder under ``outputs/`` and the runs it reads, each with the make target that makes it:

    ---
    title: EE 8520 Homework 2
    pdf: {name}_EE8520_F25.pdf
    outputs: ee8520_hw2
    max-pages: 3                                  (optional: warn when the PDF is longer)
    compact: yes                                  (optional: smaller type and margins, for a page limit)
    run gan: step1/gan | make ee8520-step1
    run p1: problem1/* | make ece685d-p1         (/*: the newest run folder under problem1/)
    ---

Placeholders in the body (filled before Markdown sees the text, so they work in tables too;
innermost first, so a caption or a column label may hold a value):

    {{ gan.metrics.frechet_distance:.2f }}    a value of the run's metrics.json (dotted keys, format spec optional)
    {{ gan.config.epochs }}                   a value of its config.json (a list reads "11 and 16")
    {{ abl/d_freq_2.metrics.final_d_loss }}   the same, in a sub-folder of the run
    {{ = every(st.config.snapshot_every, "epoch") }}   a computed value ("every epoch"; common.verdicts)
    {{ table: abl/ablation_table }}           a table the run wrote (<stem>.csv, else <stem>.md)
    {{ table: bs/batch_sizes | caption | batch_size = batch size; fd_final = final FD :.1f | old -> new }}
                                              its caption, the columns shown (label, format), rows renamed
    {{ figure: gan/loss_monitoring.png | caption | 60% }}   a figure (caption and width optional)
    {{ text: sweep/chosen.txt }}              the text of a small file the run wrote, inline
    {{ markdown: sc/conclusion.md }}          a Markdown file the run wrote, as a block (its title dropped)
    {{ name }}                                the --name given

Sentences that state a result are verdicts, chosen by the numbers (expressions: ``common.verdicts``):

    {% set best = argmin(bs.metrics.runs, "fd_equal_epochs") %}
    {% if sat.metrics.frechet_distance > 1.5 * dc.metrics.frechet_distance %}
    the saturating loss trained much worse ...
    {% elif ... %} ... {% else %} ... {% endif %}

A tag alone on its line takes its line break with it, so a verdict stays inside its paragraph.
Tables show readable column names and one number format per column (``common.tables``).

A run, file or key that does not exist renders as a visible "(not yet run: make <target>)", and so
does a verdict that reads it; the first page then carries a banner that counts them: a report
builds at every stage of the work. When a run the report reads was a ``--quick`` run, the first
page says so too. Math is written as ``$...$`` and ``$$...$$`` and kept away from Markdown, then
typeset by the MathJax copy of ``common.deliver.mathjax_url()`` (offline).

Finding the runs and filling the placeholders: ``common.runs``. Here: Markdown with math to one HTML
page, and the PDF (``common.deliver.html_to_pdf``, Chromium).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html as _html
import re
import subprocess
import sys
from pathlib import Path

from . import courses
from .paths import DIST, OUTPUTS, shown
from .runs import RunRef, Source, _stamp, fill, missing, parse_source, resolve_run
from .runs import WIDE_TABLE_COLUMNS, _lookup, fmt_value, references, table_html  # noqa: F401  (read as report.<name>)


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
    targets = ", ".join(f"<code>{_html.escape(t)}</code>" for t in dict.fromkeys(r.target for r in quick))
    return (f'<div class="banner"><b>Built from quick runs.</b> {"All" if len(quick) == len(runs) else len(quick)} '
            f"of the {len(runs)} runs this report reads used <code>--quick</code> (a few hundred images, one or two "
            f"epochs): {targets}. Their numbers and figures only show that the code runs end to end; they say "
            "nothing about the models' quality. Rerun these targets without QUICK=1 and build the report again.</div>")


def missing_banner(body: str, runs: list[RunRef]) -> str:
    """Page 1 of a report that still has placeholders: how many, and which runs are missing or incomplete."""
    n = body.count('class="missing"')
    if not n:
        return ""
    targets = sorted(set(_html.unescape(t) for t in re.findall(r'class="missing">\(not yet run: ([^)]*)\)', body)))
    absent = [r for r in runs if r.folder is None]
    which = ("runs not made yet: " + ", ".join(f"<code>{_html.escape(r.alias)}</code>" for r in absent) + "; "
             if absent else "")
    return (f'<div class="banner"><b>Incomplete report: {n} placeholder{"s" if n != 1 else ""}.</b> '
            f"Some values this report reads are not there yet ({which}a run, a file or a key), so "
            f"{n} number{'s, tables, figures or verdicts' if n != 1 else ', table, figure or verdict'} below "
            f"read \"not yet run\" instead of a result. To fill {'them' if n != 1 else 'it'}: "
            f"{_html.escape(', '.join(targets))}, then build the report again.</div>")


def run_list(src: Source, outputs_root: Path) -> list[tuple[str, str | None, str]]:
    """(name, run folder relative to the outputs' parent or None when missing, "quick|full run, <time>")
    of each run the report read."""
    out = []
    for r in src.runs.values():
        if r.alias not in src.used:
            continue
        if r.folder is None:
            out.append((r.alias, None, r.target))
            continue
        try:
            where = r.folder.relative_to(outputs_root.parent)
        except ValueError:
            where = r.folder
        when = _dt.datetime.fromtimestamp(_stamp(r.folder), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out.append((r.alias, str(where), f"{'quick' if r.quick else 'full'} run, {when}"))
    return out


def provenance(src: Source, outputs_root: Path) -> str:
    """One small paragraph for a draft: which run folder each name stands for, when it was written,
    quick or full (a finished report leaves it out: its reader has no such folders; the build prints it)."""
    items = [f"<b>{a}</b>: {missing(what)}" if where is None else
             f"<b>{a}</b>: <code>{_html.escape(where)}</code> ({what})" for a, where, what in run_list(src, outputs_root)]
    if not items:
        return ""
    return '<p class="provenance"><b>Runs this draft was built from.</b> ' + "; ".join(items) + ".</p>"


def fill_source(source: Path, name: str, outputs_root: Path | None = None) -> tuple[Source, str]:
    """The report source with its runs found under ``outputs_root`` and its body filled (Markdown):
    (the source, which records each verdict's chosen branch in ``verdicts``, and the text)."""
    src = parse_source(source)
    outputs_root = Path(outputs_root) if outputs_root else OUTPUTS
    course_out = outputs_root / src.meta.get("outputs", "")
    for r in src.runs.values():
        spec, newest = (r.spec[:-2], True) if r.spec.endswith("/*") else (r.spec, False)
        r.folder = resolve_run(course_out / spec, newest)
    return src, fill(src, name)


def render_html(source: Path, name: str, outputs_root: Path | None = None) -> str:
    """The whole report page as HTML (MathJax from the local copy)."""
    from .deliver import mathjax_url

    outputs_root = Path(outputs_root) if outputs_root else OUTPUTS
    src, text = fill_source(source, name, outputs_root)
    body = markdown_with_math(text)
    used = [r for r in src.runs.values() if r.alias in src.used]
    title = _html.escape(src.meta.get("title", "Report"))
    byline = " &middot; ".join(_html.escape(x) for x in (src.meta.get("subtitle", ""), name,
                                                        _dt.date.today().strftime("%B %d, %Y")) if x)
    css = CSS + (COMPACT_CSS if src.meta.get("compact", "").lower() in ("yes", "true", "1") else "")
    banners = missing_banner(body, used) + quick_banner(used)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>{css}</style>\n'
            f'{MATHJAX_CONFIG}\n<script type="text/javascript" src="{mathjax_url()}"></script></head>\n'
            f'<body>\n<h1>{title}</h1><div class="byline">{byline}</div>\n{banners}\n{body}\n'
            f"{provenance(src, outputs_root) if banners else ''}\n</body></html>\n")


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
    src, _ = fill_source(source, name, outputs_root)
    for alias, where, what in run_list(src, Path(outputs_root) if outputs_root else OUTPUTS):
        print(f"  {alias}: {where} ({what})" if where else f"  {alias}: missing ({what})")
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
