"""Course zips: the scripts a course submits and the helper code they reach, nothing else.

A zip holds the course folder's scripts (its top-level files with a ``__main__`` block, less the
benchmarks its ``course.toml`` names) and what they import: the course's own modules ship whole;
of this package only the top-level definitions the zip really uses (and, transitively, what those
use) ship, pruned, into the zip's own helper package ``utils/`` (``from common.x import y``
becomes ``from utils.x import y``). A course whose handout asks for a number of code files that
each run alone lists templates instead (``zip_templates`` in ``course.toml``): each becomes one
script of the zip, its ``#| inline:`` lines (:mod:`common.inline`) replaced by the code they name,
so the modules stay the one source and the script imports nothing of the repository.

The zip's README is the course's ``zip_readme.md`` (one page for the grader: how to run each part,
the time it takes, what each output shows) with ``{files}`` (each file, its line count and what it
holds) and ``{versions}`` (Python and the packages the code imports, as installed here) filled in;
``requirements.txt`` lists those packages with the project's pins. No data, outputs or caches ship.

    python -m common.zips COURSE NAME [--dist DIR]     # dist/<the handout's file name>.zip
"""
from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import re
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from . import courses
from .inline import import_subset, statement_source
from .paths import DIST, ROOT, shown

PACKAGE = "common"     # the package whose definitions are pruned into the zip
HELPERS = "utils"      # its name inside the zip
# PyPI distribution of each imported top-level module, for requirements.txt and the README
DISTRIBUTIONS = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "matplotlib": "matplotlib",
                 "sklearn": "scikit-learn", "tqdm": "tqdm", "scipy": "scipy", "PIL": "pillow"}
# what each helper module holds, for its docstring in the zip
HELPER_TITLES = {"paths": "Where runs, data and caches live", "data": "Loading the datasets as tensors, splits, batches",
                 "training": "Training utilities: seeding, device, schedules, run folders with checkpoints and resume",
                 "loop": "The epoch loop around a training step", "metrics": "Evaluation: the judge classifier, Frechet distance",
                 "plotting": "Figures", "tables": "Result tables (Markdown and CSV)",
                 "cli": "Command-line flags from a dataclass of defaults"}


class ZipError(RuntimeError):
    """The zip cannot be built as asked (a name that cannot be resolved, two definitions of one name)."""


# --------------------------------------------------------------------------------------------
# Parsed modules and what their statements use


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _function_locals(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """Names bound in ``fn``'s own scope: its arguments, what its body assigns (comprehension
    variables included) and the functions and classes it defines; not what an import binds (a
    repository import inside a function is followed like a top-level one)."""
    a = fn.args
    out = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None}
    todo = list(fn.body) if isinstance(fn.body, list) else [fn.body]
    declared = {name for n in ast.walk(fn) if isinstance(n, (ast.Global, ast.Nonlocal)) for name in n.names}
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
            todo += getattr(n, "decorator_list", [])
            continue  # its body is its own scope
        if isinstance(n, ast.Lambda):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        todo += list(ast.iter_child_nodes(n))
    return out - declared


class _Uses(ast.NodeVisitor):
    """Global names a statement reads, and ``alias.attr`` reads of them; a name bound in an
    enclosing function is that function's. With lazy annotations (``from __future__ import
    annotations``) the annotations of function signatures are skipped, never those of class
    bodies (a dataclass reads its fields' annotations, ``typing.ClassVar`` included)."""

    def __init__(self, lazy: bool):
        self.names: set[str] = set()
        self.attrs: set[tuple[str, str]] = set()
        self.lazy = lazy
        self.scopes: list[set[str]] = []

    def _local(self, name: str) -> bool:
        return any(name in s for s in self.scopes)

    def visit_Name(self, node):
        if not self._local(node.id):
            self.names.add(node.id)

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and not self._local(node.value.id):
            self.attrs.add((node.value.id, node.attr))
        self.generic_visit(node)

    def visit_arg(self, node):
        if not self.lazy and node.annotation is not None:
            self.visit(node.annotation)

    def visit_FunctionDef(self, node):
        for d in node.decorator_list:
            self.visit(d)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs + [node.args.vararg, node.args.kwarg]:
            if a is not None:
                self.visit_arg(a)
        if not self.lazy and node.returns is not None:
            self.visit(node.returns)
        self.scopes.append(_function_locals(node))
        for s in node.body:
            self.visit(s)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        self.scopes.append(_function_locals(node))
        self.visit(node.body)
        self.scopes.pop()


def _uses(node: ast.AST, lazy: bool) -> _Uses:
    u = _Uses(lazy)
    u.visit(node)
    return u


@dataclass
class Module:
    """One parsed file of the repository: ``name`` as it is imported (``common.training``,
    ``tp2_models``, ``models.AR``), its statements without docstring, ``__future__`` import and
    ``__main__`` guard."""

    path: Path
    name: str
    text: str
    tree: ast.Module
    lazy: bool
    docstring: str | None
    body: list[ast.stmt]
    main_guard: ast.stmt | None
    by_name: dict[str, ast.stmt] = field(default_factory=dict)

    @property
    def is_package_module(self) -> bool:
        return self.name.split(".")[0] == PACKAGE

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines(keepends=True)


def parse_module(path: Path, name: str) -> Module:
    text = path.read_text()
    tree = ast.parse(text)
    body = list(tree.body)
    docstring = None
    if body and _is_docstring(body[0]):
        docstring = ast.get_source_segment(text, body[0])
        body = body[1:]
    lazy = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in body)
    body = [n for n in body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    guard = next((n for n in body if _is_main_guard(n)), None)
    body = [n for n in body if n is not guard]
    mod = Module(path, name, text, tree, lazy, docstring, body, guard)
    for node in body:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            for n in _bound_names(node):
                mod.by_name[n] = node
    return mod


@dataclass(frozen=True)
class Ref:
    """What an import binds: a repository module (``attr`` None) or one name of it."""

    module: str
    attr: str | None = None


class Project:
    """The modules of one course folder and of ``common``, parsed on demand."""

    def __init__(self, course_dir: Path):
        self.course_dir = Path(course_dir)
        self.modules: dict[str, Module] = {}

    def file_of(self, dotted: str) -> Path | None:
        parts = dotted.split(".")
        base = ROOT if parts[0] == PACKAGE else self.course_dir
        for cand in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if cand.is_file():
                return cand
        return None

    def module(self, dotted: str) -> Module:
        if dotted not in self.modules:
            path = self.file_of(dotted)
            if path is None:
                raise ZipError(f"no module {dotted}")
            self.modules[dotted] = parse_module(path, dotted)
        return self.modules[dotted]

    def absolute(self, node: ast.ImportFrom, importer: Module) -> str:
        if not node.level:
            return node.module
        base = importer.name.split(".")
        if importer.path.name != "__init__.py":
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def refs(self, node: ast.Import | ast.ImportFrom, importer: Module) -> dict[str, Ref] | None:
        """The names ``node`` binds, each to what it refers to, or None for a third-party import."""
        if isinstance(node, ast.Import):
            out = {}
            for a in node.names:
                if self.file_of(a.name) is None:
                    return None
                if a.asname is None and "." in a.name:
                    raise ZipError(f"{shown(importer.path)}: write `import {a.name} as x`, the zip cannot follow `import {a.name}`")
                out[a.asname or a.name] = Ref(a.name)
            return out
        base = self.absolute(node, importer)
        if self.file_of(base) is None:
            return None
        out = {}
        for a in node.names:
            sub = f"{base}.{a.name}"
            out[a.asname or a.name] = Ref(sub) if self.file_of(sub) else Ref(base, a.name)
        return out


# --------------------------------------------------------------------------------------------
# Reachable definitions


class Closure:
    """The statements the entry scripts reach. ``kept[module]`` holds the ids of the kept statements
    (a module kept whole keeps all of its own), ``imports_used[module]`` the names of its
    third-party imports that kept statements read; ``order`` lists the modules as first reached."""

    def __init__(self, project: Project, whole):
        self.p = project
        self.whole = whole          # whole(module name) -> keep the module entire?
        self.kept: dict[str, set[int]] = {}
        self.imports_used: dict[str, set[str]] = {}
        self.order: list[str] = []

    def add_module(self, name: str) -> None:
        if name in self.kept:
            return
        mod = self.p.module(name)
        self.kept[name], self.imports_used[name] = set(), set()
        self.order.append(name)
        for node in mod.body:  # statements that bind nothing (matplotlib.use(...)) run whenever the module does
            if self.whole(name) or not (_bound_names(node) or isinstance(node, (ast.Import, ast.ImportFrom))):
                self.add_stmt(name, node)
        if self.whole(name) and mod.main_guard is not None:
            self.add_stmt(name, mod.main_guard)

    def add_stmt(self, name: str, node: ast.stmt) -> None:
        if id(node) in self.kept[name]:
            return
        self.kept[name].add(id(node))
        # annotations count: every name a signature mentions is defined in the zip
        for target, stmt in self.targets(name, node, _uses(node, False)):
            self.add_stmt(target, stmt)

    def targets(self, name: str, node: ast.stmt, uses: _Uses) -> list[tuple[str, ast.stmt]]:
        """The top-level statements (of any module) that the names in ``uses`` read by ``node`` of
        module ``name`` refer to; modules reached are added, third-party names recorded."""
        mod = self.p.module(name)
        where = f"{shown(mod.path)}:{node.lineno}"
        nested = {}  # repository imports inside functions
        for n in ast.walk(node):
            if isinstance(n, (ast.Import, ast.ImportFrom)) and n is not node:
                refs = self.p.refs(n, mod)
                nested.update(refs or {})
        top = self.top_imports(mod)
        out = []
        for used in uses.names:
            if used in mod.by_name and mod.by_name[used] is not node:
                out.append((name, mod.by_name[used]))
            elif used in nested or used in top:
                ref = nested.get(used) or top[used]
                if ref is None:
                    self.imports_used[name].add(used)
                else:
                    out += self._ref(ref, where)
        for alias, attr in uses.attrs:
            ref = nested.get(alias) or top.get(alias)
            if ref is not None and ref.attr is None:
                sub = f"{ref.module}.{attr}"
                out += self._ref(Ref(sub) if self.p.file_of(sub) else Ref(ref.module, attr), where)
        return out

    def _ref(self, ref: Ref, where: str) -> list[tuple[str, ast.stmt]]:
        self.add_module(ref.module)
        if ref.attr is None:
            return []
        mod = self.p.module(ref.module)
        if ref.attr in mod.by_name:
            return [(ref.module, mod.by_name[ref.attr])]
        again = self.top_imports(mod).get(ref.attr)  # a name the module itself imports (a re-export)
        if again is not None:
            return self._ref(again, where)
        raise ZipError(f"{where}: {ref.module} defines no {ref.attr}")

    def top_imports(self, mod: Module) -> dict[str, Ref | None]:
        """Each name a top-level import of ``mod`` binds: its :class:`Ref`, or None (third party)."""
        out: dict[str, Ref | None] = {}
        for node in mod.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                refs = self.p.refs(node, mod)
                for n in _bound_names(node) if refs is None else refs:
                    out[n] = None if refs is None else refs[n]
        return out


def closure(project: Project, entries: list[str], whole) -> Closure:
    c = Closure(project, whole)
    for e in entries:
        c.add_module(e)
    return c


# --------------------------------------------------------------------------------------------
# Writing pruned modules


def rename_package(text: str) -> str:
    """``common`` -> ``utils`` in imports and in dotted or path mentions (``common.training``, ``common/``)."""
    text = re.sub(rf"\b{PACKAGE}\.(?=[A-Za-z_])", f"{HELPERS}.", text)
    text = re.sub(rf"\b{PACKAGE}/", f"{HELPERS}/", text)
    return re.sub(rf"^(\s*)(from|import) {PACKAGE}\b", rf"\1\2 {HELPERS}", text, flags=re.M)


def pruned_module(c: Closure, name: str) -> str:
    """A helper module of the zip: a docstring, the imports its kept statements use, the kept statements."""
    mod = c.p.module(name)
    kept = c.kept[name]
    top = c.top_imports(mod)
    needed: set[str] = set(c.imports_used[name])
    for node in mod.body:  # the repository imports kept statements use
        if id(node) in kept:
            uses = _uses(node, False)
            needed |= {u for u in uses.names | {a for a, _ in uses.attrs} if top.get(u) is not None}
    title = _section_title(mod)
    out = [f'"""{title}.\n\nOnly the definitions that the scripts of this folder use."""\n']
    if mod.lazy:
        out.append("from __future__ import annotations\n")
    groups: dict[int, list[str]] = {}  # the standard library, third-party packages, this package
    for node in mod.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            want = _bound_names(node) & needed
            if want:
                groups.setdefault(_import_group(node), []).append(import_subset(node, want))
    if groups:
        out.append("\n" + "\n\n".join("\n".join(groups[k]) for k in sorted(groups)) + "\n")
    out.append("\n\n" + _join_kept(mod, [n for n in mod.body if id(n) in kept
                                          and not isinstance(n, (ast.Import, ast.ImportFrom))]) + "\n")
    return rename_package("".join(out))


def _import_group(node: ast.Import | ast.ImportFrom) -> int:
    if isinstance(node, ast.ImportFrom) and node.level:
        return 2
    top = (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name).split(".")[0]
    return 0 if top in sys.stdlib_module_names else 1 if top != PACKAGE else 2


def _join_kept(mod: Module, nodes: list[ast.stmt], text=None) -> str:
    """The statements' sources (``text(node, floor)``, by default :func:`statement_source`) joined as in
    the file: two statements that were neighbours keep the blank lines between them, others get two."""
    text = text or (lambda node, floor: statement_source(mod.lines, node, floor))
    out, prev = [], None
    for node in nodes:
        index = mod.body.index(node) if node in mod.body else len(mod.body)
        floor = mod.body[index - 1].end_lineno if index else 0
        seg = text(node, floor).rstrip("\n")
        if out:
            neighbours = prev is not None and index > 0 and mod.body[index - 1] is prev
            first = node.end_lineno - len(seg.splitlines()) + 1
            blank = sum(1 for ln in mod.lines[prev.end_lineno:first - 1] if not ln.strip()) if neighbours else 2
            out.append("\n" * (min(blank, 2) + 1))
        out.append(seg)
        prev = node
    return "".join(out)


def _section_title(mod: Module) -> str:
    """A package module's title (``HELPER_TITLES``), or a course module's first docstring line
    without its ``Course: `` prefix."""
    stem = mod.name.split(".")[-1]
    if mod.is_package_module:
        return HELPER_TITLES.get(stem, f"Helpers: {stem}")
    first = _first_line(mod.text) or stem
    first = first.split(": ", 1)[-1]
    return first[:1].upper() + first[1:]


# --------------------------------------------------------------------------------------------
# The zip of a course


def entry_scripts(info: courses.Course) -> list[str]:
    """The scripts a course's zip holds: its top-level Python files that run as a program (an
    ``if __name__ == "__main__"`` block), less the benchmarks its manifest names."""
    benches = {b.script for b in info.benches}
    return [p.name for p in sorted(info.path.glob("*.py"))
            if p.name not in benches and any(_is_main_guard(n) for n in ast.parse(p.read_text()).body)]


def _settings(info: courses.Course) -> dict:
    return tomllib.loads((info.path / courses.MANIFEST).read_text())


def _module_name(rel: str) -> str:
    return rel.removesuffix(".py").replace("/", ".")


def expand_template(path: Path) -> str:
    """A submission script built from its template: each ``#| inline: FILE: NAMES`` line (the
    directives of :mod:`common.inline`, paths from the repository root) becomes the named
    definitions of FILE, with the definitions of FILE they use, less what the template defines
    above the line. The template imports at its top what the copied code needs, so the script
    reads top to bottom: its imports, its settings, the copied code, its own code."""
    from .inline import DIRECTIVE, InlineError, inline_source, parse_directive

    text = path.read_text()
    tree = ast.parse(text)
    out: list[str] = []
    defined: set[str] = set()
    after_directive = False
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith(DIRECTIVE):
            out.append(line)
            after_directive = False
            continue
        defined |= {n for node in tree.body if node.end_lineno < number for n in _bound_names(node)}
        try:
            code, provides = inline_source(*parse_directive(line), defined)
        except InlineError as exc:
            raise ZipError(f"{shown(path)}:{number}: {exc}") from None
        imports = [ast.unparse(n) for n in ast.parse(code).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if imports:
            raise ZipError(f"{shown(path)}:{number}: the copied code needs `{'; '.join(imports)}`: "
                           "import it at the top of the template")
        defined |= provides
        if code.strip():
            out += ["", ""] if after_directive else []
            out.append(code.strip("\n"))
            after_directive = True
    return "\n".join(out) + "\n"


def zip_scripts(info: courses.Course) -> list[str]:
    """The names of the scripts in the course's zip: its templates' (``zip_templates`` in
    ``course.toml``, each built by :func:`expand_template`), else its :func:`entry_scripts`."""
    templates = _settings(info).get("zip_templates")
    return [Path(t).name for t in templates] if templates else entry_scripts(info)


def zip_contents(info: courses.Course) -> dict[str, str]:
    """The zip's code files (path inside the zip -> text), without README and requirements."""
    templates = _settings(info).get("zip_templates")
    if templates:
        return {Path(t).name: expand_template(info.path / t) for t in templates}
    project = Project(info.path)
    entries = entry_scripts(info)
    if not entries:
        raise ZipError(f"{info.folder} has no script to zip")
    files: dict[str, str] = {}
    c = closure(project, [_module_name(e) for e in entries], whole=lambda m: m.split(".")[0] != PACKAGE)
    helpers = []
    for name in c.order:
        mod = project.module(name)
        if mod.is_package_module:
            files[f"{HELPERS}/{'/'.join(name.split('.')[1:])}.py"] = pruned_module(c, name)
            helpers.append(name.split(".")[-1])
            continue
        rel = mod.path.relative_to(info.path).as_posix()
        files[rel] = rename_package(mod.text)
        for parent in list(Path(rel).parents)[:-1]:  # a package's __init__.py (models/)
            init = info.path / parent / "__init__.py"
            if init.is_file():
                files[(parent / "__init__.py").as_posix()] = rename_package(init.read_text())
    if helpers:
        files[f"{HELPERS}/__init__.py"] = (f'"""Helper code of the scripts in this folder: '
                                           f'{", ".join(sorted(helpers))}."""\n')
    return dict(sorted(files.items()))


def third_party(files: dict[str, str]) -> list[str]:
    """The PyPI distributions the files import (sorted); a ZipError for an import not in
    ``DISTRIBUTIONS`` that is neither the standard library nor a file of the zip."""
    local = {Path(p).parts[0].removesuffix(".py") for p in files}
    dists = set()
    for path, text in files.items():
        if not path.endswith(".py"):
            continue
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, ast.Import):
                tops = [a.name.split(".")[0] for a in n.names]
            elif isinstance(n, ast.ImportFrom) and not n.level:
                tops = [n.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in local or top in sys.stdlib_module_names or top == "__future__":
                    continue
                if top not in DISTRIBUTIONS:
                    raise ZipError(f"{path} imports {top}: add its PyPI name to common.zips.DISTRIBUTIONS")
                dists.add(DISTRIBUTIONS[top])
    return sorted(dists)


def requirements(dists: list[str]) -> str:
    """``requirements.txt``: the project's pins (``pyproject.toml``) of the distributions the zip imports."""
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {re.split(r"[<>=!~ \[]", p, maxsplit=1)[0].lower(): p for p in pins}
    return "".join(by_name.get(d.lower(), d) + "\n" for d in dists)


def versions(dists: list[str]) -> str:
    """``Python 3.x.y, torch 2.a.b, ...``: what the zip was built and run with."""
    out = [f"Python {sys.version.split()[0]}"]
    for d in dists:
        try:
            out.append(f"{d} {importlib.metadata.version(d)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{d} (not installed here)")
    return ", ".join(out)


def _first_line(text: str) -> str:
    try:
        doc = ast.get_docstring(ast.parse(text)) or ""
    except SyntaxError:
        doc = ""
    line = doc.strip().split("\n\n")[0].replace("\n", " ")
    return line.split(". ")[0].rstrip(".") if line else ""


def file_table(files: dict[str, str]) -> str:
    """A Markdown table: each code file, its line count and the first sentence of its docstring."""
    rows = ["| file | lines | what it holds |", "| --- | ---: | --- |"]
    rows += [f"| `{p}` | {len(t.splitlines())} | {_first_line(t)} |" for p, t in files.items() if p.endswith(".py")]
    total = sum(len(t.splitlines()) for p, t in files.items() if p.endswith(".py"))
    return "\n".join(rows + [f"| all | {total} | |"]) + "\n"


def readme(info: courses.Course, files: dict[str, str], dists: list[str]) -> str:
    """The course's ``zip_readme.md`` with ``{files}`` and ``{versions}`` filled in."""
    template = info.path / "zip_readme.md"
    if not template.is_file():
        raise ZipError(f"{info.folder} has no zip_readme.md (the zip's README, one page for the grader)")
    text = template.read_text().replace("{files}", file_table(files)).replace("{versions}", versions(dists))
    if "{times}" in text:
        from .results import times_list  # results reads this module for its zip tables
        text = text.replace("{times}", times_list(info.folder))
    return text


def build_zip(course: str, name: str, dist_dir: Path | str | None = None) -> Path:
    """``dist/<the handout's zip name>.zip`` for ``course`` (its key or folder), named as its
    ``course.toml`` says, holding one top folder named like the zip: the code, README.md and
    requirements.txt. Written beside, then moved into place."""
    info = courses.find(course)
    if info.zip is None:
        raise SystemExit(f"error: {info.folder} has no zip (its course.toml names none); courses with one: "
                         + ", ".join(c.key for c in courses.courses() if c.zip))
    files = zip_contents(info)
    dists = third_party(files)
    files["README.md"] = readme(info, files, dists)
    files["requirements.txt"] = requirements(dists)
    stem = info.zip.format(name=name)
    dist_dir = Path(dist_dir) if dist_dir else DIST
    dist_dir.mkdir(parents=True, exist_ok=True)
    out = dist_dir / f"{stem}.zip"
    with tempfile.NamedTemporaryFile(dir=dist_dir, prefix=f".{stem}.", suffix=".tmp", delete=False) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for rel, text in sorted(files.items()):
                z.writestr(f"{stem}/{rel}", text)
    os.replace(tmp.name, out)
    print(f"wrote {shown(out)} ({len(files)} files)")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build a course's code zip.")
    parser.add_argument("course", help="the course's key or folder")
    parser.add_argument("name", help="the student's name, for the zip's file name")
    parser.add_argument("--dist", default=None, help="folder to write into (default: dist/)")
    args = parser.parse_args(argv)
    try:
        build_zip(args.course, args.name, args.dist)
    except ZipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
