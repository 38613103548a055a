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


QUICK_SUFFIX = "_quick"


def quick_name(name: str) -> str:
    """The folder name of a quick run: ``<name>_quick`` (a name that already ends so is kept)."""
    return name if is_quick_name(name) else f"{name}{QUICK_SUFFIX}"


def is_quick_name(name: str) -> bool:
    return name.endswith(QUICK_SUFFIX)


def full_name(name: str) -> str:
    """``gan_quick`` -> ``gan``: the full run a quick run's folder stands beside."""
    return name[: -len(QUICK_SUFFIX)] if is_quick_name(name) else name


def run_path(course: str, part: str, name: str, out_dir: str | os.PathLike | None = None,
             quick: bool = False) -> Path:
    """Where a run writes, not created: ``outputs/<course folder>/<part>/<name>/``, and for a quick
    run the same path with ``_quick`` appended to the run folder's name
    (``outputs/<course folder>/<part>/<name>_quick/``), so a smoke run never touches a full run's
    files. ``out_dir`` (``--out-dir``), when given, is taken as it is. The one rule that names
    run folders: every script, report and listing of runs goes through it."""
    if out_dir:
        return Path(out_dir).expanduser().resolve()
    if not (course and part and name):
        raise ValueError(f"a run folder needs a course, a part and a name (got {course!r}, {part!r}, {name!r})")
    return OUTPUTS / course / part / (quick_name(name) if quick else name)


def run_dir(course: str, part: str, name: str, out_dir: str | os.PathLike | None = None,
            quick: bool = False) -> Path:
    """:func:`run_path`, created."""
    path = run_path(course, part, name, out_dir, quick)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _below_outputs(folder: Path) -> tuple[str, ...] | None:
    try:
        return Path(folder).resolve().relative_to(OUTPUTS.resolve()).parts
    except ValueError:
        return None


def quick_folder(folder: Path, quick: bool, out_dir=None) -> Path:
    """``folder`` for a quick run that did not come through :func:`run_path` (a guard in
    ``common.training.Run``): under ``outputs/``, when no part of its path below ``outputs/`` is a
    quick name yet, the run folder (``outputs/<course>/<part>/<run>``) becomes ``<run>_quick`` and
    what lies below it is kept. Full runs, ``--out-dir`` and folders elsewhere are taken as given."""
    folder = Path(folder)
    parts = _below_outputs(folder) if quick and not out_dir else None
    if not parts or any(is_quick_name(p) for p in parts):
        return folder
    level = min(3, len(parts))  # the run folder's own name, or the leaf of a shallower path
    below = parts[level:]
    head = folder
    for _ in below:
        head = head.parent
    head = head.with_name(quick_name(head.name))
    return head.joinpath(*below) if below else head


def quick_twin(folder: Path) -> Path:
    """The quick run that stands beside the full run ``folder`` (``.../gan`` -> ``.../gan_quick``)."""
    folder = Path(folder)
    return folder.with_name(quick_name(folder.name))


def run_identity(folder: Path) -> dict | None:
    """``{"course", "part", "run", "quick"}`` of a run folder ``outputs/<course>/<part>/<run>[_quick]``
    (or a folder below one), read from its path; None for a folder elsewhere (``--out-dir``)."""
    parts = _below_outputs(folder)
    if not parts or len(parts) < 3:
        return None
    course, part, run = parts[:3]
    return {"course": course, "part": part, "run": full_name(run), "quick": is_quick_name(run)}


def shown(path: str | os.PathLike) -> Path:
    """``path`` as a message or a page shows it: relative to the repository when it lies inside it,
    ``$HW_DATA_ROOT/...`` inside a data folder given that way, else as given (no home folder in a
    report)."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(ROOT):
        return resolved.relative_to(ROOT)
    env = os.environ.get("HW_DATA_ROOT")
    if env and resolved.is_relative_to(Path(env).expanduser().resolve()):
        return Path("$HW_DATA_ROOT") / resolved.relative_to(Path(env).expanduser().resolve())
    return Path(path)


def skeleton_imgs_dir(course_dir: Path, run_folder: Path, cfg) -> Path:
    """Where a script writes the figures its skeleton names, created: ``<course>/imgs/`` for a full
    run; the run folder's ``imgs/`` with ``--out-dir`` or in quick mode, so that tests and smoke runs
    never overwrite a student's figures."""
    path = (run_folder if cfg.out_dir or cfg.quick else Path(course_dir)) / "imgs"
    path.mkdir(parents=True, exist_ok=True)
    return path
