"""Deliverables: executed notebooks with HTML and PDF, Markdown reports as PDF, course zips.

    python -m common.deliver notebook SRC.ipynb DST.ipynb   # execute, then DST.html and DST.pdf
    python -m common.deliver zip COURSE_FOLDER NAME           # dist/<handout's file name>.zip

PDFs are printed by headless Chromium (Debian's ``chromium`` package) from HTML whose math is
rendered by the local MathJax that the ``jupyter-server-mathjax`` package ships, so everything
works offline. Without Chromium the HTML is still written and the command says how to install it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .paths import OUTPUTS, shown
from .paths import data_root as data_root_of
from .zips import build_zip as zip_course  # the zips live in common.zips

# --------------------------------------------------------------------------------------------
# HTML and PDF


def mathjax_url() -> str:
    """file:// URL of the local MathJax 2.7 with a config that exists in that copy."""
    import jupyter_server_mathjax

    js = Path(jupyter_server_mathjax.__file__).parent / "static" / "MathJax.js"
    return f"{js.as_uri()}?config=TeX-AMS-MML_HTMLorMML-full,Safe"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def html_to_pdf(html: Path, pdf: Path) -> Path | None:
    """Print ``html`` to ``pdf`` with headless Chromium, waiting for MathJax; None without Chromium.
    The PDF is printed beside ``pdf`` and moved over it only once complete."""
    exe = chromium()
    if exe is None:
        print("note: Chromium is not installed, so no PDF was printed (the HTML is written). "
              "Install it with `sudo apt-get install chromium` and run the command again.")
        return None
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--allow-file-access-from-files", "--virtual-time-budget=20000",
               "--run-all-compositor-stages-before-draw", "--no-pdf-header-footer",
               f"--print-to-pdf={Path(profile) / 'out.pdf'}", Path(html).resolve().as_uri()]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
        _copy_into_place(Path(profile) / "out.pdf", Path(pdf))
    return pdf


def _copy_into_place(made: Path, final: Path) -> None:
    """Copy a finished file over ``final`` in one step (a copy beside it, then a rename), so that
    ``final`` is always either the old file or the whole new one."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.copyfile(made, tmp)
    os.replace(tmp, final)


def _replace_folder(folder: Path, target: Path) -> None:
    """Move ``folder`` to ``target``, replacing what was there."""
    shutil.rmtree(target, ignore_errors=True)
    os.replace(folder, target)


# MathJax's HTML-CSS output with the STIX-Web fonts that the local copy ships (its default TeX
# fonts are not there, and Chromium's own MathML rendering floats hats and underbraces apart).
MATHJAX_CONFIG = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web",
                                 imageFont: null}, MMLorHTML: {prefer: "HTML"}});
</script>
"""
# Printed: narrow margins, no In/Out prompts and 11 px code, so that PRINTED_CODE_WIDTH characters
# fit a Letter or A4 line; a longer output line wraps at a space, never inside a word.
PRINT_CSS = """<style>
@page { margin: 12mm; }
@media print {
  :root { --jp-code-font-size: 11px; }
  .jp-InputPrompt, .jp-OutputPrompt { display: none !important; }
  pre { white-space: pre-wrap !important; word-break: normal !important; overflow-wrap: break-word; }
}
</style>
"""
PRINTED_CODE_WIDTH = 100


def notebook_to_html(nb, html: Path) -> Path:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(mathjax_url=mathjax_url())
    body, _ = exporter.from_notebook_node(nb)
    body = body.replace("<!-- Load mathjax -->", "<!-- Load mathjax -->\n" + MATHJAX_CONFIG, 1)
    html.write_text(body.replace("</head>", PRINT_CSS + "</head>", 1))
    return html


# --------------------------------------------------------------------------------------------
# Notebooks: built from a template, executed alone, then moved into dist/


class NotebookFailed(RuntimeError):
    """A cell raised; the message is one line: the cell's number and its error."""


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def build_notebook(template: Path, name: str | None = None):
    """The template with its ``#| inline:`` cells filled with the repository's code
    (:mod:`common.inline`) and ``YourName`` in its text cells replaced by ``name``."""
    import nbformat

    from .inline import inline_notebook

    nb = nbformat.read(template, as_version=4)
    inline_notebook(nb)
    if name:
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = cell.source.replace("YourName", name)
    return nb


def bare_kernel(folder: Path):
    """A kernel manager for a Python that has this environment's PyPI packages but not the
    repository: a virtual environment in ``folder`` whose site-packages points at ours through a
    ``.pth`` line (so the editable install's finder never runs) and a kernelspec that starts it.
    ``import common`` fails there, as it does for a grader who has only the notebook."""
    import site
    import venv

    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    env = folder / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    # this Python's site-packages folders, also those a .pth file put on sys.path (a virtual
    # environment that borrows another's packages), never the repository itself
    ours = list(dict.fromkeys(p for p in [*site.getsitepackages(), *sys.path]
                              if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()))
    theirs = next((env / "lib").glob("python*/site-packages"))
    (theirs / "pypi_packages.pth").write_text("\n".join(ours) + "\n")
    spec = folder / "kernels" / "bare"
    spec.mkdir(parents=True)
    python = env / "bin" / "python"
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (PyPI packages only)", "language": "python"}))
    return AsyncKernelManager(kernel_name="bare", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))


def execute_notebook(nb, workdir: Path, timeout: int = 6 * 3600, env: dict | None = None):
    """Run ``nb`` top to bottom in a bare kernel (:func:`bare_kernel`) whose working folder is
    ``workdir``. Raises :class:`NotebookFailed` with one line when a cell fails; ``nb`` keeps the
    outputs either way."""
    import nbclient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    kernel_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    kernel_env.update(env or {})
    with tempfile.TemporaryDirectory() as tmp:
        running = []  # the index of the cell sent to the kernel last, to name it if the kernel dies
        client = nbclient.NotebookClient(nb, timeout=timeout, km=bare_kernel(Path(tmp)),
                                         resources={"metadata": {"path": str(workdir)}},
                                         on_cell_execute=lambda cell, cell_index: running.append(cell_index))
        try:
            client.execute(env=kernel_env, stderr=subprocess.DEVNULL)  # the kernel's own start-up chatter
        except CellExecutionError as exc:
            failed, error = next(((i, o) for i, c in enumerate(nb.cells) for o in c.get("outputs", [])
                                  if o.get("output_type") == "error"), (None, None))
            what = f"{error['ename']}: {error['evalue']}" if error else str(exc).strip().splitlines()[-1]
            raise NotebookFailed(f"cell {failed} failed: {ANSI.sub('', what)}") from None
        except DeadKernelError:
            where = f" in cell {running[-1]}" if running else ""
            raise NotebookFailed(f"the kernel died{where} (killed, or out of memory)") from None
    return nb


def write_idx(path: Path, array) -> None:
    """``array`` (uint8 images (N, H, W) or labels (N,)) as an IDX file, the format of MNIST's
    files that torchvision reads."""
    import numpy as np

    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def place_data(folder: Path, quick: bool, data_root=None, datasets=("mnist",)) -> str:
    """Put the data a notebook reads from ``./data`` into ``folder/data`` in torchvision's layout,
    and say what it is. Quick: the embedded sample's images (2,000 training and 1,000 test
    images), written as the IDX files torchvision reads, so a quick build needs no network.
    Full: a link to the full set under the data root (downloaded there first when missing and a
    network exists); :class:`DataError` with one line when it cannot be had."""
    from . import data as D

    (folder / "data").mkdir(exist_ok=True)
    said = []
    for name in datasets:
        info = D.dataset_info(name)
        if quick:
            raw = folder / "data" / info.folder / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            counts = []
            for split, prefix in (("train", "train"), ("test", "t10k")):
                x, y = D._read_sample(info, split)
                write_idx(raw / f"{prefix}-images-idx3-ubyte", x.squeeze(1).numpy())
                write_idx(raw / f"{prefix}-labels-idx1-ubyte", y.numpy())
                counts.append(f"{len(y):,} {split}")
            said.append(f"the embedded {info.title} sample ({' and '.join(counts)} images)")
        else:
            root = data_root_of(data_root)
            for split in ("train", "test"):
                D.read_torchvision(name, split, root)  # DataError: one line that says what to do
            (folder / "data" / info.folder).symlink_to((root / info.folder).resolve(), target_is_directory=True)
            said.append(f"{info.title} from {shown(root / info.folder)}")
    return ", ".join(said)


def deliver_notebook(template: Path, dst: Path, name: str | None = None, pdf: bool = True,
                     data_root=None, work_root: Path | None = None, quick: bool | None = None) -> Path:
    """Build ``template`` (:func:`build_notebook`), run it in an empty folder with a bare kernel,
    and only when every cell ran, write ``dst`` and its PDF (and the HTML the PDF is printed from,
    beside the run's figures). A failure leaves ``dst`` and its PDF as they were; the partly run
    notebook and its folder stay under ``<work_root>/<dst stem>.failed/``.

    The kernel's ``./data`` holds what :func:`place_data` puts there (the embedded sample in quick
    mode, ``quick``: ``HW_QUICK``; else the full set); it is removed after the run. The figures
    stay in ``<work_root>/<dst stem>/``; ``work_root`` defaults to ``outputs/<the template's
    folder>/notebook``, so a notebook's run folder sits beside its course's script runs."""
    import nbformat

    from .cli import env_quick

    quick = env_quick() if quick is None else quick
    dst = Path(dst).resolve()
    nb = build_notebook(Path(template), name)
    home = Path(work_root) if work_root else OUTPUTS / Path(template).resolve().parent.name / "notebook"
    home.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{dst.stem}.", dir=home))
    try:
        print(f"running {Path(template).name} on {place_data(workdir, quick, data_root)}")
        execute_notebook(nb, workdir, env={"HW_QUICK": "1" if quick else "0"})
    except NotebookFailed:
        shutil.rmtree(workdir / "data", ignore_errors=True)
        nbformat.write(nb, workdir / dst.name)
        _replace_folder(workdir, home / f"{dst.stem}.failed")
        raise
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    shutil.rmtree(workdir / "data", ignore_errors=True)
    html = notebook_to_html(nb, workdir / f"{dst.stem}.html")
    staged = [(workdir / dst.name, dst)]
    nbformat.write(nb, staged[0][0])
    if pdf and html_to_pdf(html, workdir / f"{dst.stem}.pdf") is not None:
        staged.append((workdir / f"{dst.stem}.pdf", dst.with_suffix(".pdf")))
    dst.parent.mkdir(parents=True, exist_ok=True)
    for made, final in staged:  # the deliverables move into place only now that every cell ran
        _copy_into_place(made, final)
        print(f"wrote {shown(final)}")
    _replace_folder(workdir, home / dst.stem)
    print(f"figures and HTML in {shown(home / dst.stem)}")
    return dst


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build deliverables.")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("zip", help="zip a course folder for submission")
    p.add_argument("course")
    p.add_argument("name")
    p.add_argument("--dist", default=None)
    p = sub.add_parser("notebook", help="build a notebook from its template, run it alone, export its PDF")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--name", default=None, help="the student's name, for the title cell")
    p.add_argument("--no-pdf", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "zip":
        zip_course(args.course, args.name, args.dist)
        return
    from .cli import env_quick
    from .data import DataError
    from .inline import InlineError

    dst = Path(args.dst)
    if env_quick():  # a smoke run never overwrites the executed notebook of a full run
        dst = dst.with_name(f"{dst.stem}_quick{dst.suffix}")
    try:
        deliver_notebook(Path(args.src), dst, name=args.name, pdf=not args.no_pdf)
    except DataError as exc:
        print(f"error: the full build of {shown(Path(args.src))} needs the full data: {exc} "
              "(QUICK=1 / HW_QUICK=1 builds on the embedded sample)", file=sys.stderr)
        sys.exit(2)
    except (NotebookFailed, InlineError) as exc:
        print(f"error: {shown(Path(args.src))}: {exc}; {shown(dst)} was left as it was", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
