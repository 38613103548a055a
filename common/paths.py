"""Where things live: the repository root, the data root and run folders.

Paths derive from this file, never from the working directory, so a script runs the same from
the repository root, from inside its course folder, or from an unzipped submission (where
``common/`` sits inside the course folder and that folder plays the role of the root).
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run folders: ``$HW_OUTPUTS`` when set (the tests point it at a temporary folder), else ``outputs/``.
OUTPUTS = Path(os.environ["HW_OUTPUTS"]).expanduser().resolve() if os.environ.get("HW_OUTPUTS") else ROOT / "outputs"
DIST = ROOT / "dist"


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data folder: ``--data-root``, else ``$HW_DATA_ROOT``, else ``<root>/data``."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("HW_DATA_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    return ROOT / "data"


def is_writable(folder: Path) -> bool:
    """Whether ``folder`` (or, if missing, its nearest existing parent) may be written into.
    A folder without write permission bits counts as read-only even for root."""
    probe = Path(folder)
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK) and bool(probe.stat().st_mode & 0o222)


def cache_dir(explicit_data_root: str | os.PathLike | None = None) -> Path:
    """A writable folder for caches (judge weights): ``<data root>/cache`` when the data folder is
    writable, else ``<root>/data/cache``. A folder without write permission bits (a shared,
    read-only copy of the data) counts as read-only even for root, who could write anyway."""
    root = data_root(explicit_data_root)
    path = root / "cache" if is_writable(root) else ROOT / "data" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def quick_folder(folder: Path, quick: bool, out_dir=None) -> Path:
    """Where a run in ``folder`` writes: ``folder`` itself, unless it is a quick run under
    ``outputs/`` whose folder is not a quick one yet (no part of its path below ``outputs/``
    ends in ``quick``): then ``<folder>_quick``. The one rule, for every script, that keeps a
    smoke run out of a full run's folder; ``--out-dir`` is taken as given."""
    folder = Path(folder)
    if not quick or out_dir:
        return folder
    try:
        parts = folder.resolve().relative_to(OUTPUTS.resolve()).parts
    except ValueError:
        return folder
    if not parts or any(p.endswith("quick") for p in parts):
        return folder
    return folder.with_name(f"{folder.name}_quick")


def run_path(course: str, part: str, name: str, out_dir: str | os.PathLike | None = None,
             quick: bool = False) -> Path:
    """``outputs/<course>/<part>/<name>/`` (or ``out_dir`` when given), not created. A quick run's
    folder is ``<name>_quick`` (:func:`quick_folder`), so a smoke run never overwrites a full run's results."""
    if out_dir:
        return Path(out_dir).expanduser().resolve()
    return quick_folder(OUTPUTS / course / part / name, quick)


def run_dir(course: str, part: str, name: str, out_dir: str | os.PathLike | None = None,
            quick: bool = False) -> Path:
    """:func:`run_path`, created."""
    path = run_path(course, part, name, out_dir, quick)
    path.mkdir(parents=True, exist_ok=True)
    return path


def shown(path: str | os.PathLike) -> Path:
    """``path`` relative to the repository when it lies inside it (no home folder in a report)."""
    resolved = Path(path).resolve()
    return resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else Path(path)


def skeleton_imgs_dir(course_dir: Path, run_folder: Path, cfg) -> Path:
    """Where a script writes the figures its skeleton names, created: ``<course>/imgs/`` for a full
    run; the run folder's ``imgs/`` with ``--out-dir`` or in quick mode, so that tests and smoke runs
    never overwrite a student's figures."""
    path = (run_folder if cfg.out_dir or cfg.quick else Path(course_dir)) / "imgs"
    path.mkdir(parents=True, exist_ok=True)
    return path
