"""Write the repository's code into a notebook's cells, so that a submitted notebook holds its
graded code and runs with PyPI packages alone, while the modules stay the one source.

A template's code cell made only of directive lines (and comment lines, which are kept) such as

    #| inline: csc8851_hw2/wgan_gp_model.py: Generator, Critic
    #| inline: common/training.py: make_ema, ema_update

(paths from the repository root) is replaced by the named top-level definitions of each file, with
the definitions of the same file they use (unless an earlier cell already holds them) and the
imports they need that no earlier cell made; without names, the whole file. The cell's comment
lines stay above the code; nothing says where the code came from. Imports of the repository's own
modules (``common``, a course's modules) are left out: every name they bind that the copied code
uses must be defined by an earlier cell of the notebook (or an earlier directive of the same
cell), else the build stops with an :class:`InlineError`. So a built notebook never imports
``common``. Annotations count as used names (the notebook has no ``from __future__`` import), so a
copied definition runs as it reads.
"""
from __future__ import annotations

import ast
import copy
from pathlib import Path

from .paths import ROOT

DIRECTIVE = "#| inline:"


class InlineError(RuntimeError):
    """A directive that cannot be honoured: unknown file or name, or a name the notebook lacks."""


def _bound_names(node: ast.stmt) -> set[str]:
    """The top-level names a statement defines."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}


def _uses(node: ast.AST) -> set[str]:
    """The names a statement reads (annotations included: they are evaluated)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _global_uses(node: ast.AST, local: frozenset[str] = frozenset()) -> set[str]:
    """The names a statement reads from its module: :func:`_uses` less the names a function binds
    for itself (its arguments and what it assigns), which hide a module name of the same spelling
    (a parameter ``D`` beside ``from common import data as D``)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = node.args
        params = [x for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None]
        outer = [*a.defaults, *(d for d in a.kw_defaults if d is not None), *getattr(node, "decorator_list", []),
                 *(x.annotation for x in params if x.annotation is not None), getattr(node, "returns", None)]
        inner = local | {x.arg for x in params}
        inner |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        body = node.body if isinstance(node.body, list) else [node.body]
        return set().union(*(_global_uses(n, local) for n in outer if n is not None),
                           *(_global_uses(n, frozenset(inner)) for n in body))
    if isinstance(node, ast.Name):
        return set() if node.id in local else {node.id}
    return set().union(*(_global_uses(n, local) for n in ast.iter_child_nodes(node)))


def _is_repository_module(node: ast.Import | ast.ImportFrom, folder: Path) -> bool:
    """Relative imports, ``common`` and modules that sit next to the file (a course's own)."""
    if isinstance(node, ast.ImportFrom) and (node.level or node.module is None):
        return True
    modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    tops = {m.split(".")[0] for m in modules}
    return any((ROOT / t / "__init__.py").exists() or (folder / f"{t}.py").exists() or (folder / t).is_dir()
               for t in tops)


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)


def statement_source(lines: list[str], node: ast.stmt, start_floor: int) -> str:
    """The statement's source with its decorators and the comment lines right above it."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
    while first - 1 >= start_floor and lines[first - 1].lstrip().startswith("#"):
        first -= 1
    return "".join(lines[first:node.end_lineno])


def import_subset(node: ast.Import | ast.ImportFrom, needed: set[str]) -> str:
    """``node`` keeping only the aliases whose bound name is in ``needed``."""
    keep = [a for a in node.names if (a.asname or a.name).split(".")[0] in needed]
    if len(keep) == len(node.names):
        return ast.unparse(node)
    trimmed = copy.copy(node)
    trimmed.names = keep
    return ast.unparse(trimmed)


def inline_source(rel_path: str, names: list[str] | None, defined: set[str]) -> tuple[str, set[str]]:
    """The code of ``names`` (or the whole file) from ``ROOT / rel_path`` and the names it defines.

    ``defined`` holds the names the notebook defines before this point: definitions among them are
    not copied again, and imports that bind only such names are left out."""
    path = ROOT / rel_path
    if not path.is_file():
        raise InlineError(f"{rel_path}: no such file in the repository")
    text = path.read_text()
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    body = [n for n in tree.body if not _is_main_guard(n)]
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the module docstring
    body = [n for n in body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]
    definitions = [n for n in body if n not in imports]
    by_name = {name: n for n in definitions for name in _bound_names(n)}

    if names is None:
        chosen = set(map(id, definitions))
    else:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InlineError(f"{rel_path} has no top-level definition named {', '.join(missing)}")
        chosen, todo = set(), [by_name[n] for n in names]
        while todo:  # the named definitions and, transitively, the file's definitions they use
            node = todo.pop()
            if id(node) in chosen:
                continue
            chosen.add(id(node))
            # what the notebook already defines (an earlier cell inlined it) is used, not copied again
            todo += [by_name[u] for u in _global_uses(node) - defined if u in by_name and id(by_name[u]) not in chosen]
    kept = [n for n in definitions if id(n) in chosen]
    provides = set().union(*(_bound_names(n) for n in kept)) if kept else set()
    used = set().union(*(_global_uses(n) for n in kept)) if kept else set()

    import_lines, imported = [], set()
    for node in imports:
        needed = _bound_names(node) & used - provides
        if not needed:
            continue
        if _is_repository_module(node, path.parent):
            lacking = sorted(needed - defined - provides)
            if lacking:
                raise InlineError(f"{rel_path} uses {', '.join(lacking)} from `{ast.unparse(node)}`, which no earlier "
                                  "cell of the notebook defines: inline it first")
            continue
        if needed - defined:  # an import an earlier cell made is not repeated
            import_lines.append(import_subset(node, needed - defined))
            imported |= needed - defined

    parts, floor, previous = [], 0, None
    for node in body:
        if id(node) in chosen:
            segment = statement_source(lines, node, floor).rstrip("\n")
            if parts:  # two blank lines between definitions; neighbours in the file keep their spacing
                first = node.end_lineno - len(segment.splitlines())
                blank = sum(not ln.strip() for ln in lines[floor:first]) if previous is not None else 2
                parts.append("\n" * (min(blank, 2) + 1))
            parts.append(segment)
        previous = node if id(node) in chosen else None
        floor = node.end_lineno
    code = "\n".join(import_lines) + "\n\n\n" + "".join(parts) + "\n"
    return code.lstrip("\n"), provides | imported


def parse_directive(line: str) -> tuple[str, list[str] | None]:
    spec = line[len(DIRECTIVE):].strip()
    path, _, names = spec.partition(": ")
    names_list = [n.strip() for n in names.split(",") if n.strip()] if names else None
    return path.strip(), names_list


def _cell_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: such a cell defines nothing we track
        return set()
    return set().union(*(_bound_names(n) for n in tree.body)) if tree.body else set()


def inline_notebook(nb) -> None:
    """Replace every directive cell of ``nb`` (an nbformat notebook) by the code it names, in place."""
    defined: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        src_lines = cell.source.splitlines()
        directives = [ln for ln in src_lines if ln.startswith(DIRECTIVE)]
        if not directives:
            defined |= _cell_names(cell.source)
            continue
        comments = [ln for ln in src_lines if ln.startswith("#") and not ln.startswith(DIRECTIVE)]
        if len(directives) + len(comments) != len(src_lines):
            raise InlineError(f"a cell mixes `{DIRECTIVE}` directives with code: {src_lines[0]!r}")
        chunks = []
        for line in directives:
            code, provides = inline_source(*parse_directive(line), defined)
            defined |= provides
            chunks.append(code)
        cell.source = "\n".join(comments + ["\n\n\n".join(chunks).rstrip("\n")])
