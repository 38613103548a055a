"""``make demo`` as a new user runs it: a fresh clone (the repository's files only: no data/,
outputs/ or dist/), no ``HW_DATA_ROOT`` and no way to download anything. Every part runs on the
embedded sample, the two notebooks included, and ``make demo`` ends by listing every folder that
got figures.

The clone's virtual environment borrows this one's installed packages (a ``.pth`` file; a fresh
``make setup`` would need the network) and puts the clone, not this checkout, on its path."""
from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from helpers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None,
                                reason="needs make and git")


def fresh_clone(dest: Path) -> Path:
    """The files a clone of this checkout would hold (tracked and new, not ignored), copied."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def borrowed_venv(clone: Path) -> None:
    """``clone/.venv`` with this environment's packages and the clone on its path, marked as
    installed after the clone's pyproject.toml, so make does not try to install anything."""
    env = clone / ".venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    theirs = next((env / "lib").glob("python*/site-packages"))
    (theirs / "borrowed.pth").write_text("\n".join([str(clone), *ours]) + "\n")
    (env / "share").symlink_to(Path(sys.prefix) / "share")  # data files: nbconvert's templates, kernelspecs
    stamp = env / ".installed"
    stamp.touch()
    later = time.time() + 60
    os.utime(stamp, (later, later))


def test_make_demo_on_a_fresh_clone_offline(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    assert not (clone / "data").exists() and not (clone / "outputs").exists()
    borrowed_venv(clone)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HW_DATA_ROOT", "HW_QUICK", "PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS")}
    dead = "http://127.0.0.1:9"  # every download fails at once
    env.update(http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead, no_proxy="", NO_PROXY="",
               MPLBACKEND="Agg", HOME=str(tmp_path / "home"))
    start = time.time()
    proc = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=3 * 3600)
    minutes = (time.time() - start) / 60
    print(f"make demo on a fresh clone, offline: {minutes:.1f} min")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    assert "the embedded MNIST sample" in proc.stdout  # the notebooks ran on it
    for notebook in ("CSC8851_F2025_HW2_YourName_quick", "Assignment_3_GAN_quick"):
        assert (clone / "dist" / f"{notebook}.ipynb").is_file()
        text = (clone / "dist" / f"{notebook}.ipynb").read_text()
        assert "2,000-image sample of the 60,000" in text
    listing = proc.stdout.split("quick run folders")[-1]
    listed = set(re.findall(r"outputs/\S+?/(?=\s)", listing))
    with_figures = {f"{d.relative_to(clone).as_posix()}/" for d in (clone / "outputs").glob("*/*/*")
                    if d.is_dir() and any(d.rglob("*.png"))}
    assert with_figures and with_figures <= listed, with_figures - listed
    assert any("/notebook/" in d for d in with_figures)  # the notebooks' figures are listed too
    assert not [p for p in (clone / "data").rglob("*-ubyte*") if p.is_file()]  # nothing was downloaded
