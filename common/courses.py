"""The courses of this repository, read from the manifest ``course.toml`` in each course folder,
so that ``common`` names no course: deliverables, reports, the gallery and the benchmarks look a
course up here, and a new course touches its own folder (and the Makefile's targets) only.

A manifest (every key but ``key`` and ``title`` optional):

    key = "ee8520"                 # the short name: make report-<key>, python -m common.report <key>
    title = "EE 8520 HW2: GAN, PixelCNN, VAE"
    command = "make ee8520"        # for the README's table of courses: the command that makes every part,
    makes = "MLP GAN, ..."         # what it makes,
    upload = "report and zip"      # and what a student submits
    zip = "{name}_EE8520_F25"      # the code zip's name the handout asks for ({name}: the student's)
    report = "report.md"           # the report's Markdown source, in the course folder
    parts = { step1 = "Step 1: MLP GAN" }   # a title per part (its folder under outputs/<course folder>/)

    [[bench]]                      # a speed benchmark that `make bench` runs from the course folder
    script = "bench_training.py"
    targets = { "pixelcnn training" = 2.5 }   # the speedup each of its summary lines should reach

    [[run]]                        # the gallery's view of a kind of run, in the order its card prefers them
    path = "step1/gan"             # <part>/<run name> ("*": every run of the part)
    figure = "generated_images.png"          # its best figure, shown first

(A run's headline numbers, with their labels and units, are named by its script: ``HEADLINE``,
written into its ``summary.json`` by ``common.summary.write_summary``.)

Every course's runs live in ``outputs/<course folder>/<part>/<run>/`` (``common.paths.run_path``).
``python -m common.courses figures [--quick]`` lists, per course, each run folder under
``outputs/`` and how many PNGs it holds (``make demo`` ends with it).
"""
from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .paths import OUTPUTS, ROOT, is_quick_name, shown

MANIFEST = "course.toml"


@dataclass(frozen=True)
class Bench:
    script: str
    targets: dict[str, float]  # summary-line name -> the speedup it should reach


@dataclass(frozen=True)
class RunKind:
    """What the gallery shows first of the runs whose ``<part>/<run>`` match ``path``."""
    path: str
    figure: str | None = None


@dataclass(frozen=True)
class Course:
    folder: str  # the course folder, relative to the repository root; also its folder under outputs/
    key: str
    title: str
    zip: str | None = None
    report: str | None = None
    benches: tuple[Bench, ...] = ()
    parts: tuple[tuple[str, str], ...] = ()  # (part folder, title), in the manifest's order
    runs: tuple[RunKind, ...] = ()
    command: str = ""  # the make target that runs every part, for the README
    makes: str = ""  # what the course's runs make, in a few words
    upload: str = ""  # what a student submits

    @property
    def path(self) -> Path:
        return ROOT / self.folder

    @property
    def outputs(self) -> str:
        """Its folder under ``outputs/``: the course folder's own name."""
        return self.folder

    def part_title(self, part: str) -> str:
        return dict(self.parts).get(part, part)

    def run_kind(self, part: str, run: str) -> RunKind | None:
        """The first ``[[run]]`` entry whose path matches ``<part>/<run>`` (a quick run's name without ``_quick``)."""
        return next((k for k in self.runs if fnmatch.fnmatchcase(f"{part}/{run}", k.path)), None)


def _read(manifest: Path) -> Course:
    data = tomllib.loads(manifest.read_text())
    folder = manifest.parent.name
    runs = tuple(RunKind(r["path"], r.get("figure")) for r in data.get("run", []))
    return Course(folder=folder, key=data["key"], title=data["title"], zip=data.get("zip"), report=data.get("report"),
                  benches=tuple(Bench(b["script"], {k: float(v) for k, v in b["targets"].items()})
                                for b in data.get("bench", [])),
                  parts=tuple(data.get("parts", {}).items()), runs=runs, command=data.get("command", ""),
                  makes=data.get("makes", ""), upload=data.get("upload", ""))


def courses() -> list[Course]:
    """Every course folder with a manifest, in the order of their folder names."""
    return [_read(m) for m in sorted(ROOT.glob(f"*/{MANIFEST}"))]


def find(name: str) -> Course:
    """The course whose key or folder is ``name``; SystemExit (one line) naming the choices otherwise."""
    for c in courses():
        if name in (c.key, c.folder):
            return c
    raise SystemExit(f"error: no course {name!r}; choose from {', '.join(c.key for c in courses())}")


def lookup(name: str) -> Course | None:
    """The course whose key or folder is ``name``, else None."""
    return next((c for c in courses() if name in (c.key, c.folder)), None)


def _count(items, noun: str) -> str:
    n = sum(1 for _ in items)
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run_folders(top: Path, quick: bool | None = None) -> list[Path]:
    """The run folders ``<top>/<part>/<run>/`` of one folder of ``outputs/`` (a course's, or the
    notebooks'), by name; with ``quick`` True (False), only those named as quick (full) runs are
    (:func:`common.paths.quick_name`)."""
    top = Path(top)
    if not top.is_dir():
        return []
    return [r for part in sorted(top.iterdir()) if part.is_dir() for r in sorted(part.iterdir())
            if r.is_dir() and (quick is None or is_quick_name(r.name) == quick)]


def output_folders(outputs: Path | None = None) -> list[Path]:
    """The folders of ``outputs/``: the courses' first, in the order of their folder names, then the others."""
    outputs = Path(outputs) if outputs else OUTPUTS
    if not outputs.is_dir():
        return []
    known = {c.folder for c in courses()}
    return sorted((d for d in outputs.iterdir() if d.is_dir()), key=lambda d: (d.name not in known, d.name))


def figures(quick: bool = False, outputs: Path | None = None) -> list[str]:
    """Lines that say where the figures went: per folder of ``outputs/`` (titled from the course
    manifests; other folders, such as the notebooks', by name), each run folder
    (``outputs/<course>/<part>/<run>``) that is a quick one (its name ends in ``_quick``) or, with
    ``quick=False``, a full one, and the number of PNGs under it."""
    titles = {c.folder: c.title for c in courses()}
    lines = []
    for top in output_folders(outputs):
        runs = run_folders(top, quick)
        if runs:
            lines.append(f"{titles.get(top.name, top.name)}:")
            lines += [f"  {shown(r)}/  ({_count(r.rglob('*.png'), 'PNG')})" for r in runs]
    return lines


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="What the course manifests say, and where their runs went.")
    sub = parser.add_subparsers(dest="command", required=True)
    fig = sub.add_parser("figures", help="each run folder under outputs/ and how many PNGs it holds")
    fig.add_argument("--quick", action="store_true", help="the quick runs' folders (default: the full runs')")
    args = parser.parse_args()
    kind = "quick " if args.quick else ""
    print("\n".join(figures(quick=args.quick)) or f"no {kind}run folders under {shown(OUTPUTS)}/ yet")
