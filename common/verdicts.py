"""Report sentences computed from the numbers: the expressions of ``{% if %}`` blocks and of
``{{ = ... }}`` placeholders in a report source (the format: ``common.report``).

An expression is a small Python expression over the runs the report declares. A run's values are
written as in a value placeholder, ``alias[/sub/folder].metrics.key`` or ``....config.key``; a key
that is not a Python name is subscripted, ``bs.metrics.runs["128"].fd`` or
``p1.metrics.probe["raw pixels"].test_accuracy``. Allowed: numbers, strings, lists, arithmetic,
comparisons (chained: ``a < b < c``), ``and`` / ``or`` / ``not``, ``x if c else y`` and the
functions of :data:`FUNCTIONS`. A value that is not there (the run, its file or the key) raises
:class:`Missing`, and the caller renders the whole sentence as "not yet run".

    {% if exp/saturating.metrics.frechet_distance > 2 * exp/default.metrics.frechet_distance %}
    training failed ...{% else %}training worked ...{% endif %}
    {% set noisiest = argmax(bs.metrics.runs, "g_loss_std_last") %}
    the noisiest batch size is {{ = noisiest }}
"""
from __future__ import annotations

import ast
import math
import re
from typing import Callable

# alias, an optional sub-folder path, then .metrics or .config (not inside a string or a longer name)
RUN_REF = re.compile(r"(?<![\w\"'/.\-])([A-Za-z_]\w*(?:/[\w\-.]+?)*)\.(metrics|config)\b")


class Missing(Exception):
    """A value an expression reads is not there: ``target`` makes it, ``what`` says which."""

    def __init__(self, target: str, what: str = ""):
        super().__init__(f"{target}: {what}")
        self.target, self.what = target, what


class Node:
    """A dict or list of a run's JSON, read by attribute or subscript; a missing key raises :class:`Missing`."""

    __slots__ = ("_v", "_where", "_target")

    def __init__(self, value, where: str, target: str):
        self._v, self._where, self._target = value, where, target

    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        return self[key]

    def __getitem__(self, key):
        v = self._v
        if isinstance(v, dict) and str(key) in v:
            return wrap(v[str(key)], f"{self._where}.{key}", self._target)
        if isinstance(v, list) and isinstance(key, int) and -len(v) <= key < len(v):
            return wrap(v[key], f"{self._where}.{key}", self._target)
        if isinstance(v, list) and isinstance(key, slice):
            return v[key]
        raise Missing(self._target, f"no {self._where}.{key}")

    def __iter__(self):
        return iter(unwrap(self))

    def __len__(self):
        return len(self._v)

    def __repr__(self):
        return f"Node({self._where})"


def wrap(value, where: str, target: str):
    return Node(value, where, target) if isinstance(value, (dict, list)) else value


def unwrap(x):
    if isinstance(x, Node):
        return x._v
    if isinstance(x, (list, tuple)):
        return [unwrap(v) for v in x]
    return x


# --------------------------------------------------------------------------------------------
# Functions an expression may call


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _field(entry, field):
    """``entry[field]``; a list of fields: the sum of those entries (None when one is missing)."""
    if field is None:
        return entry
    if not isinstance(entry, dict):
        return None
    if isinstance(field, (list, tuple)):
        parts = [entry.get(f) for f in field]
        return sum(parts) if all(_number(p) for p in parts) else None
    return entry.get(field)


def _pairs(mapping, field=None) -> list:
    """(key, value) of a dict's entries (a list's: (index, value)), each value read at ``field``
    when given (a list of fields: their sum)."""
    m = unwrap(mapping)
    items = list(m.items()) if isinstance(m, dict) else list(enumerate(m))
    return [(k, _field(v, field)) for k, v in items]


def _ranked(mapping, fields, name):
    fields = fields or (None,)
    rows = []
    for k, entry in (unwrap(mapping).items() if isinstance(unwrap(mapping), dict) else enumerate(unwrap(mapping))):
        key = tuple(_field(entry, f) for f in fields)
        if all(_number(v) for v in key):
            rows.append((key, k))
    if not rows:
        raise ValueError(f"{name}: no entry with finite values")
    return rows


def argmin(mapping, *fields):
    """The key of the entry with the smallest value of ``fields[0]`` (ties: of the next field; a
    field given as a list: the sum of those values). Entries with a NaN (a diverged run) never win."""
    return min(_ranked(mapping, fields, "argmin"))[1]


def argmax(mapping, *fields):
    """The key of the entry with the largest value (as :func:`argmin`)."""
    return max(_ranked(mapping, fields, "argmax"))[1]


def values(mapping, field=None) -> list:
    return [v for _, v in _pairs(mapping, field)]


def at(mapping, keys, field=None) -> list:
    """The entries of ``mapping`` at ``keys``, in that order (each read at ``field`` when given):
    ``at(p2.metrics.per_M, p2.config.hidden, "test_mse_unit")``."""
    node = mapping if isinstance(mapping, Node) else Node(mapping, "value", "")
    return [_field(unwrap(node[k if isinstance(node._v, list) else str(k)]), field) for k in unwrap(keys)]


def value_at(xs, ys, x):
    """The value of ``ys`` where ``xs`` holds ``x`` (a per-epoch curve at one epoch); None when absent."""
    xs, ys = unwrap(xs), unwrap(ys)
    return ys[xs.index(x)] if x in xs else None


def decreasing(seq) -> bool:
    """Every value below the one before it (strictly)."""
    s = unwrap(seq)
    return all(_number(a) and _number(b) and b < a for a, b in zip(s, s[1:]))


def increasing(seq) -> bool:
    """Every value above the one before it (strictly)."""
    s = unwrap(seq)
    return all(_number(a) and _number(b) and b > a for a, b in zip(s, s[1:]))


def keys(mapping) -> list:
    return [k for k, _ in _pairs(mapping)]


def finite(x) -> bool:
    """A number that is not NaN or infinite."""
    return _number(unwrap(x))


def plural(n, word: str, many: str | None = None) -> str:
    """``plural(1, "epoch")`` -> "1 epoch", ``plural(3, "epoch")`` -> "3 epochs"."""
    count = f"{n:g}" if isinstance(n, float) else str(n)
    return f"{count} {word if n == 1 else (many or word + 's')}"


def every(n, word: str, many: str | None = None) -> str:
    """``every(1, "epoch")`` -> "every epoch", ``every(5, "epoch")`` -> "every 5 epochs"."""
    return f"every {word}" if n == 1 else f"every {plural(n, word, many)}"


def join(items, last: str = "and") -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    items = [str(i) for i in unwrap(items)]
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def joined(items, sep: str) -> str:
    """[32, 32, 16], "/" -> "32/32/16"."""
    return sep.join(str(i) for i in unwrap(items))


def capital(text: str) -> str:
    """The text with its first letter upper-case (a name that opens a sentence)."""
    text = str(text)
    return text[:1].upper() + text[1:]


def fmt(x, spec: str = "") -> str:
    return format(unwrap(x), spec)


def ratio(a, b) -> float:
    """a / b, NaN when b is 0."""
    return a / b if b else math.nan


FUNCTIONS: dict[str, Callable] = {
    "min": min, "max": max, "abs": abs, "round": round, "len": len, "all": all, "any": any, "sum": sum,
    "sorted": sorted, "str": str, "int": int, "float": float, "argmin": argmin, "argmax": argmax,
    "values": values, "keys": keys, "at": at, "value_at": value_at, "decreasing": decreasing, "increasing": increasing,
    "finite": finite, "plural": plural, "every": every, "join": join, "joined": joined, "capital": capital, "fmt": fmt,
    "ratio": ratio, "zip": zip,
}

_ALLOWED = (ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.Name, ast.Load,
            ast.Constant, ast.Attribute, ast.Subscript, ast.List, ast.Tuple, ast.Dict, ast.IfExp, ast.keyword,
            ast.operator, ast.boolop, ast.unaryop, ast.cmpop, ast.ListComp, ast.GeneratorExp, ast.comprehension,
            ast.Store, ast.Slice)


# --------------------------------------------------------------------------------------------
# Parsing and evaluating


def parse(expr: str, variables=()) -> tuple[ast.Expression, list[tuple[str, str]]]:
    """The expression's syntax tree, with each run reference replaced by a name ``_r<i>``, and the
    references ``[(alias/sub, "metrics"|"config"), ...]`` in that order; ``variables``: the names
    set before (``{% set name = ... %}``)."""
    refs: list[tuple[str, str]] = []

    def sub(m: re.Match) -> str:
        refs.append((m.group(1), m.group(2)))
        return f"_r{len(refs) - 1}"

    code = RUN_REF.sub(sub, expr.strip())
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot read the expression {expr!r}: {exc.msg}") from None
    bound = {n.id for node in ast.walk(tree) if isinstance(node, ast.comprehension)
             for n in ast.walk(node.target) if isinstance(n, ast.Name)}  # [x * 2 for x in ...]
    variables = set(variables) | bound
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ValueError(f"{type(node).__name__} is not allowed in the expression {expr!r}")
        if isinstance(node, ast.Name) and not (node.id in FUNCTIONS or node.id in variables
                                               or re.fullmatch(r"_r\d+", node.id)):
            raise ValueError(f"unknown name {node.id!r} in the expression {expr!r} (a run is written "
                             "alias.metrics.key or alias.config.key; a name must be set before it is used)")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
            raise ValueError(f"only the functions {', '.join(FUNCTIONS)} may be called in {expr!r}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ValueError(f"no private names in the expression {expr!r}")
    return tree, refs


def evaluate(expr: str, resolve: Callable[[str, str], Node], variables: dict | None = None, keep: bool = False):
    """The value of ``expr``; ``resolve(ref, "metrics"|"config")`` gives a run file's :class:`Node`
    (or raises :class:`Missing`); ``variables``: values set before (a :class:`Missing` among them is
    raised when the expression reads it). ``keep``: a dict or list stays a :class:`Node` (for a
    variable read further)."""
    variables = variables or {}
    tree, refs = parse(expr, variables)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(variables.get(node.id), Missing):
            raise variables[node.id]
    names = {**variables, **{f"_r{i}": resolve(ref, file) for i, (ref, file) in enumerate(refs)}}
    # one namespace: a comprehension sees the names too
    value = eval(compile(tree, "<report expression>", "eval"), {"__builtins__": {}, **FUNCTIONS, **names})
    return value if keep else unwrap(value)


def read_keys(expr: str, variables=()) -> list[tuple[str, str, str]]:
    """The values ``expr`` reads, as ``(ref, file, dotted key)`` (a whole dict read by a function: its
    key path); the tests write fake runs from this."""
    tree, refs = parse(expr, variables)
    out = []

    def chain(node):
        parts = []
        while True:
            if isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            elif isinstance(node, ast.Subscript) and isinstance(_index(node), ast.Constant):
                parts.append(str(_index(node).value))
                node = node.value
            else:
                break
        return node, parts[::-1]

    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            base, parts = chain(node)
            if isinstance(base, ast.Name) and base.id.startswith("_r") and parts:
                ref, file = refs[int(base.id[2:])]
                key = ".".join(parts)
                # only the longest chain of each base
                if not any(k.startswith(key + ".") or k == key for (r, f, k) in out if (r, f) == (ref, file)):
                    out = [(r, f, k) for (r, f, k) in out if not ((r, f) == (ref, file) and key.startswith(k + "."))]
                    out.append((ref, file, key))
    return out


def _index(node: ast.Subscript):
    return node.slice
