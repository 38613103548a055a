"""The submitted notebooks stand alone and read as one student's homework: built from their
templates (the repository's code written into their cells by ``common.inline``), each runs top to
bottom in an empty folder under a kernel in which ``import common`` fails, on the embedded MNIST
sample in quick mode (no network, no ``HW_DATA_ROOT``); its PDF shows the graded code within the
page budget, no code line wraps, and neither the notebook nor its PDF names another course, a
repository path, a make target, a flag, a benchmark or an issue. A failed build leaves the
previous deliverable as it was."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess

import nbformat
import pytest

from common import deliver
from common.inline import DIRECTIVE, InlineError, inline_notebook, inline_source
from helpers import ROOT

NOTEBOOKS = {
    "csc8851": (ROOT / "csc8851_hw2" / "CSC8851_F2025_HW2_YourName.ipynb", "CSC8851_F2025_HW2_Doe.ipynb"),
    "assignment3": (ROOT / "assignment3" / "Assignment_3_GAN.ipynb", "Assignment_3_GAN.ipynb"),
}
# What the PDF must show of the graded code (the handouts' parts), as text pdftotext finds.
GRADED_CODE = {
    "csc8851": ["class Generator(nn.Module)", "class Critic(nn.Module)", "def gradient_penalty(",
                "def critic_loss(", "def generator_loss(", "def make_ema(", "def ema_update(",
                "if (i + 1) % N_CRITIC == 0:", "def class_samples(", "def interpolation_samples(",
                "def truncation_samples(", "nn.LeakyReLU(0.2)"],
    "assignment3": ["class Generator(nn.Sequential)", "class Discriminator(nn.Sequential)",
                    "criterion = nn.BCELoss()", "def make_optimizers(", "def real_fake_labels(",
                    "def d_loss_real(", "def d_loss_fake(", "def g_loss_fn(", "def set_requires_grad(",
                    "set_requires_grad(G, False)", "fig.savefig(\"figures/loss_curves.png\"",
                    "generated_{i + 1:02d}.png"],
}
# Page budgets of the full build as printed (the graders ask for at most 18 and 10 pages, the
# models by page 3, the first figure by page 8). A quick build prints a few epoch lines fewer, so
# it must fit one page less.
BUDGET = {"csc8851": {"pages": 18, "models": ("class Generator(nn.Module)", 3), "figure": 8},
          "assignment3": {"pages": 10, "models": ("class Generator(nn.Sequential)", 3), "figure": 8}}
# Words that must not appear in an upload: other courses and their datasets, the repository's
# paths, make targets and flags, benchmarks, issues and sessions.
OTHER_COURSE = {"csc8851": ["Assignment 3", "Assignment_3"], "assignment3": ["CSC 8851", "CSC8851", "WGAN"]}
FORBIDDEN = ["EE 8520", "EE8520", "ECE 685", "ECE685", "RDFIA", "KMNIST", "Fashion", "CIFAR",
             "common/", "common.", "csc8851_hw2", "assignment3/", "sample_data", "outputs/", "dist/",
             "wgan_gp", "mlp_gan", "fast_critic", "Makefile", "QUICK=1", "HW_DATA_ROOT", "benchmark",
             "issue", "session", "/work/", "/home/", "/tmp/", "site-packages"]
# a command-line flag, a make target, a Python file of the repository
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+|\bmake [a-z0-9-]+|\b\w+\.py\b")
PRINTED_WIDTH = deliver.PRINTED_CODE_WIDTH
HAVE_PDF_TOOLS = deliver.chromium() is not None and shutil.which("pdftotext") is not None


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_built_notebook_holds_its_code_and_imports_nothing_of_the_repository(key):
    template, _ = NOTEBOOKS[key]
    nb = deliver.build_notebook(template, "Doe")
    code = _code(nb)
    assert DIRECTIVE not in code
    assert "__future__" not in code
    tree = ast.parse(code)
    imported = {(n.module or "") if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [None])}
    local = {"common", "wgan_gp", "wgan_gp_model", "fast_critic", "mlp_gan", "models"}
    assert not {m.split(".")[0] for m in imported} & local, imported
    assert "inspect.getsource" not in code and "autograd.Function" not in code
    assert "**Name:** Doe" in nb.cells[0].source
    assert all(not c.metadata for c in nb.cells if c.cell_type == "code")  # no repository paths


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_built_notebook_reads_as_plain_homework(key):
    """Every code line fits the printed width; no word of another course, the repository, a flag,
    a benchmark or an issue; a short plain set-up (the first code cell)."""
    nb = deliver.build_notebook(NOTEBOOKS[key][0], "Doe")
    long = [ln for ln in _code(nb).splitlines() if len(ln) > PRINTED_WIDTH]
    assert not long, long
    text = json.dumps(nb.cells)
    found = [w for w in FORBIDDEN + OTHER_COURSE[key] if w.lower() in text.lower()]
    assert not found and not FLAG.findall(text), (found, FLAG.findall(text))
    setup = next(c.source for c in nb.cells if c.cell_type == "code")
    assert len([ln for ln in setup.splitlines() if ln.strip()]) <= 40
    for word in ("ConfigError", "check_device", "resolve_precision", "fused", "Recipe", "is_writable",
                 "TensorLoader", "memory_format", "DatasetInfo", "argparse"):
        assert word not in _code(nb), word


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_templates_keep_no_second_copy_of_the_modules(key):
    """The template's own cells define none of the names that its directives copy from the
    repository: the modules are the one source of the graded code."""
    template, _ = NOTEBOOKS[key]
    nb = nbformat.read(template, as_version=4)
    built = deliver.build_notebook(template)
    own, copied = set(), set()
    for cell, done in zip(nb.cells, built.cells):
        if cell.cell_type != "code":
            continue
        names = {n.name for n in ast.parse(done.source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        (copied if DIRECTIVE in cell.source else own).update(names)
    assert copied and not own & copied, own & copied


def test_inline_refuses_a_name_the_notebook_lacks():
    with pytest.raises(InlineError, match="gradient_penalty"):
        inline_source("csc8851_hw2/wgan_gp_model.py", ["critic_objective"], set())
    with pytest.raises(InlineError, match="no top-level definition named nope"):
        inline_source("common/training.py", ["nope"], set())
    code, provides = inline_source("common/training.py", ["ema_update"], set())
    assert "def ema_update(" in code and "import torch" in code and "ema_update" in provides
    assert "def make_ema(" not in code  # only what was named and what it uses
    code, _ = inline_source("common/training.py", ["ema_update"], {"torch"})
    assert "import torch" not in code  # an earlier cell imported it


def test_inline_takes_what_a_definition_uses_once():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import torch"),
        nbformat.v4.new_code_cell(f"{DIRECTIVE} csc8851_hw2/wgan_gp_model.py: class_samples"),
        nbformat.v4.new_code_cell(f"{DIRECTIVE} csc8851_hw2/wgan_gp_model.py: truncation_samples")])
    inline_notebook(nb)
    first, second = nb.cells[1].source, nb.cells[2].source
    assert "def generate(" in first and "def noise(" in first and "import torch\n" not in first
    assert "def generate(" not in second and "def truncation_samples(" in second and "PSIS =" in second
    assert "# " not in first.splitlines()[0]  # no header naming where the code came from


def _check_kernel_lacks_common(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import importlib.util\nassert importlib.util.find_spec('common') is None, 'common is importable'\n"
        "import torch, torchvision, numpy, matplotlib\nprint('bare')")])
    deliver.execute_notebook(nb, tmp_path, timeout=120)
    assert nb.cells[0].outputs[0]["text"].strip() == "bare"


def _pdf_pages(pdf) -> list[str]:
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True).stdout
    return text.split("\f")[:-1] if text.endswith("\f") else text.split("\f")


def _first_figure_page(pdf) -> int:
    rows = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True).stdout.splitlines()[2:]
    pages = [int(r.split()[0]) for r in rows if r.split() and r.split()[2] == "image" and int(r.split()[3]) > 150]
    return min(pages)


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_notebook_runs_alone_in_quick_mode_on_the_embedded_sample(key, tmp_path, monkeypatch):
    """No HW_DATA_ROOT and no network: the build places the embedded sample in the kernel's
    ./data, the notebook says it ran on it, and the PDF keeps the page budget."""
    monkeypatch.setenv("HW_QUICK", "1")
    monkeypatch.delenv("HW_DATA_ROOT", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any download fails at once
    _check_kernel_lacks_common(tmp_path)
    template, dst_name = NOTEBOOKS[key]
    dst = tmp_path / "dist" / dst_name
    deliver.deliver_notebook(template, dst, name="Doe", pdf=HAVE_PDF_TOOLS, work_root=tmp_path / "work")
    nb = nbformat.read(dst, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= (5 if key == "csc8851" else 2)
    text = json.dumps(outputs)
    assert "2,000 MNIST training images (a 2,000-image sample of the 60,000)" in text
    assert "quick mode: a smoke test" in text
    for machine_path in (str(ROOT), str(tmp_path), "/home/", "site-packages", "Warning"):
        assert machine_path not in text, f"{machine_path} printed in the notebook's outputs"
    streams = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert max(map(len, streams.splitlines())) <= PRINTED_WIDTH  # no printed line wraps
    work = tmp_path / "work" / dst.stem
    assert not (work / "data").exists()  # the data is gone after the run
    assert len(list((work / "figures").glob("*.png"))) >= (5 if key == "csc8851" else 2)
    if key == "assignment3":
        assert len(list((work / "figures" / "generated").glob("generated_*.png"))) == 25
    if not HAVE_PDF_TOOLS:
        return
    pdf = dst.with_suffix(".pdf")
    pages = _pdf_pages(pdf)
    flat = " ".join(" ".join(pages).split())
    missing = [s for s in GRADED_CODE[key] if " ".join(s.split()) not in flat]
    assert not missing, f"the PDF does not show {missing}"
    assert "Name: Doe" in flat
    found = [w for w in FORBIDDEN + OTHER_COURSE[key] if w.lower() in flat.lower()]
    assert not found and not FLAG.findall(flat), (found, FLAG.findall(flat))
    budget = BUDGET[key]
    assert len(pages) <= budget["pages"] - 1, f"{len(pages)} pages"
    marker, by_page = budget["models"]
    assert next(i for i, p in enumerate(pages, 1) if marker in p) <= by_page
    assert _first_figure_page(pdf) <= budget["figure"]


@pytest.mark.skipif(not HAVE_PDF_TOOLS, reason="Chromium and poppler-utils are installed by .ci/run")
def test_pdf_tools_are_there_in_ci():
    assert deliver.chromium() and shutil.which("pdftoppm")


def test_quick_data_is_the_embedded_sample_in_torchvision_layout(tmp_path):
    import torchvision

    said = deliver.place_data(tmp_path, quick=True)
    assert "2,000 train and 1,000 test images" in said
    train = torchvision.datasets.MNIST(str(tmp_path / "data"), train=True, download=False)
    test = torchvision.datasets.MNIST(str(tmp_path / "data"), train=False, download=False)
    assert (len(train), len(test)) == (2000, 1000)
    assert train.data.shape[1:] == (28, 28) and int(train.data.max()) == 255
    assert sorted(train.targets.unique().tolist()) == list(range(10))


def test_full_build_without_the_data_stops_with_one_line(tmp_path, monkeypatch, capsys):
    """A full build needs the full MNIST: without it (and without a way to download it) the build
    stops before running anything, with one line and exit code 2."""
    monkeypatch.delenv("HW_QUICK", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o555)  # read-only: nothing is downloaded into it
    monkeypatch.setenv("HW_DATA_ROOT", str(empty))
    monkeypatch.setattr(deliver, "OUTPUTS", tmp_path / "outputs")
    with pytest.raises(SystemExit) as exit_info:
        deliver.main(["notebook", str(NOTEBOOKS["assignment3"][0]), str(tmp_path / "dist" / "A.ipynb")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the full data" in err and "MNIST" in err
    assert not (tmp_path / "dist").exists()
    assert not list((tmp_path / "outputs" / "assignment3" / "notebook").iterdir())  # no work folder left


def test_failed_build_keeps_the_good_deliverable(tmp_path, monkeypatch, capsys):
    """A cell that raises stops the build with one line; the deliverable of an earlier good build
    stays as it was, and the partly run notebook is kept for a look."""
    monkeypatch.setenv("HW_QUICK", "1")
    template = tmp_path / "t.ipynb"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import torchvision\nx = torchvision.datasets.MNIST('data', train=True)"),
        nbformat.v4.new_code_cell("raise ValueError(f'{len(x)} images is too few')")])
    nbformat.write(nb, template)
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "t_quick.ipynb").write_text("good")
    (dist / "t_quick.pdf").write_text("good pdf")
    monkeypatch.setattr(deliver, "OUTPUTS", tmp_path / "outputs")
    with pytest.raises(SystemExit) as exit_info:
        deliver.main(["notebook", str(template), str(dist / "t.ipynb")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "\x1b[" not in err
    assert "cell 1 failed: ValueError: 2000 images is too few" in err and "left as it was" in err
    assert (dist / "t_quick.ipynb").read_text() == "good" and (dist / "t_quick.pdf").read_text() == "good pdf"
    failed = tmp_path / "outputs" / tmp_path.name / "notebook" / "t_quick.failed"
    assert (failed / "t_quick.ipynb").exists() and not (failed / "data").exists()


def test_a_kernel_that_dies_stops_the_build_with_one_line(tmp_path, monkeypatch, capsys):
    """A kernel killed mid-cell (out of memory, or by hand) ends the build at once with one line,
    rather than waiting forever for the dead kernel's output, and the earlier upload stays."""
    monkeypatch.setenv("HW_QUICK", "1")
    template = tmp_path / "t.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('start')"),
        nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")]), template)
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "t_quick.ipynb").write_text("good")
    monkeypatch.setattr(deliver, "OUTPUTS", tmp_path / "outputs")
    with pytest.raises(SystemExit) as exit_info:
        deliver.main(["notebook", str(template), str(dist / "t.ipynb"), "--no-pdf"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the kernel died in cell 1" in err, err
    assert (dist / "t_quick.ipynb").read_text() == "good"
