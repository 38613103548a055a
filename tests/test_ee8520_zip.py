"""EE 8520 HW2 submission zip: built by ``common.deliver.zip_course`` (``make zip-ee8520``), it
holds the course files, a copy of ``common/`` and ``requirements.txt`` and no data, checkpoints,
outputs or figures; unzipped somewhere else it runs Step 1 on its own, with its own ``common``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

from helpers import ROOT

FORBIDDEN_DIRS = {"data", "outputs", "imgs", "dist", "cache", "__pycache__"}
FORBIDDEN_SUFFIXES = {".pt", ".pth", ".ckpt", ".zip", ".tmp", ".pyc"}


def test_ee8520_zip_runs_on_its_own(tmp_path):
    from common.deliver import zip_course

    path = zip_course("ee8520_hw2", "Doe", dist_dir=tmp_path / "dist")
    assert path == tmp_path / "dist" / "Doe_EE8520_F25.zip" and path.exists()

    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        z.extractall(tmp_path / "unzipped")
    parts = [PurePosixPath(n).parts for n in names]
    assert {p[0] for p in parts} == {"Doe_EE8520_F25"}  # one top folder named like the zip
    inside = {"/".join(p[1:]) for p in parts}
    for required in ("hw2_step1_main.py", "hw2_step3_main.py", "models/__init__.py", "models/GAN.py",
                     "models/VAE.py", "README.md", "requirements.txt", "common/__init__.py", "common/data.py",
                     "common/sample_data/mnist.npz.xz"):
        assert required in inside, f"{required} missing from the zip"
    for n in inside:
        p = PurePosixPath(n)
        assert not set(p.parts[:-1]) & FORBIDDEN_DIRS, f"{n} should not be shipped"
        assert p.suffix not in FORBIDDEN_SUFFIXES, f"{n} should not be shipped"

    folder = tmp_path / "unzipped" / "Doe_EE8520_F25"
    # Judge weights are a cache, not code: reuse the repository's cached ones when there are some
    # (the unzipped copy would otherwise train a quick judge first, ~40 s of CPU).
    from common.metrics import _judge_path
    for cached in {_judge_path("mnist", False), _judge_path("mnist", True)}:
        if cached.exists():
            (folder / "data" / "cache").mkdir(parents=True, exist_ok=True)
            shutil.copy(cached, folder / "data" / "cache" / cached.name)
    # The repository out of reach: no PYTHONPATH, no data root (the zip's embedded sample is used).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HW_DATA_ROOT", "HW_QUICK")}
    where = subprocess.run([sys.executable, "-c", "import common; print(common.__file__)"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.returncode == 0 and Path(where.stdout.strip()).resolve().is_relative_to(folder.resolve())

    proc = subprocess.run([sys.executable, "hw2_step1_main.py", "--quick"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    run = folder / "outputs" / "ee8520" / "step1" / "gan_quick"  # common.paths.ROOT is the unzipped folder
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    # a quick run keeps the skeleton's figures in its own run folder, away from the student's imgs/
    assert (run / "imgs" / "generated_images.png").exists() and (run / "imgs" / "loss_monitoring.png").exists()
    assert not (folder / "imgs" / "generated_images.png").exists()
    assert not (ROOT / "ee8520_hw2" / "outputs").exists()
