"""The package's layers, read from its source: every import of an rhvae module points down (or sideways within a
layer), the import graph has no circle, and no rhvae import hides inside a function.

Layers, lowest first: the base (version, validation, paths, files, provenance, signals, history); ``rhvae.models``;
``rhvae.sampling`` and ``rhvae.evaluation``; training and persistence; ``rhvae.experiments``; ``rhvae.interfaces``.
The facade ``rhvae/__init__.py`` (and ``__main__``) gathers the public API and is imported by no module.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rhvae"
LAYERS = [
    {
        "rhvae.version",
        "rhvae.validation",
        "rhvae.paths",
        "rhvae.files",
        "rhvae.provenance",
        "rhvae.signals",
        "rhvae.history",
    },
    {"rhvae.models"},
    {"rhvae.sampling", "rhvae.evaluation"},
    {"rhvae.training", "rhvae.persistence", "rhvae.shipped"},
    {"rhvae.experiments"},
    {"rhvae.interfaces"},
]
FACADE = {"rhvae", "rhvae.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    for rank, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported rhvae module, line, inside a function) for every import of the file outside ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, nested) for a in child.names if a.name.split(".")[0] == "rhvae")
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}:{child.lineno}: relative import (use rhvae.… paths)"
                if (child.module or "").split(".")[0] == "rhvae":
                    for alias in child.names:  # "from rhvae.experiments import runs" imports a module
                        sub = f"{child.module}.{alias.name}"
                        found.append((sub if sub in MODULES else child.module, child.lineno, nested))
            visit(child, nested)

    visit(tree, False)
    return found


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        if name not in FACADE and name != "rhvae.__main__":
            layer(name)


@pytest.mark.parametrize("name", sorted(set(MODULES) - FACADE))
def test_imports_point_down_and_not_from_inside_functions(name):
    for target, line, in_function in GRAPH[name]:
        where = f"{MODULES[name]}:{line}"
        assert target not in FACADE, f"{where} imports the facade {target}: import the module that defines the name"
        assert layer(target) <= layer(name), f"{where}: {name} (layer {layer(name)}) imports {target} ({layer(target)})"
        assert not in_function, f"{where}: import of {target} inside a function (hoist it to the top)"


def test_the_import_graph_has_no_circle():
    edges = {name: {t for t, *_ in GRAPH[name] if t in MODULES and t != name} for name in MODULES}
    state: dict[str, int] = {}

    def walk(node, path):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node, [node])


def test_the_layering_check_can_fail(tmp_path):
    """The checks above on a made-up upward import and a made-up circle."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rhvae.interfaces import cli\n")
    ((target, _, in_function),) = imports(bad)
    assert target == "rhvae.interfaces.cli" and in_function and layer(target) > layer("rhvae.models.vae")
