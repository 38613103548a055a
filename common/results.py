"""Results on record: a one-line summary of every finished run, the committed ``results/`` files
that keep the chosen ones, and the README tables made from them.

    python -m common.results add outputs/ee8520_hw2/step1/gan ...   # copy runs' summaries into results/
    python -m common.results tables                                 # rewrite the README tables (make results)
    python -m common.results tables --check                         # exit 1 when a README table is stale

Every script ends a run with :func:`common.summary.write_summary`: ``summary.json`` in the run
folder, one JSON object on one line (the course, part and run, date, git commit, machine, threads,
precision, epochs, training and wall time, and the headline numbers the script names with human
labels and units). A quick run writes one too (``"quick": true``), so the smoke tests run the
same code; only full runs go on record.

``add`` appends the summaries to ``results/<course folder>.jsonl`` (one line per run; a run that
has no summary.json, measured before summaries existed, is summarized from its files, without
headline numbers: write its summary.json first with the script's ``HEADLINE``). A
record whose numbers were typed into a README before this record existed has ``"status": "not yet
re-run"`` (and what the README said of it in ``note``); a measured record of the same run on the
same kind of device replaces it.

A README holds a generated table between two markers; ``tables`` rewrites what lies between them:

    <!-- results:ee8520_hw2 -->        every record of a course (its folder or key; ``ee8520_hw2/step2``: one part)
    <!-- /results -->
    <!-- results:overview -->          one row per run on record: its headline, its time on a CPU and on a GPU
    <!-- /results -->
    <!-- results:bench -->             the last ``make bench`` on record (results/bench.md)
    <!-- /results -->
    <!-- results:zip:ee8520_hw2 -->    the files of a course's code zip and their line counts
    <!-- /results -->
    <!-- results:courses -->           one row per course: its command, what it makes, its upload (course.toml),
    <!-- /results -->                  and per part the newest run's time on a CPU and on a GPU and its first headline
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from . import courses as _courses
from .paths import ROOT, shown
from .summary import SUMMARY, _number, _read_json, summarize

RESULTS = ROOT / "results"
NOT_RERUN = "not yet re-run"
MARKER = re.compile(r"(<!-- results:(?P<key>[\w\-./:]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


# --------------------------------------------------------------------------------------------
# The record: results/<course folder>.jsonl


def _course_file(course: str) -> Path:
    return RESULTS / f"{course}.jsonl"


def load(course: str | None = None) -> list[dict]:
    """The records of one course (its folder), or of every course."""
    files = [_course_file(course)] if course else sorted(RESULTS.glob("*.jsonl"))
    return [json.loads(line) for f in files if f.is_file() for line in f.read_text().splitlines() if line.strip()]


def _same_run(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("course", "part", "run"))


def _order(course: str):
    c = _courses.lookup(course)
    parts = [p for p, _ in c.parts] if c else []
    return lambda r: (parts.index(r["part"]) if r.get("part") in parts else len(parts), r.get("part") or "",
                      r.get("run") or "", r.get("date") or "")


def save(records: list[dict]) -> list[Path]:
    """Write each course's records to its file, in the manifest's order of parts, then by run and date."""
    written = []
    for course in sorted({r["course"] for r in records}):
        mine = sorted((r for r in records if r["course"] == course), key=_order(course))
        path = _course_file(course)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mine))
        written.append(path)
    return written


def add(folders: list[Path], machine_name: str | None = None) -> list[dict]:
    """Put the runs in ``folders`` on record: their summary.json (or, for a run measured before
    summaries existed, a summary of its files, without headline numbers); its run's records "not
    yet re-run" on the same kind of device (CPU, CUDA) are replaced, and so is an earlier copy of
    the same summary. Raises ValueError (one line) for a quick run, a folder that holds no
    finished run, or one outside ``outputs/<course>/<part>/``."""
    added = []
    for folder in map(Path, folders):
        if not (folder / SUMMARY).is_file() and not (folder / "metrics.json").is_file():
            raise ValueError(f"{shown(folder)} holds no {SUMMARY} or metrics.json: not a finished run")
        record = _read_json(folder / SUMMARY) or summarize(folder, in_process=False)
        if record.get("quick"):
            raise ValueError(f"{shown(folder)} is a quick run; only full runs go on record")
        if not record.get("course") or _courses.lookup(record["course"]) is None:
            raise ValueError(f"{shown(folder)} is not a run folder outputs/<course folder>/<part>/<run>/ of a course")
        if machine_name:
            record["machine"] = machine_name
        added.append(record)
    records = load()
    for new in added:  # it replaces its run's records not yet re-run on the same kind of device, and itself
        records = [r for r in records if not (_same_run(r, new) and (
            (r.get("status") == NOT_RERUN and r.get("device") == new.get("device")) or r.get("date") == new.get("date")))]
        records.append(new)
    save(records)
    return added


# --------------------------------------------------------------------------------------------
# README tables


def duration(seconds) -> str:
    """``5400`` -> ``1.5 h``; ``95`` -> ``1.6 min``; ``12`` -> ``12 s``."""
    s = _number(seconds)
    if s is None:
        return ""
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 90:
        return f"{s / 60:.0f} min"
    return f"{s:.0f} s"


def number_text(h: dict) -> str:
    """One headline number as a sentence fragment: ``8.29 (floor 0.52)``."""
    return h["text"] + (f" (floor {h['floor_text']})" if h.get("floor_text") else "")


def _headline_text(r: dict) -> str:
    return "; ".join(f"{h['label']} {number_text(h)}" for h in r.get("headline", [])) or "n/a"


def _machine_text(r: dict) -> str:
    threads = r.get("threads")
    t = f", {threads} thread{'s' if threads != 1 else ''}" if isinstance(threads, int) and r.get("device") == "cpu" else ""
    return f"{r.get('machine') or 'not recorded'}{t}"


def _time_text(r: dict) -> str:
    t = duration(r.get("train_seconds"))
    epochs = r.get("epochs")
    runs = r.get("runs") or 1
    per = (f" ({duration(r['train_seconds'] / epochs)} an epoch)"
           if t and isinstance(epochs, int) and epochs > 1 and runs == 1 else f" ({runs} runs)" if t and runs > 1 else "")
    return (t + per) or duration(r.get("wall_seconds")) or "not recorded"


def _when_text(r: dict) -> str:
    note = f" ({r['note']})" if r.get("note") else ""
    if r.get("status") == NOT_RERUN:
        return NOT_RERUN + (f", numbers of {r['date'][:10]}" if r.get("date") else "") + note
    return " ".join(x for x in (str(r.get("date", ""))[:10], f"`{r['commit']}`" if r.get("commit") else "") if x) + note


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def course_table(key: str) -> str:
    """Every record of a course (``key``: its folder or key, ``<course>/<part>`` for one part)."""
    name, _, part = key.partition("/")
    course = _courses.lookup(name)
    if course is None:
        raise ValueError(f"no course {name!r} for a results table")
    records = [r for r in sorted(load(course.folder), key=_order(course.folder)) if not part or r.get("part") == part]
    if not records:
        return "No full run on record yet.\n"
    rows = [[course.part_title(r["part"]), r["run"], _headline_text(r), str(r.get("epochs") or ""), _time_text(r),
             _machine_text(r), str(r.get("precision") or ""), _when_text(r)] for r in records]
    return _md_table(["part", "run", "headline numbers", "epochs", "training time", "machine", "precision",
                      "measured"], rows)


def overview_table() -> str:
    """One row per run on record: its headline (the newest record's) and its training time on a
    CPU and on a GPU (the newest record of each)."""
    rows = []
    for course in _courses.courses():
        records = sorted(load(course.folder), key=_order(course.folder))
        runs = list(dict.fromkeys((r["part"], r["run"]) for r in records))
        for part, run in runs:
            mine = [r for r in records if (r["part"], r["run"]) == (part, run)]
            newest = mine[-1]
            on = {dev: next((r for r in reversed(mine) if (r.get("device") == "cuda") == (dev == "gpu")), None)
                  for dev in ("cpu", "gpu")}

            def when(r):
                if r is None:
                    return ""
                note = f" ({NOT_RERUN})" if r.get("status") == NOT_RERUN else ""
                return f"{_time_text(r)}, {_machine_text(r)}{note}"

            rows.append([course.title.split(":")[0], f"{course.part_title(part)} ({run})", _headline_text(newest),
                         when(on["cpu"]), when(on["gpu"])])
    if not rows:
        return "No full run on record yet.\n"
    return _md_table(["course", "part (run)", "headline numbers", "full run on a CPU", "full run on a GPU"], rows)


def _main_records(course, records: list[dict], part: str) -> list[dict]:
    """A part's records of its main run (the run named in course.toml's [[run]] paths, or
    "default"), or all of the part's records when it has none."""
    main = {k.path.split("/", 1)[1] for k in course.runs if k.path.startswith(f"{part}/")} | {"default"}
    mine = [r for r in records if r.get("part") == part]
    return [r for r in mine if r.get("run") in main] or mine


def _newest(records: list[dict]) -> dict | None:
    """The newest record, a measured one before any typed-in one."""
    measured = [r for r in records if r.get("status") != NOT_RERUN]
    return (measured or records or [None])[-1]


def courses_table() -> str:
    """One row per course: ``command``, ``makes`` and ``upload`` from its course.toml, then per part
    (``parts``' order) its main run's newest record (a measured one before any typed-in one): its
    training time on a CPU and on a GPU and its first headline number; a number of a run not yet re-run
    since it was typed into a README is marked with *."""
    rows = []
    for course in _courses.courses():
        records = sorted(load(course.folder), key=_order(course.folder))
        times = {"cpu": [], "gpu": []}
        headlines = []
        for part, title in course.parts:
            mine = _main_records(course, records, part)
            label = title.split(":")[0]
            for dev in times:
                r = _newest([r for r in mine if (r.get("device") == "cuda") == (dev == "gpu")])
                if r is not None and (r.get("train_seconds") or r.get("wall_seconds")):
                    star = "*" if r.get("status") == NOT_RERUN else ""
                    times[dev].append(f"{label} {duration(r.get('train_seconds') or r.get('wall_seconds'))}{star}")
            r = _newest(mine)
            if r is not None and r.get("headline"):
                h = r["headline"][0]
                star = "*" if r.get("status") == NOT_RERUN else ""
                headlines.append(f"{label}: {h['label']} {number_text(h)}{star}")
        rows.append([course.title.split(":")[0], f"`{course.command}`" if course.command else "", course.makes,
                     course.upload, "; ".join(times["cpu"]), "; ".join(times["gpu"]), "; ".join(headlines)])
    return _md_table(["course", "command", "what it makes", "upload", "full run, 2-core CPU", "full run, GPU",
                      "headline"], rows)


def times_list(course_key: str) -> str:
    """A Markdown list, one item per part of a course: its main run's training time on a CPU and on
    a GPU, from the newest record of each (a measured one before any typed-in one). For a zip's
    README, so a grader knows what a full run costs."""
    course = _courses.lookup(course_key)
    if course is None:
        raise ValueError(f"no course {course_key!r}")
    records = sorted(load(course.folder), key=_order(course.folder))
    items = []
    for part, title in course.parts:
        mine = _main_records(course, records, part)
        said = []
        for gpu in (False, True):
            r = _newest([r for r in mine if (r.get("device") == "cuda") == gpu
                         and (r.get("train_seconds") or r.get("wall_seconds"))])
            if r is None:
                said.append(f"{'GPU' if gpu else 'CPU'} not measured")
                continue
            what = ", ".join(x for x in (r.get("precision"), f"{r['epochs']} epochs" if r.get("epochs") else "",
                                         f"{r['runs']} runs" if (r.get("runs") or 1) > 1 else "") if x)
            when = f", {r['date'][:10]}" if r.get("date") else ""
            said.append(f"{'GPU' if gpu else 'CPU'} {duration(r.get('train_seconds') or r.get('wall_seconds'))} "
                        f"({_machine_text(r)}; {what}{when})")
        items.append(f"- {title}: " + "; ".join(said))
    return "\n".join(items) + "\n"


def bench_table() -> str:
    """The last recorded ``make bench`` (``results/bench.md``, written by ``python -m common.bench all --record``)."""
    path = RESULTS / "bench.md"
    if not path.is_file():
        return "No benchmark on record yet: `make bench` writes one.\n"
    return "\n".join(line for line in path.read_text().splitlines() if not line.startswith("# ")).strip() + "\n"


def zip_table(course: str) -> str:
    """The files of a course's code zip, their line counts and first docstring lines, as its build
    makes them (``common.zips``)."""
    from . import zips  # the zip builder reads every module of the course: only when a README asks

    info = _courses.lookup(course)
    if info is None or not info.zip:
        raise ValueError(f"no course with a zip: {course!r}")
    return zips.file_table(zips.zip_contents(info))


def table(key: str) -> str:
    if key.startswith("zip:"):
        return zip_table(key[4:])
    if key == "courses":
        return courses_table()
    if key == "bench":
        return bench_table()
    return overview_table() if key == "overview" else course_table(key)


def render(text: str) -> str:
    """``text`` with every results table between its markers regenerated."""
    return MARKER.sub(lambda m: m.group(1) + "\n" + table(m["key"]) + "\n" + m.group(4), text)


def readmes() -> list[Path]:
    """The READMEs that may hold results tables: the root's and each course's."""
    return [p for p in [ROOT / "README.md", *(c.path / "README.md" for c in _courses.courses())] if p.is_file()]


def stale(paths: list[Path] | None = None) -> list[Path]:
    """The READMEs whose results tables differ from what ``results/`` gives now."""
    return [p for p in (paths or readmes()) if render(p.read_text()) != p.read_text()]


def write_tables(paths: list[Path] | None = None) -> list[Path]:
    changed = stale(paths)
    for p in changed:
        p.write_text(render(p.read_text()))
    return changed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Results on record: results/ and the README tables made from it.")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="copy the summaries of full runs into results/<course folder>.jsonl")
    a.add_argument("folders", nargs="+", help="run folders: outputs/<course folder>/<part>/<run>")
    a.add_argument("--machine", default=None, help="the machine's name, for a run entered after the fact")
    t = sub.add_parser("tables", help="rewrite the results tables of the READMEs between their markers")
    t.add_argument("--check", action="store_true", help="only say which READMEs are stale (exit 1 if any)")
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            for r in add(args.folders, args.machine):
                print(f"on record: {r['course']}/{r['part']}/{r['run']} ({r['date']}): {_headline_text(r)}")
            changed = write_tables()
            print(f"rewrote the results tables of {', '.join(str(shown(p)) for p in changed)}" if changed
                  else "no README holds a table of these runs")
            return
        if args.check:
            old = stale()
            if old:
                print("stale results tables in " + ", ".join(str(shown(p)) for p in old)
                      + ": run python -m common.results tables", file=sys.stderr)
                sys.exit(1)
            print("every README results table is current")
            return
        changed = write_tables()
        print("rewrote " + ", ".join(str(shown(p)) for p in changed) if changed else "every README results table is current")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
