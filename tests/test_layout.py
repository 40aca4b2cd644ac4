"""The package's shape: imports point one way, nothing is imported inside a function but optional
packages, and importing minigrad changes nothing in the process."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "minigrad"
# The readable core and the speed layer, each importing only modules to its left (STYLE.md's layout).
CHAIN = ["backend", "tensor", "ops", "kernels", "dispatch", "functional", "nn", "gpt"]
# What a function may import when it runs: packages minigrad works without.
OPTIONAL = {"cupy", "cupyx", "mpi4py", "matplotlib", "graphviz"}


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(node, known):
    """The minigrad modules and the top-level packages one import statement (or import_module call) names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        names = [n for n in names if n in known or n == node.module]
    elif isinstance(node, ast.Call) and ast.unparse(node.func) == "importlib.import_module":
        names = [node.args[0].value] if isinstance(node.args[0], ast.Constant) else ["<computed>"]
    else:
        return []
    return names


def import_graph():
    """minigrad module -> the minigrad modules it imports (the package __init__ aside: it only re-exports)."""
    trees = modules()
    graph = {}
    for name, tree in trees.items():
        edges = set()
        for node in ast.walk(tree):
            for target in imported_names(node, trees):
                if target in trees and target != "minigrad" and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def test_imports_have_no_cycle():
    graph = import_graph()
    state = {}  # name -> "open" while its imports are being followed, "done" after

    def visit(name, path):
        if state.get(name) == "open":
            cycle = path[path.index(name):] + [name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if state.get(name) == "done":
            return
        state[name] = "open"
        for target in sorted(graph[name]):
            visit(target, path + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_the_core_and_the_speed_layer_import_only_downwards():
    graph = import_graph()
    for i, name in enumerate(CHAIN):
        above = {f"minigrad.{m}" for m in CHAIN[i + 1:]}
        assert not graph[f"minigrad.{name}"] & above, f"minigrad.{name} imports {graph[f'minigrad.{name}'] & above}"


def test_no_import_inside_a_function_but_of_optional_packages():
    trees = modules()
    for name, tree in trees.items():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                for target in imported_names(node, trees):
                    assert target.partition(".")[0] in OPTIONAL, (
                        f"{name}.{fn.name} imports {target} inside the function; import it at the top")


def test_the_checks_above_see_an_import_inside_a_function():
    """The scan reads what it should: a function importing minigrad.tensor is found."""
    tree = ast.parse("def f():\n    from minigrad import tensor\n    import importlib\n    importlib.import_module('numpy')\n")
    found = [t for node in ast.walk(tree) for t in imported_names(node, {"minigrad.tensor": None})]
    assert found == ["minigrad", "minigrad.tensor", "importlib", "numpy"]


@pytest.mark.parametrize("numpy_first", [True, False], ids=["numpy imported first", "minigrad imported first"])
def test_importing_minigrad_changes_no_environment_variable(numpy_first):
    """In a fresh process, os.environ is the same after `import minigrad` as before, whichever comes first."""
    code = (f"import json, os{', numpy' if numpy_first else ''}\nbefore = dict(os.environ)\n"
            "import minigrad, minigrad.functional, minigrad.gpt\nafter = dict(os.environ)\n"
            "print(json.dumps({k: [before.get(k), after.get(k)] for k in before.keys() | after.keys() "
            "if before.get(k) != after.get(k)}))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    changed = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                        env=env).stdout)
    assert changed == {}, f"import minigrad changed the environment: {changed}"
