"""Deliverables: executed notebooks with HTML and PDF, Markdown reports as PDF, course zips.

    python -m common.deliver notebook SRC.ipynb DST.ipynb   # execute, then DST.html and DST.pdf
    python -m common.deliver zip COURSE_FOLDER NAME           # dist/<handout's file name>.zip

PDFs are printed by headless Chromium (Debian's ``chromium`` package) from HTML whose math is
rendered by the local MathJax that the ``jupyter-server-mathjax`` package ships, so everything
works offline. Without Chromium the HTML is still written and the command says how to install it.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from .paths import DIST, ROOT

# The file names the handouts ask for; {name} is the student's (last) name.
ZIP_NAMES = {
    "ee8520_hw2": "{name}_EE8520_F25",
    "csc8851_hw2": "CSC8851_F2025_HW2_{name}",
    "assignment3": "{name}_Assignment3",
    "ece685d_hw5": "{name}_ECE685D_HW5",
    "rdfia_tp2": "{name}_RDFIA_TP2",
}
# Never shipped: data, generated outputs, checkpoints, caches.
EXCLUDED_DIRS = {"__pycache__", ".ipynb_checkpoints", "data", "outputs", "imgs", "dist", "cache", ".pytest_cache"}
EXCLUDED_SUFFIXES = {".pt", ".pth", ".ckpt", ".zip", ".tmp", ".pyc"}


def _shipped_files(folder: Path):
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not (set(rel.parts[:-1]) & EXCLUDED_DIRS) and path.suffix not in EXCLUDED_SUFFIXES:
            yield path, rel


def requirements_text() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return "# pip install -r requirements.txt\n" + "\n".join(deps) + "\n"


def zip_course(course: str, name: str, dist_dir: Path | None = None) -> Path:
    """Zip one course folder for submission: its files, a copy of ``common/`` and a
    ``requirements.txt`` inside one top folder named like the zip; no data, outputs or checkpoints."""
    folder = ROOT / course
    if course not in ZIP_NAMES or not folder.is_dir():
        raise SystemExit(f"unknown course folder {course!r}; choose from {sorted(ZIP_NAMES)}")
    stem = ZIP_NAMES[course].format(name=name)
    dist_dir = Path(dist_dir) if dist_dir else DIST
    dist_dir.mkdir(parents=True, exist_ok=True)
    out = dist_dir / f"{stem}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, rel in _shipped_files(folder):
            z.write(path, f"{stem}/{rel.as_posix()}")
        for path, rel in _shipped_files(ROOT / "common"):
            z.write(path, f"{stem}/common/{rel.as_posix()}")
        z.writestr(f"{stem}/requirements.txt", requirements_text())
    print(f"wrote {out}")
    return out


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
    """Print ``html`` to ``pdf`` with headless Chromium, waiting for MathJax; None without Chromium."""
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
               f"--print-to-pdf={pdf}", Path(html).resolve().as_uri()]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    print(f"wrote {pdf}")
    return pdf


def notebook_to_html(nb, html: Path) -> Path:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(mathjax_url=mathjax_url())
    body, _ = exporter.from_notebook_node(nb)
    html.write_text(body)
    print(f"wrote {html}")
    return html


def execute_notebook(src: Path, dst: Path, timeout: int = 4 * 3600, pdf: bool = True) -> Path:
    """Run ``src`` top to bottom (cwd = its folder, environment passed through, so ``HW_QUICK=1``
    reaches the kernel), save it with every output as ``dst``, then ``dst.html`` and ``dst.pdf``."""
    import nbclient
    import nbformat

    src, dst = Path(src).resolve(), Path(dst).resolve()
    nb = nbformat.read(src, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(src.parent)}})
    try:
        client.execute()
    finally:
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, dst)
    print(f"wrote {dst}")
    html = notebook_to_html(nb, dst.with_suffix(".html"))
    if pdf:
        html_to_pdf(html, dst.with_suffix(".pdf"))
    return dst


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build deliverables.")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("zip", help="zip a course folder for submission")
    p.add_argument("course")
    p.add_argument("name")
    p.add_argument("--dist", default=None)
    p = sub.add_parser("notebook", help="execute a notebook, export HTML and PDF")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--no-pdf", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "zip":
        zip_course(args.course, args.name, args.dist)
    else:
        from .cli import env_quick

        dst = Path(args.dst)
        if env_quick():  # a smoke run never overwrites the executed notebook of a full run
            dst = dst.with_name(f"{dst.stem}_quick{dst.suffix}")
        try:
            execute_notebook(Path(args.src), dst, pdf=not args.no_pdf)
        except Exception as exc:  # a failing cell: say which, exit non-zero, no library traceback
            print(f"error: the notebook {args.src} failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}",
                  file=sys.stderr)
            print(f"the partly executed notebook is at {dst}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
