"""The runs a course report reads, and its placeholders filled from them (the format: ``common.report``).

The header block of ``report.md`` names each run; ``resolve_run`` finds its folder under
``outputs/<course>/`` (the full run, else its ``_quick`` twin; for ``name/*``, the newest full
run, else the newest quick one) and
``fill`` decides each verdict (``{% if %}`` blocks, their expressions in ``common.verdicts``) and
replaces each ``{{ ... }}`` of the body by a value of its metrics.json or config.json, a computed
value, a table, a figure or a text, or by a visible "(not yet run: make <target>)" when it is
missing. ``common.gallery`` reads run folders with the same helpers.
"""
from __future__ import annotations

import base64
import csv
import fnmatch
import html as _html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .paths import is_quick_name, quick_twin
from .verdicts import Missing, Node, evaluate, read_keys

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
    tables: int = 0
    used: set = field(default_factory=set)
    verdicts: list = field(default_factory=list)  # (conditions, chosen branch) of each {% if %} block
    variables: dict = field(default_factory=dict)  # {% set name = ... %}


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
    if isinstance(v, list):  # [11, 16] -> "11 and 16"
        from .verdicts import join
        return join([fmt_value(x, spec) for x in v])
    if isinstance(v, dict):
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


def _breakable(text: str) -> str:
    """Escaped text that may wrap after ``/`` (hidden sizes such as 256/128/64), so wide tables fit
    the page; never at ``_``."""
    return _html.escape(text).replace("/", "/<wbr>")


def table_html(title: str, columns: list[str], rows: list[list[str]], labels: list[str] | None = None,
               formats: list[str | None] | None = None, label: str = "") -> str:
    """A results table: ``labels`` (HTML) name the columns (default: :func:`common.tables.column_label`
    of each key); each column has one number format (``formats``, default
    :func:`common.tables.column_formats`); text cells are left-aligned, the first column kept on one line."""
    from .tables import column_formats, column_label, format_cell

    labels = labels or [_html.escape(column_label(c)) for c in columns]
    auto = column_formats(rows)
    formats = [(formats[i] if formats and i < len(formats) and formats[i] else (auto[i] if i < len(auto) else None))
               for i in range(len(columns))]

    def cell(text, i):
        spec = formats[i] if i < len(formats) else None
        shown_ = format_cell(text, spec)
        if spec is not None and shown_ != str(text).strip() or _is_number(text):
            return f"<td>{_html.escape(shown_)}</td>"
        if i == 0:  # the row's name: one line
            return f'<td class="t nowrap">{_html.escape(shown_)}</td>'
        return f'<td class="t">{_breakable(shown_)}</td>'

    head = "".join(f"<th>{h}</th>" for h in labels)
    body = "".join("<tr>" + "".join(cell(c, i) for i, c in enumerate(r)) + "</tr>" for r in rows)
    cap = f"<caption>{f'<b>{label}</b> ' if label else ''}{title}</caption>" if title or label else ""
    wide = " wide" if len(columns) > WIDE_TABLE_COLUMNS else ""
    return f'<table class="results{wide}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _is_number(text) -> bool:
    try:
        float(str(text))
        return True
    except ValueError:
        return False


def select_columns(columns: list[str], rows: list[list[str]], spec: str) -> tuple[list, list, list, list]:
    """The columns a report asks for, ``key = label :format; key2 = label2; ...`` (a key may be a
    glob such as ``fd_at_*_updates``, and ends in ``?`` when the table may lack it; label and
    format optional): (keys, rows, labels, formats)."""
    keys, labels, formats = [], [], []
    for item in [x.strip() for x in spec.split(";") if x.strip()]:
        key, _, rest = item.partition("=")
        key, rest = key.strip(), rest.strip()
        fmt = None
        m = re.search(r"(?:^|\s):(\S*)$", rest)
        if m:
            fmt, rest = m.group(1) or None, rest[:m.start()].strip()
        optional = key.endswith("?")  # a column that only some runs have (ELBO @ ep 25)
        key = key.rstrip("?").strip()
        match = [c for c in columns if c == key] or [c for c in columns if fnmatch.fnmatchcase(c, key)]
        if not match and optional:
            continue
        if not match:
            raise KeyError(key)
        from .tables import column_label
        keys.append(match[0])
        labels.append(rest or _html.escape(column_label(match[0])))
        formats.append(fmt)
    index = [columns.index(k) for k in keys]
    return keys, [[r[i] if i < len(r) else "" for i in index] for r in rows], labels, formats


def image_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


# --------------------------------------------------------------------------------------------
# Verdicts: {% if EXPR %} ... {% elif EXPR %} ... {% else %} ... {% endif %} and {{ = EXPR :fmt }}


BLOCK_TAG = re.compile(r"\{%\s*(if|elif|else|endif|set)\b(.*?)%\}", re.S)
SET = re.compile(r"^([A-Za-z]\w*)\s*=(?!=)\s*(.+)$", re.S)


def _trim_tag_lines(body: str) -> str:
    """A line of nothing but block tags loses its line break, so a verdict stays in its paragraph."""
    lines = body.split("\n")
    out = []
    for i, line in enumerate(lines):
        only_tags = line.strip() and not BLOCK_TAG.sub("", line).strip()
        out.append(line.strip() if only_tags else line + ("\n" if i < len(lines) - 1 else ""))
    return "".join(out)


def _parse_blocks(body: str, path) -> list:
    """The body as a list of text pieces and ``("if", [(condition, pieces), ...], else_pieces | None)``."""
    root: list = []
    stack = [(root, None)]  # (the list being filled, the if-node it belongs to)
    pos = 0
    body = _trim_tag_lines(body)
    for m in BLOCK_TAG.finditer(body):
        stack[-1][0].append(body[pos:m.start()])
        pos = m.end()
        tag, arg = m.group(1), m.group(2).strip()
        if tag == "set":
            sm = SET.match(arg)
            if sm is None:
                raise ValueError(f"{path}: cannot read {{% set {arg} %}} (write {{% set name = expression %}})")
            stack[-1][0].append(("set", sm.group(1), sm.group(2)))
        elif tag == "if":
            node = ("if", [(arg, [])], [None])
            stack[-1][0].append(node)
            stack.append((node[1][0][1], node))
        elif tag in ("elif", "else", "endif"):
            node = stack[-1][1]
            if node is None:
                raise ValueError(f"{path}: {{% {tag} %}} without an {{% if %}}")
            stack.pop()
            if tag == "elif":
                node[1].append((arg, []))
                stack.append((node[1][-1][1], node))
            elif tag == "else":
                node[2][0] = []
                stack.append((node[2][0], node))
    if len(stack) > 1:
        raise ValueError(f"{path}: an {{% if %}} block has no {{% endif %}}")
    root.append(body[pos:])
    return root


def _resolver(src: Source):
    def resolve(ref: str, file: str):
        run, folder, rest = _split_ref(src, ref)
        if folder is None:
            raise Missing(run.target)
        where = f"{rest + '/' if rest else ''}{file}"
        return Node(_read_json(folder / f"{file}.json"), where, run.target)
    return resolve


def _render_blocks(pieces: list, src: Source) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        if piece[0] == "set":
            _, name, expr = piece
            if name in src.variables:
                raise ValueError(f"{src.path}: {name} is set twice")
            try:
                src.variables[name] = evaluate(expr, _resolver(src), src.variables, keep=True)
            except Missing as exc:
                src.variables[name] = exc
            continue
        _, branches, (otherwise,) = piece
        conditions = [c for c, _ in branches]
        try:
            chosen = next((i for i, (c, _) in enumerate(branches) if evaluate(c, _resolver(src), src.variables)),
                          len(branches))
        except Missing as exc:
            src.verdicts.append((conditions, None))
            out.append(missing(exc.target, exc.what))
            continue
        src.verdicts.append((conditions, chosen))
        body = branches[chosen][1] if chosen < len(branches) else (otherwise or [])
        out.append(_render_blocks(body, src))
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Filling the placeholders

INNERMOST = re.compile(r"\{\{((?:(?!\{\{|\}\}).)*)\}\}", re.S)


def fill(src: Source, name: str) -> str:
    """The body with every verdict block decided and every placeholder replaced by HTML or text
    (innermost first, so a caption or a column label may hold a value)."""

    def one(m: re.Match) -> str:
        inner = m.group(1).strip()
        kind, sep, arg = inner.partition(":")
        kind = kind.strip()
        if inner == "name":
            return _html.escape(name)
        if inner.startswith("="):
            expr, spec = inner[1:], None
            fm = re.search(r"\s:([^\s:\"']*)$", expr)
            if fm:
                expr, spec = expr[:fm.start()], fm.group(1)
            try:
                return fmt_value(evaluate(expr, _resolver(src), src.variables), spec)
            except Missing as exc:
                return missing(exc.target, exc.what)
        if sep and kind == "figure":
            parts = [p.strip() for p in arg.split("|")]
            run, path, rest = _split_ref(src, parts[0])
            caption = parts[1] if len(parts) > 1 else Path(rest).stem.replace("_", " ")
            width = parts[2] if len(parts) > 2 else "80%"
            label = "\x00FIGURE\x00"  # numbered in document order once every placeholder is filled
            if path is None or not path.is_file():
                body = f'<div class="missing-figure">{missing(run.target, rest)}</div>'
            else:
                body = (f'<img src="{image_data_uri(path)}" style="width:{_html.escape(width)}" '
                        f'alt="{_html.escape(re.sub("<[^>]*>", "", caption))}">')
            return f'\n\n<figure>{body}<figcaption><b>{label}</b> {caption}</figcaption></figure>\n\n'
        if sep and kind == "table":
            parts = [p.strip() for p in arg.split("|")]
            run, path, rest = _split_ref(src, parts[0])
            table = read_table(path) if path is not None else None
            if table is None:
                return f"\n\n<p>{missing(run.target, rest + ' table')}</p>\n\n"
            title, columns, rows = table
            caption = parts[1] if len(parts) > 1 and parts[1] else _html.escape(title)
            label = "\x00TABLE\x00"
            if len(parts) > 3 and parts[3]:  # rows renamed: "old -> new; ..." (first column)
                names = dict(tuple(x.strip() for x in item.split("->", 1)) for item in parts[3].split(";")
                             if "->" in item)
                rows = [[names.get(r[0], r[0]), *r[1:]] if r else r for r in rows]
            if len(parts) > 2 and parts[2]:
                try:
                    columns, rows, labels, formats = select_columns(columns, rows, parts[2])
                except KeyError as exc:
                    return f"\n\n<p>{missing(run.target, f'no column {exc.args[0]} in {rest}')}</p>\n\n"
                return "\n\n" + table_html(caption, columns, rows, labels, formats, label=label) + "\n\n"
            return "\n\n" + table_html(caption, columns, rows, label=label) + "\n\n"
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

    text = _render_blocks(_parse_blocks(src.body, src.path), src)
    for _ in range(3):  # a value inside a caption, then the figure or table around it
        text = INNERMOST.sub(one, text)

    def number(m: re.Match) -> str:
        if m.group(1) == "FIGURE":
            src.figures += 1
            return f"Figure {src.figures}."
        src.tables += 1
        return f"Table {src.tables}."

    return re.sub("\x00(FIGURE|TABLE)\x00", number, text)


def references(path: Path) -> dict:
    """What a report source reads, by kind: {"values": [(ref, file, key, fmt)], "branch_values": [the
    same, inside a verdict's branch], "figures": [ref],
    "tables": [ref], "texts": [ref], "markdowns": [ref], "reads": [(ref, file, key)] (the values its
    verdicts and computed placeholders read), "conditions": [expression], "table_columns": {ref:
    [column keys a table's spec selects]}, "runs": {alias: spec}} (the tests build fake runs from it)."""
    src = parse_source(path)
    out = {"values": [], "branch_values": [], "figures": [], "tables": [], "texts": [], "markdowns": [], "reads": [],
           "conditions": [], "table_columns": {}, "runs": {a: r.spec for a, r in src.runs.items()}}
    names = [sm.group(1) for m in BLOCK_TAG.finditer(src.body) if m.group(1) == "set"
             and (sm := SET.match(m.group(2).strip()))]
    for m in BLOCK_TAG.finditer(src.body):
        if m.group(1) in ("if", "elif"):
            out["conditions"].append(m.group(2).strip())
            out["reads"] += read_keys(m.group(2), names)
        elif m.group(1) == "set" and (sm := SET.match(m.group(2).strip())):
            out["reads"] += read_keys(sm.group(2), names)

    values = "values"

    def visit(m: re.Match) -> str:
        inner = m.group(1).strip()
        kind, sep, arg = inner.partition(":")
        if inner.startswith("="):
            expr = re.sub(r"\s:([^\s:\"']*)$", "", inner[1:])
            out["reads"] += read_keys(expr, names)
        elif sep and kind.strip() in ("figure", "table", "text", "markdown"):
            parts = arg.split("|")
            out[kind.strip() + "s"].append(parts[0].strip())
            if kind.strip() == "table" and len(parts) > 2 and parts[2].strip():
                out["table_columns"][parts[0].strip()] = [item.partition("=")[0].strip() for item in parts[2].split(";")
                                                          if item.strip()]
        elif (v := VALUE.match(inner)) is not None:
            out[values].append((v["ref"], v["file"], v["key"], v["fmt"]))
        return "x"

    def walk(pieces: list, inside: bool) -> None:
        nonlocal values
        for piece in pieces:
            if isinstance(piece, str):
                values = "branch_values" if inside else "values"
                text = piece
                for _ in range(3):  # innermost first, as fill does
                    text = INNERMOST.sub(visit, text)
            elif piece[0] == "if":
                for _, body in piece[1]:
                    walk(body, True)
                walk(piece[2][0] or [], True)

    walk(_parse_blocks(src.body, src.path), False)
    return out
