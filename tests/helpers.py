"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def full_data_available() -> bool:
    root = os.environ.get("HW_DATA_ROOT")
    return bool(root) and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
