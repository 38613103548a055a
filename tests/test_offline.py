"""Offline safety: every course script, run for real (no --quick) with an empty data folder and no
network, stops at once with one clear line on stderr and exit code 2, and no traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import ROOT

SCRIPTS = [
    ("ee8520_hw2", "hw2_step1_main.py"),
    ("ee8520_hw2", "hw2_step2_main.py"),
    ("ee8520_hw2", "hw2_step3_main.py"),
    ("csc8851_hw2", "wgan_gp.py"),
    ("assignment3", "part2_training_stages.py"),
    ("assignment3", "part2_batch_sizes.py"),
    ("assignment3", "part2_lr_schedules.py"),
    ("ece685d_hw5", "problem1_dcgan.py"),
    ("ece685d_hw5", "problem2_rbm.py"),
    ("ece685d_hw5", "problem3_vae.py"),
    ("rdfia_tp2", "tp2_dcgan.py"),
    ("rdfia_tp2", "tp2_cgan.py"),
]


@pytest.mark.parametrize("folder,script", SCRIPTS, ids=[s for _, s in SCRIPTS])
def test_missing_data_exits_2_with_one_line(folder, script, tmp_path):
    if not (ROOT / folder / script).exists():
        pytest.skip(f"{folder}/{script} not written yet")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HW_QUICK"}
    env["HW_DATA_ROOT"] = str(empty)
    proc = subprocess.run([sys.executable, script, "--out-dir", str(tmp_path / "out")], cwd=ROOT / folder,
                          env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(empty) in lines[0], proc.stderr
