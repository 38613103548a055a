"""The courses of this repository, read from the manifest ``course.toml`` in each course folder,
so that ``common`` names no course: deliverables, reports, the gallery and the benchmarks look a
course up here, and a new course touches its own folder (and the Makefile's targets) only.

A manifest (every key but ``key`` and ``title`` optional):

    key = "ee8520"                 # the short name: make report-<key>, python -m common.report <key>
    title = "EE 8520 HW2: GAN, PixelCNN, VAE"
    outputs = "ee8520"             # its folder under outputs/ (default: the course folder's name)
    zip = "{name}_EE8520_F25"      # the code zip's name the handout asks for ({name}: the student's)
    report = "report.md"           # the report's Markdown source, in the course folder

    [[bench]]                      # a speed benchmark that `make bench` runs from the course folder
    script = "bench_training.py"
    targets = { "pixelcnn training" = 2.5 }   # the speedup each of its summary lines should reach

``python -m common.courses figures [--quick]`` lists, per course, each run folder under
``outputs/`` and how many PNGs it holds (``make demo`` ends with it).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from .paths import OUTPUTS, ROOT, shown

MANIFEST = "course.toml"


@dataclass(frozen=True)
class Bench:
    script: str
    targets: dict[str, float]  # summary-line name -> the speedup it should reach


@dataclass(frozen=True)
class Course:
    folder: str  # the course folder, relative to the repository root
    key: str
    title: str
    outputs: str
    zip: str | None = None
    report: str | None = None
    benches: tuple[Bench, ...] = ()

    @property
    def path(self) -> Path:
        return ROOT / self.folder


def _read(manifest: Path) -> Course:
    data = tomllib.loads(manifest.read_text())
    folder = manifest.parent.name
    return Course(folder=folder, key=data["key"], title=data["title"], outputs=data.get("outputs", folder),
                  zip=data.get("zip"), report=data.get("report"),
                  benches=tuple(Bench(b["script"], {k: float(v) for k, v in b["targets"].items()})
                                for b in data.get("bench", [])))


def courses() -> list[Course]:
    """Every course folder with a manifest, in the order of their folder names."""
    return [_read(m) for m in sorted(ROOT.glob(f"*/{MANIFEST}"))]


def find(name: str) -> Course:
    """The course whose key or folder is ``name``; SystemExit (one line) naming the choices otherwise."""
    for c in courses():
        if name in (c.key, c.folder):
            return c
    raise SystemExit(f"error: no course {name!r}; choose from {', '.join(c.key for c in courses())}")


def _count(items, noun: str) -> str:
    n = sum(1 for _ in items)
    return f"{n} {noun}{'' if n == 1 else 's'}"


def figures(quick: bool = False, outputs: Path | None = None) -> list[str]:
    """Lines that say where the figures went: per folder of ``outputs/`` (titled from the course
    manifests; other folders, such as the notebooks', by name), each run folder
    (``outputs/<course>/<part>/<run>``) that is a quick one (its name ends in ``quick``) or, with
    ``quick=False``, a full one, and the number of PNGs under it."""
    outputs = Path(outputs) if outputs else OUTPUTS
    titles = {c.outputs: c.title for c in courses()}
    lines = []
    if not outputs.is_dir():
        return lines
    tops = sorted((d for d in outputs.iterdir() if d.is_dir()), key=lambda d: (d.name not in titles, d.name))
    for top in tops:
        runs = [r for part in sorted(top.iterdir()) if part.is_dir() for r in sorted(part.iterdir())
                if r.is_dir() and r.name.endswith("quick") == quick]
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
