"""The package's modules import each other without cycles (the layers of ARCHITECTURE.md, README "Layout").

Counted: every `import xkdbench...` / `from xkdbench... import` in a module, including imports inside
functions (a deferred import is still a dependency), except those under `if TYPE_CHECKING:`. The
package facade `xkdbench/__init__.py` is left out: it wires the layers' study checks together.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xkdbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xkdbench"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "xkdbench":
                found.add(name)
    return found


def test_imports_sees_every_counted_form(tmp_path):
    """The cycle check below is only as good as this parser: an empty graph has no cycles."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import xkdbench.config\n"
        "from xkdbench.losses import jsd\n"
        "from xkdbench.models.batch import Batch\n"
        "def f():\n"
        "    from xkdbench.tasks import get_task\n"
        "if TYPE_CHECKING:\n"
        "    from xkdbench.stages import check\n"
    )
    known = {"xkdbench", "xkdbench.config", "xkdbench.losses", "xkdbench.losses.jsd", "xkdbench.models",
             "xkdbench.models.batch", "xkdbench.tasks", "xkdbench.stages"}
    assert imports(source, known) == {"xkdbench.config", "xkdbench.losses", "xkdbench.losses.jsd",
                                      "xkdbench.models.batch", "xkdbench.tasks"}


def test_no_import_cycles_between_modules():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, set(paths)) - {name} for name, path in paths.items() if name != "xkdbench"}
    # a package's __init__ importing its own submodules is its registration, not a dependency upwards
    for name in graph:
        graph[name] = {d for d in graph[name] if not d.startswith(name + ".")}
    assert "xkdbench.losses._common" in graph["xkdbench.losses.jsd"]  # the graph holds the package's edges
    state, cycle = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycle.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycle, f"import cycles: {cycle[:3]}"


def test_config_imports_no_higher_layer():
    deps = imports(PACKAGE / "config.py", {module_name(p) for p in PACKAGE.rglob("*.py")})
    assert not {d for d in deps if d.split(".")[1] in ("methods", "tasks", "reporting", "core", "cli")}, deps
