"""The runs a course report reads, and its placeholders filled from them (the format: ``common.report``).

The header block of ``report.md`` names each run; ``resolve_run`` finds its folder under
``outputs/<course>/`` (the full run, else its ``_quick`` twin; for ``name/*``, the newest full
run, else the newest quick one) and
``fill`` replaces each ``{{ ... }}`` of the body by a value of its metrics.json or config.json, a
table, a figure or a text, or by a visible "(not yet run: make <target>)" when it is missing.
``common.gallery`` reads run folders with the same helpers.
"""
from __future__ import annotations

import base64
import csv
import html as _html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .paths import is_quick_name, quick_twin

PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.S)
VALUE = re.compile(r"^(?P<ref>[\w\-./]+?)\.(?P<file>metrics|config)\.(?P<key>[^:{}]+?)(?::(?P<fmt>[^:{}]*))?$")
RUN_MARKERS = ("metrics.json", "config.json")


# --------------------------------------------------------------------------------------------
# The header block and the runs


@dataclass
class RunRef:
    alias: str
    spec: str  # path under outputs/<course>/
    target: str  # "make ..." that produces it
    folder: Path | None = None  # resolved run folder, None when missing

    @property
    def quick(self) -> bool:
        return self.folder is not None and is_quick_run(self.folder)


@dataclass
class Source:
    meta: dict
    runs: dict[str, RunRef]
    body: str
    path: Path
    figures: int = 0
    used: set = field(default_factory=set)


def parse_source(path: Path) -> Source:
    text = Path(path).read_text()
    meta, runs, body = {}, {}, text
    m = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if m:
        body = text[m.end():]
        for line in m.group(1).splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key.startswith("run "):
                spec, _, target = value.partition("|")
                alias = key[4:].strip()
                runs[alias] = RunRef(alias, spec.strip().rstrip("/"), target.strip() or "make")
            else:
                meta[key] = value
    return Source(meta, runs, body, Path(path))


def is_run_folder(path: Path) -> bool:
    return any((path / f).is_file() for f in RUN_MARKERS)


def is_quick_run(folder: Path) -> bool:
    """Made by a --quick run: named so (``<run>_quick``, :func:`common.paths.run_path`), or
    "quick": true in its config.json or metrics.json (for a study folder without them, in any of
    its sub-runs' config.json)."""
    if is_quick_name(Path(folder).name):
        return True
    if is_run_folder(folder):
        return any(_read_json(folder / f).get("quick") is True for f in RUN_MARKERS)
    return any(_read_json(c / "config.json").get("quick") is True for c in folder.iterdir() if c.is_dir())


def _stamp(path: Path) -> float:
    files = [path / f for f in RUN_MARKERS if (path / f).is_file()] or [p for p in path.iterdir() if p.is_file()]
    return max((f.stat().st_mtime for f in files), default=path.stat().st_mtime)


def resolve_run(base: Path, newest: bool = False) -> Path | None:
    """The run folder ``base``, else the quick run beside it (``<base>_quick``,
    :func:`common.paths.quick_twin`), else None; with ``newest``, the newest run folder inside
    ``base`` (one with metrics.json or config.json, by that file's time; the quick runs of a part
    are its ``<run>_quick`` folders), full runs before quick ones (a smoke run after the real one
    must not replace it in the report), else None."""
    if not newest:
        return next((f for f in (base, quick_twin(base)) if f.is_dir()), None)
    if not base.is_dir():
        return None
    children = [c for c in base.iterdir() if c.is_dir() and is_run_folder(c)]
    return max(children, key=lambda c: (not is_quick_run(c), _stamp(c))) if children else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------------------------
# Filling the placeholders


def missing(target: str, what: str = "") -> str:
    hint = f" ({_html.escape(what)})" if what else ""
    return f'<span class="missing">(not yet run: {_html.escape(target)}){hint}</span>'


def fmt_value(v, spec: str | None = None) -> str:
    if isinstance(v, float) and v == 0:
        v = 0.0  # no "-0.000"
    if spec:
        try:
            return format(v, spec)
        except (TypeError, ValueError):
            pass
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return _html.escape(json.dumps(v))
    return _html.escape(str(v))


def _lookup(obj, dotted: str):
    for part in dotted.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise KeyError(dotted)
    return obj


def _split_ref(src: Source, ref: str) -> tuple[RunRef | None, Path | None, str]:
    """``alias/sub/path`` -> (its run, the path inside the run folder (None if the run is missing), the rest)."""
    alias, _, rest = ref.strip().partition("/")
    run = src.runs.get(alias)
    if run is None:
        raise ValueError(f"{src.path}: unknown run {alias!r} in a placeholder; declare it in the header as `run {alias}: ...`")
    src.used.add(alias)
    return run, locate(run.folder, rest), rest


def locate(folder: Path | None, rest: str) -> Path | None:
    """``folder / rest``; when ``rest`` starts in a run folder of ``folder`` (a part) that has only
    a quick run, in that quick run (``exp/nz10/x`` -> ``.../nz10_quick/x``). None without ``folder``."""
    if folder is None or not rest:
        return folder
    first, _, below = rest.partition("/")
    path = folder / first
    if not path.exists() and quick_twin(path).is_dir():
        path = quick_twin(path)
    return path / below if below else path


def read_table(stem: Path) -> tuple[str, list[str], list[list[str]]] | None:
    """(title, columns, rows) of ``stem.csv`` (title from ``stem.md``'s heading), else of ``stem.md``."""
    stem = stem.with_suffix("") if stem.suffix in (".md", ".csv") else stem
    md, csv_path = stem.with_suffix(".md"), stem.with_suffix(".csv")
    title = ""
    if md.is_file():
        first = md.read_text().lstrip().splitlines()[:1]
        if first and first[0].startswith("#"):
            title = first[0].lstrip("#").strip()
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f))
        if rows:
            return title, rows[0], rows[1:]
    if md.is_file():
        lines = [ln.strip() for ln in md.read_text().splitlines() if ln.strip().startswith("|")]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        cells = [c for c in cells if not all(re.fullmatch(r":?-+:?", x) for x in c)]
        if cells:
            return title, cells[0], cells[1:]
    return None


WIDE_TABLE_COLUMNS = 10  # more columns than this: a smaller font, so the table fits the page width


def _num_cell(text: str, wrap: bool = True) -> str:
    """A ``<td>``: numbers to 4 significant digits, right-aligned; text left-aligned (may wrap if ``wrap``)."""
    try:
        v = float(text)
    except ValueError:
        return f'<td class="t">{_breakable(text)}</td>' if wrap else f'<td class="t nowrap">{_html.escape(text)}</td>'
    if text.strip().lstrip("-").isdigit():
        return f"<td>{text.strip()}</td>"
    return f"<td>{v:.4g}</td>"


def _breakable(text: str) -> str:
    """Escaped text that may wrap after ``_`` or ``/`` (run names, hidden sizes), so wide tables fit the page."""
    return _html.escape(text).replace("_", "_<wbr>").replace("/", "/<wbr>")


def table_html(title: str, columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_breakable(c)}</th>" for c in columns)
    # the first column names the row: kept on one line
    body = "".join("<tr>" + "".join(_num_cell(c, wrap=i > 0) for i, c in enumerate(r)) + "</tr>" for r in rows)
    cap = f"<caption>{_html.escape(title)}</caption>" if title else ""
    wide = " wide" if len(columns) > WIDE_TABLE_COLUMNS else ""
    return f'<table class="results{wide}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def image_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def fill(src: Source, name: str) -> str:
    """The body with every placeholder replaced by HTML or text."""

    def one(m: re.Match) -> str:
        inner = m.group(1).strip()
        kind, sep, arg = inner.partition(":")
        kind = kind.strip()
        if inner == "name":
            return _html.escape(name)
        if sep and kind == "figure":
            parts = [p.strip() for p in arg.split("|")]
            run, path, rest = _split_ref(src, parts[0])
            caption = parts[1] if len(parts) > 1 else Path(rest).stem.replace("_", " ")
            width = parts[2] if len(parts) > 2 else "80%"
            src.figures += 1
            label = f"Figure {src.figures}."
            if path is None or not path.is_file():
                body = f'<div class="missing-figure">{missing(run.target, rest)}</div>'
            else:
                body = f'<img src="{image_data_uri(path)}" style="width:{_html.escape(width)}" alt="{_html.escape(caption)}">'
            return f'\n\n<figure>{body}<figcaption><b>{label}</b> {caption}</figcaption></figure>\n\n'
        if sep and kind == "table":
            run, path, rest = _split_ref(src, arg)
            table = read_table(path) if path is not None else None
            if table is None:
                return f"\n\n<p>{missing(run.target, rest + ' table')}</p>\n\n"
            return "\n\n" + table_html(*table) + "\n\n"
        if sep and kind in ("text", "markdown"):
            run, path, rest = _split_ref(src, arg)
            if path is None or not path.is_file():
                return missing(run.target, rest)
            text = path.read_text().strip()
            if kind == "text":
                return _html.escape(text)
            lines = text.splitlines()
            if lines and lines[0].startswith("#"):  # the file's own title: the report has its headings
                lines = lines[1:]
            return "\n\n" + "\n".join(lines).strip() + "\n\n"
        v = VALUE.match(inner)
        if v is None:
            raise ValueError(f"{src.path}: cannot read the placeholder {{{{ {inner} }}}}")
        run, folder, rest = _split_ref(src, v["ref"])
        if folder is None:
            return missing(run.target)
        try:
            value = _lookup(_read_json(folder / f"{v['file']}.json"), v["key"])
        except KeyError:
            return missing(run.target, f"no {v['key']} in {(rest + '/') if rest else ''}{v['file']}.json")
        return fmt_value(value, v["fmt"])

    return PLACEHOLDER.sub(one, src.body)


def references(path: Path) -> dict:
    """What a report source reads, by kind: {"values": [(ref, file, key, fmt)], "figures": [ref],
    "tables": [ref], "texts": [ref], "markdowns": [ref], "runs": {alias: spec}} (the tests build fake runs from it)."""
    src = parse_source(path)
    out = {"values": [], "figures": [], "tables": [], "texts": [], "markdowns": [], "runs": {a: r.spec for a, r in src.runs.items()}}
    for m in PLACEHOLDER.finditer(src.body):
        inner = m.group(1).strip()
        kind, sep, arg = inner.partition(":")
        if sep and kind.strip() in ("figure", "table", "text", "markdown"):
            out[kind.strip() + "s"].append(arg.split("|")[0].strip())
        elif (v := VALUE.match(inner)) is not None:
            out["values"].append((v["ref"], v["file"], v["key"], v["fmt"]))
    return out
