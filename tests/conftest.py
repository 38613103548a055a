"""Shared test fixtures. Tests never need the network: the full data is used when
HW_DATA_ROOT points at it (CI sets it to ../shared/data), otherwise the shipped sample."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import ROOT


@pytest.fixture
def empty_data_root(tmp_path, monkeypatch):
    """A data root with nothing in it (and so, offline, nothing to be had)."""
    root = tmp_path / "no-data"
    root.mkdir()
    monkeypatch.setenv("HW_DATA_ROOT", str(root))
    return root


@pytest.fixture
def course_path():
    """Put a course folder on sys.path for importing its modules; removed afterwards."""
    added = []

    def add(folder: str) -> Path:
        path = str(ROOT / folder)
        sys.path.insert(0, path)
        added.append(path)
        return ROOT / folder

    yield add
    for p in added:
        sys.path.remove(p)


@pytest.fixture(scope="session")
def sample_judge_root(tmp_path_factory):
    """A data root with no data in it, whose cache holds a quick MNIST judge trained once per
    session on the shipped sample (~40 s on one core): tests that need a judge share it."""
    import torch

    root = tmp_path_factory.mktemp("sample-judge-root")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared CPU two spin-waiting threads made this 5x slower
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HW_DATA_ROOT", str(root))
            from common import metrics as M
            M.get_judge("mnist", quick=True)
    finally:
        torch.set_num_threads(threads)
    return root
