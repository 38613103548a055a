"""common.deliver: what a zip ships, notebook execution, HTML with local MathJax, PDF."""
from __future__ import annotations

import shutil
import subprocess

import nbformat
import numpy as np
import pytest

from common import deliver


def test_shipped_files_leave_out_data_outputs_and_checkpoints(tmp_path):
    for rel in ("a.py", "models/b.py", "README.md", "imgs/x.png", "data/MNIST/raw/f", "outputs/r/m.json",
                "ck.pt", "__pycache__/a.pyc", "sub/outputs/y.txt", "notes.ipynb"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    shipped = sorted(str(rel) for _, rel in deliver._shipped_files(tmp_path))
    assert shipped == ["README.md", "a.py", "models/b.py", "notes.ipynb"]


def test_requirements_pin_torch():
    text = deliver.requirements_text()
    assert "torch==" in text and "torchvision==" in text and "scikit-learn" in text


def test_zip_names_follow_the_handouts():
    assert deliver.ZIP_NAMES["ee8520_hw2"].format(name="Doe") == "Doe_EE8520_F25"
    assert deliver.ZIP_NAMES["csc8851_hw2"].format(name="Doe") == "CSC8851_F2025_HW2_Doe"


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Test\n\nThe KL term: $$\\frac{1}{2}\\sum_j (\\sigma_j^2 + \\mu_j^2 - 1)$$"),
                nbformat.v4.new_code_cell("import os\nprint('quick' if os.environ.get('HW_QUICK') else 'full')")]
    nbformat.write(nb, path)


def test_execute_notebook_to_html_with_local_mathjax(tmp_path, monkeypatch):
    monkeypatch.setenv("HW_QUICK", "1")
    _notebook(tmp_path / "n.ipynb")
    deliver.main(["notebook", str(tmp_path / "n.ipynb"), str(tmp_path / "dist" / "n_out.ipynb"), "--no-pdf"])
    assert not (tmp_path / "dist" / "n_out.ipynb").exists()  # quick: never the full run's file name
    nb = nbformat.read(tmp_path / "dist" / "n_out_quick.ipynb", as_version=4)
    assert nb.cells[1].outputs[0]["text"].strip() == "quick"  # the environment reaches the kernel
    html = (tmp_path / "dist" / "n_out_quick.html").read_text()
    assert "jupyter_server_mathjax/static/MathJax.js" in html and "cdn" not in html.split("MathJax.js")[0][-200:]


@pytest.mark.skipif(deliver.chromium() is None or shutil.which("pdftoppm") is None,
                    reason="Chromium or pdftoppm not installed (apt-get install chromium poppler-utils)")
def test_pdf_renders_math_offline(tmp_path):
    from PIL import Image

    _notebook(tmp_path / "n.ipynb")
    deliver.execute_notebook(tmp_path / "n.ipynb", tmp_path / "n_out.ipynb", timeout=120)
    pdf = tmp_path / "n_out.pdf"
    assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")], check=True)
    page = next(tmp_path.glob("page*.png"))
    arr = np.asarray(Image.open(page).convert("L"))
    assert arr.std() > 5  # text on the page
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    assert "$$" not in text and "\\frac" not in text  # MathJax typeset the formula
