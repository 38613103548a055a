"""The tracked text speaks to today's reader: no README, docstring, comment or output narrates the
project's history (issue numbers, sessions, agents)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from helpers import ROOT

HISTORY = r"issue [0-9]|\bsessions?\b|\bagents?\b"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_no_tracked_file_narrates_history():
    found = subprocess.run(["git", "grep", "-n", "-I", "-i", "-E", HISTORY, "--", ".", ":!tests"], cwd=ROOT,
                           capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    assert found.stdout == "", "history in tracked files:\n" + found.stdout[:3000]


def test_the_root_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
