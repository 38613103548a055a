"""common.report: reports filled from (fake) run folders, the quick banner, the "not yet run"
fallback, math kept away from Markdown and the PDF (the gallery: tests/test_gallery.py).

The runs are fakes written into tmp_path from what each report.md reads (``report.references``),
so these tests need no training, no data and no network."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common import deliver, report
from common.courses import courses
from helpers import ROOT

REPORTS = {c.key: c.path / c.report for c in courses() if c.report}
COURSES = sorted(REPORTS)
HAVE_PDF_TOOLS = deliver.chromium() is not None and shutil.which("pdftoppm") is not None and shutil.which("pdftotext")
NO_PDF_REASON = "Chromium, pdftoppm or pdftotext not installed (apt-get install chromium poppler-utils)"


def _png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)


def _set(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def _update_json(path: Path, fn) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    fn(data)
    path.write_text(json.dumps(data))


def fake_runs(source: Path, outputs: Path, quick: bool = True) -> list[str]:
    """Write every run, key, figure, table and text ``source`` reads; returns the strings that the
    filled values must render as."""
    src = report.parse_source(source)
    refs = report.references(source)
    course = outputs / src.meta["outputs"]
    folders = {}
    for alias, spec in refs["runs"].items():
        folder = course / (spec[:-2] + "/run_b" if spec.endswith("/*") else spec)
        _update_json(folder / "config.json", lambda d: d.update(quick=quick))
        folders[alias] = folder

    def where(ref: str) -> Path:
        alias, _, rest = ref.partition("/")
        return folders[alias] / rest if rest else folders[alias]

    expected = []
    for i, (ref, file, key, fmt) in enumerate(refs["values"]):
        value = 7000 + 11 * i + 0.25
        path = where(ref) / f"{file}.json"
        if path.exists():
            try:  # a key used twice (with another format) keeps its first value
                value = report._lookup(json.loads(path.read_text()), key)
            except KeyError:
                pass
        _update_json(path, lambda d, k=key, v=value: _set(d, k, v))
        expected.append(report.fmt_value(value, fmt))
    for i, ref in enumerate(refs["figures"]):
        _png(where(ref), seed=i)
    for ref in refs["tables"]:
        stem = where(ref)
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".csv").write_text("setting,score\nalpha,0.123456\nbeta,42\n")
        stem.with_suffix(".md").write_text("### A fake table\n\n| setting | score |\n|---|---|\n| alpha | 0.1235 |\n")
        expected += ["A fake table", "0.1235"]
    for ref in refs["texts"] + refs["markdowns"]:
        where(ref).parent.mkdir(parents=True, exist_ok=True)
        where(ref).write_text("# Title\n\nthe run's own words\n")
        expected.append("the run&#x27;s own words" if ref in refs["texts"] else "the run's own words")
    return expected


@pytest.mark.parametrize("course", COURSES)
def test_report_fills_every_placeholder_from_the_run(course, tmp_path):
    source = REPORTS[course]
    expected = fake_runs(source, tmp_path / "outputs")
    html = report.render_html(source, "Doe", tmp_path / "outputs")
    assert "not yet run" not in html
    for text in expected:
        assert text in html, f"{text!r} missing from the {course} report"
    refs = report.references(source)
    assert html.count('<img src="data:image/png;base64,') == len(refs["figures"])
    assert "Built from quick runs" in html  # the first-page banner
    assert html.index("Built from quick runs") < html.index("<h2")  # before the first section
    assert "{{" not in html and "MATHSTASH" not in html


@pytest.mark.parametrize("course", COURSES)
def test_report_of_full_runs_has_no_banner(course, tmp_path):
    source = REPORTS[course]
    fake_runs(source, tmp_path / "outputs", quick=False)
    html = report.render_html(source, "Doe", tmp_path / "outputs")
    assert "Built from quick runs" not in html and "not yet run" not in html


@pytest.mark.parametrize("course", COURSES)
def test_report_without_runs_says_what_to_run(course, tmp_path):
    source = REPORTS[course]
    html = report.render_html(source, "Doe", tmp_path / "no-outputs")
    targets = {r.target for r in report.parse_source(source).runs.values()}
    for target in targets:
        assert f"(not yet run: {target})" in html
    assert 'class="missing-figure"' in html


def _mini(tmp_path: Path, body: str, runs: str = "run r: part/* | make thing") -> Path:
    src = tmp_path / "mini.md"
    src.write_text(f"---\ntitle: Mini\npdf: {{name}}_Mini.pdf\noutputs: course\n{runs}\n---\n{body}")
    return src


def test_wide_tables_fit_the_page():
    """Text cells after the first may wrap at _ and /; more than WIDE_TABLE_COLUMNS columns get a smaller font."""
    narrow = report.table_html("", ["run", "hidden"], [["hidden_256_256", "256/128/64"]])
    assert '<td class="t nowrap">hidden_256_256</td>' in narrow and "256/<wbr>128/<wbr>64" in narrow
    assert 'class="results"' in narrow
    n = report.WIDE_TABLE_COLUMNS + 1
    wide = report.table_html("", [f"c{i}" for i in range(n)], [["x"] * n])
    assert 'class="results wide"' in wide and "table.wide" in report.CSS


def test_placeholder_syntax_and_missing_key(tmp_path):
    run = tmp_path / "outputs/course/part/r1"
    _update_json(run / "metrics.json", lambda d: d.update(fd=3.14159, nested={"a b": {"x": 2}}, n=10000))
    _update_json(run / "config.json", lambda d: d.update(epochs=25))
    (run / "table.csv").parent.mkdir(parents=True, exist_ok=True)
    (run / "table.csv").write_text("model,E_q log p(x|z)\nVAE,-249.0123\n")  # a | inside a cell: read from the CSV
    body = ("FD {{ r.metrics.fd:.2f }}, raw {{ r.metrics.fd }}, {{ r.metrics.nested.a b.x }}, "
            "{{ r.config.epochs }} epochs, n={{ r.metrics.n }}, gone: {{ r.metrics.absent:.2f }}, by {{ name }}.\n\n"
            "{{ table: r/table }}\n\n{{ figure: r/none.png | a caption }}\n")
    html = report.render_html(_mini(tmp_path, body), "Doe", tmp_path / "outputs")
    assert "FD 3.14, raw 3.142, 2, 25 epochs, n=10000" in html and "by Doe" in html
    assert "(not yet run: make thing) (no absent in metrics.json)" in html
    assert "<th>E_<wbr>q log p(x|z)</th>" in html and "<td>-249</td>" in html and '<td class="t nowrap">VAE</td>' in html
    assert "Figure 1.</b> a caption" in html and "(none.png)" in html
    assert "Built from quick runs" not in html


def test_newest_full_run_is_used_and_quick_only_without_one(tmp_path):
    import os
    import time

    def make_run(name, v, quick, age):
        run = tmp_path / "outputs/course/part" / name
        _update_json(run / "metrics.json", lambda d: d.update(v=v))
        _update_json(run / "config.json", lambda d: d.update(quick=quick))
        t = time.time() - age
        for f in run.iterdir():
            os.utime(f, (t, t))

    make_run("quick", 0, True, age=100)
    html = report.render_html(_mini(tmp_path, "v = {{ r.metrics.v }}"), "Doe", tmp_path / "outputs")
    assert "v = 0" in html and "Built from quick runs" in html  # only a quick run: used, and said so
    make_run("old", 1, False, age=300)
    make_run("full", 2, False, age=200)
    html = report.render_html(_mini(tmp_path, "v = {{ r.metrics.v }}"), "Doe", tmp_path / "outputs")
    assert "v = 2" in html and "Built from quick runs" not in html and "outputs/course/part/full" in html


def test_math_is_kept_away_from_markdown(tmp_path):
    body = ("Inline $a_1 * b_2 * c_3$ and $\\mathbb{E}_{q}[x]$; cost \\$5.\n\n"
            "$$\n\\begin{aligned} x_{i}^{*} &= \\frac{p_{\\text{data}}}{p_{\\text{data}} + p_g} \\\\ y &= w < z \\end{aligned}\n$$\n\n"
            "Code: `a_b*c` and ordinary *emphasis*.\n")
    html = report.render_html(_mini(tmp_path, body, runs=""), "Doe", tmp_path / "outputs")
    assert "$a_1 * b_2 * c_3$" in html and "$\\mathbb{E}_{q}[x]$" in html
    assert "x_{i}^{*} &amp;= \\frac{p_{\\text{data}}}" in html and "y &amp;= w &lt; z" in html
    assert "<em>emphasis</em>" in html and html.count("<em>") == 1
    assert "jupyter_server_mathjax/static/MathJax.js" in html and "inlineMath" in html


@pytest.mark.skipif(not HAVE_PDF_TOOLS, reason=NO_PDF_REASON)
def test_report_pdf_renders_with_typeset_math(tmp_path):
    fake_runs(ROOT / "ee8520_hw2/report.md", tmp_path / "outputs")
    out = report.build_report("ee8520", "Doe", tmp_path / "outputs", tmp_path / "dist")
    pdf = out["pdf"]
    assert pdf == tmp_path / "dist/Doe_EE8520_F25.pdf" and pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")], check=True)
    page = np.asarray(Image.open(next(tmp_path.glob("page*.png"))).convert("L"))
    assert page.std() > 5 and (page < 128).mean() > 0.01  # text on the page
    first = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True, text=True).stdout
    assert "Built from quick runs" in first
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    assert "$$" not in text and "\\frac" not in text and "Math Processing Error" not in text
