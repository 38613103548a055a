"""common.deliver: notebook execution, HTML with local MathJax, PDF (the zips: test_zips.py)."""
from __future__ import annotations

import shutil
import subprocess

import nbformat
import numpy as np
import pytest

from common import deliver


def _notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Test\n\nThe KL term: $$\\frac{1}{2}\\sum_j (\\sigma_j^2 + \\mu_j^2 - 1)$$"),
                nbformat.v4.new_code_cell("import os\nprint('quick' if os.environ.get('HW_QUICK') else 'full')")]
    return nb


def test_html_uses_the_local_mathjax(tmp_path):
    html = deliver.notebook_to_html(_notebook(), tmp_path / "n.html").read_text()
    assert "jupyter_server_mathjax/static/MathJax.js" in html and "cdn" not in html.split("MathJax.js")[0][-200:]
    assert "white-space: pre-wrap" in html  # long code lines wrap on the printed page


def test_quick_build_gets_its_own_file_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HW_QUICK", "1")
    monkeypatch.setattr(deliver, "OUTPUTS", tmp_path / "outputs")
    nbformat.write(_notebook(), tmp_path / "n.ipynb")
    deliver.main(["notebook", str(tmp_path / "n.ipynb"), str(tmp_path / "dist" / "n_out.ipynb"), "--no-pdf"])
    assert not (tmp_path / "dist" / "n_out.ipynb").exists()  # quick: never the full run's file name
    nb = nbformat.read(tmp_path / "dist" / "n_out_quick.ipynb", as_version=4)
    assert nb.cells[1].outputs[0]["text"].strip() == "quick"  # the environment reaches the kernel


@pytest.mark.skipif(deliver.chromium() is None or shutil.which("pdftoppm") is None,
                    reason="Chromium or pdftoppm not installed (apt-get install chromium poppler-utils)")
def test_pdf_renders_math_offline(tmp_path):
    from PIL import Image

    html = deliver.notebook_to_html(deliver.execute_notebook(_notebook(), tmp_path), tmp_path / "n.html")
    pdf = deliver.html_to_pdf(html, tmp_path / "n.pdf")
    assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")], check=True)
    page = next(tmp_path.glob("page*.png"))
    arr = np.asarray(Image.open(page).convert("L"))
    assert arr.std() > 5  # text on the page
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    assert "$$" not in text and "\\frac" not in text  # MathJax typeset the formula
