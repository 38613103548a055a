"""Submission zips (``make zip-<course>``, ``common.deliver.zip_course``): code only (the course's
Python files and README, a copy of ``common/``'s code, ``requirements.txt``), no data of any kind;
unzipped anywhere, a script runs on its own with its own ``common``, reading ``$HW_DATA_ROOT``,
and without data its quick mode stops with one line and exit code 2."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from common.courses import courses
from common.deliver import zip_course
from common.metrics import _judge_path
from helpers import ROOT, full_data_available

ZIPPED = sorted(c.folder for c in courses() if c.zip)
# The cheapest script of each course, run in quick mode from the unzipped folder.
SMOKE = {
    "ee8520_hw2": ["hw2_step3_main.py", "--quick"],
    "assignment3": ["part2_training_stages.py", "--quick", "--epochs", "1"],
    "ece685d_hw5": ["problem3_vae.py", "--quick", "--epochs", "1"],
    "rdfia_tp2": ["tp2_dcgan.py", "--quick", "--epochs", "1"],
}


def _unzip(course: str, tmp_path: Path) -> tuple[Path, set[str]]:
    path = zip_course(course, "Doe", dist_dir=tmp_path / "dist")
    stem = next(c.zip for c in courses() if c.folder == course).format(name="Doe")
    assert path == tmp_path / "dist" / f"{stem}.zip"
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        z.extractall(tmp_path / "unzipped")
    parts = [PurePosixPath(n).parts for n in names]
    assert {p[0] for p in parts} == {stem}  # one top folder named like the zip
    return tmp_path / "unzipped" / stem, {"/".join(p[1:]) for p in parts}


def _env(folder: Path, data_root: Path) -> dict:
    """The repository out of reach (no PYTHONPATH), the data where the test says."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HW_QUICK")}
    return {**env, "HW_DATA_ROOT": str(data_root), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("course", ZIPPED)
def test_zip_holds_code_and_no_data(course, tmp_path):
    folder, inside = _unzip(course, tmp_path)
    assert {"README.md", "requirements.txt", "common/__init__.py", "common/data.py", SMOKE[course][0]} <= inside
    for name in inside:
        assert name.endswith(".py") or name in ("README.md", "requirements.txt"), f"{name} should not be shipped"
        assert "sample_data" not in name and "data/" not in name.split("common/")[-1][:5]
    assert sum((folder / n).stat().st_size for n in inside) < 1_000_000  # code, not data


@pytest.mark.skipif(not full_data_available(), reason="needs HW_DATA_ROOT with MNIST (CI sets it)")
@pytest.mark.parametrize("course", ZIPPED)
def test_unzipped_script_runs_on_its_own(course, tmp_path):
    folder, _ = _unzip(course, tmp_path)
    env = _env(folder, Path(os.environ["HW_DATA_ROOT"]))
    where = subprocess.run([sys.executable, "-c", "import common; print(common.__file__)"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.returncode == 0 and Path(where.stdout.strip()).resolve().is_relative_to(folder.resolve())
    # Judge weights are a cache, not code: reuse the repository's when there are some (a quick
    # judge would otherwise be trained first, ~40 s of CPU).
    for cached in {_judge_path(d, q) for d in ("mnist", "fashion") for q in (False, True)}:
        if cached.exists():
            (folder / "data" / "cache").mkdir(parents=True, exist_ok=True)
            shutil.copy(cached, folder / "data" / "cache" / cached.name)
    proc = subprocess.run([sys.executable, *SMOKE[course], "--data-root", os.environ["HW_DATA_ROOT"]],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (folder / "outputs").is_dir()  # common.paths.ROOT is the unzipped folder
    assert not (ROOT / course / "outputs").exists()


def test_unzipped_quick_run_without_data_says_so_in_one_line(tmp_path):
    folder, _ = _unzip("ee8520_hw2", tmp_path)
    empty = tmp_path / "no-data"
    empty.mkdir()
    empty.chmod(0o555)  # read-only: nothing can be downloaded into it either
    proc = subprocess.run([sys.executable, "hw2_step1_main.py", "--quick"], cwd=folder, env=_env(folder, empty),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "MNIST" in err
