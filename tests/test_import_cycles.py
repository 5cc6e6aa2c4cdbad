"""No import cycles among labtf's own modules, and no private name imported across modules.

The import graph is read with ``ast`` from every ``import`` / ``from ... import``
anywhere in a file (module level and inside functions alike: a function-level import
hides a cycle from Python, not from a reader), over ``labtf/``, ``exporters/`` and
``cli.py``. The checker is tested on planted trees first, so a pass means something.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("labtf", "exporters", "cli.py")


def _modules(root: Path, sources=SOURCES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``sources`` (relative to ``root``)."""
    out = {}
    for src in sources:
        p = root / src
        for f in [p] if p.is_file() else sorted(p.rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


def _resolve(target: str, names: set[str]) -> str | None:
    """The longest known module that ``target`` (a module or module.attribute) lies in."""
    while target and target not in names:
        target = target.rpartition(".")[0]
    return target or None


def _imports(name: str, path: Path, names: set[str]):
    """(imported module, imported names, line) for every import of a project module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                mod = _resolve(a.name, names)
                if mod:
                    yield mod, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .mod import y
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:  # "from pkg import module" imports the module itself
                mod = _resolve(f"{base}.{a.name}", names)
                if mod:
                    yield mod, ([a.name] if mod == base else []), node.lineno


def import_graph(root: Path, sources=SOURCES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's own submodules excluded)."""
    mods = _modules(root, sources)
    names = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for target, _, _ in _imports(m, path, names):
            if target != m and not m.startswith(target + "."):  # a package's __init__ runs first
                graph[m].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_imports(root: Path, sources=SOURCES) -> list[str]:
    """``file:line: from MOD import _name`` for each private name taken from another module."""
    mods = _modules(root, sources)
    names = set(mods)
    bad = []
    for m, path in mods.items():
        for target, imported, line in _imports(m, path, names):
            for n in imported:
                if n.startswith("_") and not n.startswith("__") and target != m:
                    bad.append(f"{path.relative_to(root)}:{line}: from {target} import {n}")
    return bad


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_checker_finds_a_planted_function_level_cycle(tmp_path):
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import helper\n",
        "pkg/b.py": "def helper():\n    from pkg import a\n    return a\n",  # hidden in a function
        "pkg/c.py": "import pkg.a\n",  # imports into the cycle, not part of it
        "cli.py": "import pkg.c\n"})
    cycles = find_cycles(import_graph(root, ("pkg", "cli.py")))
    assert cycles == [["pkg.a", "pkg.b"]]


def test_checker_finds_relative_three_module_cycles_and_passes_a_clean_tree(tmp_path):
    root = _tree(tmp_path, {
        "pkg/__init__.py": "from pkg.a import x  # a package importing its own module: fine\n",
        "pkg/a.py": "from .b import y\nx = 1\n",
        "pkg/b.py": "def f():\n    from .sub.c import z\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..a import x\n"})
    assert find_cycles(import_graph(root, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    (root / "pkg/sub/c.py").write_text("import os\nz = 1\n")
    assert find_cycles(import_graph(root, ("pkg",))) == []


def test_checker_finds_a_planted_private_import(tmp_path):
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def _hidden():\n    pass\n\n\ndef public():\n    pass\n",
        "pkg/b.py": "def f():\n    from pkg.a import _hidden, public\n",
        "pkg/c.py": "from pkg import a\nfrom pkg.a import __doc__\n"})
    assert private_imports(root, ("pkg",)) == ["pkg/b.py:2: from pkg.a import _hidden"]


def test_no_import_cycles_in_labtf_exporters_and_cli():
    graph = import_graph(ROOT)
    assert "labtf.explain.faithfulness" in graph and "cli" in graph  # the walk saw the tree
    assert "labtf.explain.metrics" in graph["labtf.explain.label_randomization"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_a_private_name_of_another():
    bad = private_imports(ROOT)
    assert not bad, "private names imported across modules (make them public or move them):\n" \
        + "\n".join(bad)
