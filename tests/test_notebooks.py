"""The submitted notebooks stand alone: built from their templates (the repository's code written
into their cells by ``common.inline``), each runs top to bottom in an empty folder under a kernel
in which ``import common`` fails, its PDF shows the graded code, and a failed build leaves the
previous deliverable as it was."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess

import nbformat
import pytest

from common import deliver
from common.inline import DIRECTIVE, InlineError, inline_notebook, inline_source
from helpers import ROOT, full_data_available

NOTEBOOKS = {
    "csc8851": (ROOT / "csc8851_hw2" / "CSC8851_F2025_HW2_YourName.ipynb", "CSC8851_F2025_HW2_Doe.ipynb"),
    "assignment3": (ROOT / "assignment3" / "Assignment_3_GAN.ipynb", "Assignment_3_GAN.ipynb"),
}
# What the PDF must show of the graded code (the handouts' parts), as text pdftotext finds.
GRADED_CODE = {
    "csc8851": ["class Generator(nn.Module)", "class Critic(nn.Module)", "def gradient_penalty(",
                "def critic_loss(", "def generator_loss(", "def ema_update(", "def critic_step(",
                "if (i + 1) % cfg.n_critic:", "def class_grid(", "def interpolation_grid(", "def truncation_grid(",
                "def fit_judge("],
    "assignment3": ["class Generator(nn.Sequential)", "class Discriminator(nn.Sequential)", "criterion = nn.BCELoss()",
                    "def make_optimizers(", "def real_fake_labels(", "def d_loss_real(", "def d_loss_fake(",
                    "def g_loss_fn(", "def set_requires_grad(", "for (real,) in progress(loader",
                    "plot_panels(", "generated_{i + 1:02d}.png"],
}
needs_data = pytest.mark.skipif(not full_data_available(), reason="needs HW_DATA_ROOT with MNIST (CI sets it)")
HAVE_PDF_TOOLS = deliver.chromium() is not None and shutil.which("pdftotext") is not None


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_built_notebook_holds_its_code_and_imports_nothing_of_the_repository(key):
    template, _ = NOTEBOOKS[key]
    nb = deliver.build_notebook(template, "Doe")
    code = _code(nb)
    assert DIRECTIVE not in code
    tree = ast.parse(code.replace("from __future__ import annotations", ""))
    imported = {(n.module or "") if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [None])}
    local = {"common", "wgan_gp", "wgan_gp_model", "mlp_gan", "models"}
    assert not {m.split(".")[0] for m in imported} & local, imported
    assert "inspect.getsource" not in code
    assert "**Name:** Doe" in nb.cells[0].source


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_templates_keep_no_second_copy_of_the_modules(key):
    """The template's own cells define none of the names that its directives copy from the
    repository: the modules are the one source of the models, losses and training steps."""
    template, _ = NOTEBOOKS[key]
    nb = nbformat.read(template, as_version=4)
    own = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and not cell.source.startswith(DIRECTIVE):
            for node in ast.parse(cell.source).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    own.add(node.name)
    built = deliver.build_notebook(template)
    copied = set()
    for cell in built.cells:
        if cell.metadata.get("inlined_from"):
            copied |= {n.name for n in ast.parse(cell.source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert copied and not own & copied, own & copied


def test_inline_refuses_a_name_the_notebook_lacks():
    with pytest.raises(InlineError, match="gradient_penalty"):
        inline_source("csc8851_hw2/wgan_gp_model.py", ["critic_gradient_penalty"], set())
    with pytest.raises(InlineError, match="no top-level definition named nope"):
        inline_source("common/training.py", ["nope"], set())
    code, provides, _ = inline_source("common/training.py", ["ema_update"], set())
    assert "def ema_update(" in code and "import torch" in code and "ema_update" in provides
    assert "def make_ema(" not in code  # only what was named and what it uses


def test_inline_takes_what_a_definition_uses_once():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"{DIRECTIVE} common/plotting.py: save_grid"),
        nbformat.v4.new_code_cell(f"{DIRECTIVE} common/plotting.py: plot_curves")])
    inline_notebook(nb)
    first, second = nb.cells[0].source, nb.cells[1].source
    assert "def _save(" in first and "def grid_image(" in first
    assert "def _save(" not in second and "def plot_panels(" in second  # _save is already defined


def _check_kernel_lacks_common(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import importlib.util\nassert importlib.util.find_spec('common') is None, 'common is importable'\n"
        "import torch, torchvision, numpy, matplotlib\nprint('bare')")])
    deliver.execute_notebook(nb, tmp_path, timeout=120)
    assert nb.cells[0].outputs[0]["text"].strip() == "bare"


@needs_data
@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_notebook_runs_alone_in_quick_mode(key, tmp_path, monkeypatch):
    monkeypatch.setenv("HW_QUICK", "1")
    _check_kernel_lacks_common(tmp_path)
    template, dst_name = NOTEBOOKS[key]
    dst = tmp_path / "dist" / dst_name
    deliver.deliver_notebook(template, dst, name="Doe", pdf=HAVE_PDF_TOOLS, work_root=tmp_path / "work")
    nb = nbformat.read(dst, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= (8 if key == "csc8851" else 3)
    text = json.dumps(outputs)
    assert "QUICK mode" in text
    for machine_path in (str(ROOT), str(tmp_path), "/home/", "site-packages"):
        assert machine_path not in text, f"{machine_path} printed in the notebook's outputs"
    figures = tmp_path / "work" / dst.stem / "figures_quick"
    assert figures.is_dir() and len(list(figures.glob("*.png"))) >= 3
    if key == "assignment3":
        assert len(list((figures / "generated").glob("generated_*.png"))) == 25
    if HAVE_PDF_TOOLS:
        pdf = dst.with_suffix(".pdf")
        page_text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True).stdout
        flat = " ".join(page_text.split())
        missing = [s for s in GRADED_CODE[key] if " ".join(s.split()) not in flat]
        assert not missing, f"the PDF does not show {missing}"
        assert "Name: Doe" in flat


@pytest.mark.skipif(not HAVE_PDF_TOOLS, reason="Chromium and poppler-utils are installed by .ci/run")
def test_pdf_tools_are_there_in_ci():
    assert deliver.chromium() and shutil.which("pdftoppm")


def test_failed_build_keeps_the_good_deliverable(tmp_path, monkeypatch, capsys):
    """No data and no network: the notebook stops in its data cell with one line, and the
    deliverable of an earlier good build stays as it was."""
    monkeypatch.setenv("HW_QUICK", "1")
    template = tmp_path / "t.ipynb"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"{DIRECTIVE} common/paths.py: is_writable\n{DIRECTIVE} common/data.py: read_torchvision"),
        nbformat.v4.new_code_cell("import os\nx, y = read_torchvision('mnist', 'train', os.environ['HW_DATA_ROOT'])")])
    nbformat.write(nb, template)
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "t_quick.ipynb").write_text("good")
    (dist / "t_quick.pdf").write_text("good pdf")
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o555)  # read-only, so nothing is downloaded into it either
    monkeypatch.setattr(deliver, "OUTPUTS", tmp_path / "outputs")
    with pytest.raises(SystemExit) as exit_info:
        monkeypatch.setenv("HW_DATA_ROOT", str(empty))
        deliver.main(["notebook", str(template), str(dist / "t.ipynb")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "\x1b[" not in err
    assert "DataError: MNIST (train) not found" in err and "left as it was" in err
    assert (dist / "t_quick.ipynb").read_text() == "good" and (dist / "t_quick.pdf").read_text() == "good pdf"
    assert (tmp_path / "outputs" / "notebooks" / "t_quick.failed" / "t_quick.ipynb").exists()
