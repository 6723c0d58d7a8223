"""The package's import structure (issue 17, item 4).

* ``import fusedmlp`` imports none of the optional packages (scikit-learn, SciPy, matplotlib,
  tqdm, CuPy, onnx, optuna, pandas, polars, torch): they are imported where used
  (``fm.sklearn`` and ``fm.preprocessing`` on first attribute access).
* The module-level imports between fusedmlp's own modules form no cycle. Module-level only:
  the function-level imports that today break cycles (callbacks -> diagnostics) are the
  next step of issue 17.
* Every public module imports on its own in a fresh interpreter.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import fusedmlp
import pytest

PKG_DIR = Path(fusedmlp.__file__).resolve().parent
OPTIONAL = (
    "sklearn",
    "scipy",
    "matplotlib",
    "tqdm",
    "cupy",
    "torch",
    "pandas",
    "onnx",
    "onnxruntime",
    "optuna",
    "polars",
    "mpi4py",
)


def _run(code: str) -> str:
    env = dict(os.environ)
    # the same fusedmlp as this process (a source tree on PYTHONPATH or the installed package)
    env["PYTHONPATH"] = os.pathsep.join([str(PKG_DIR.parent), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_fusedmlp_pulls_in_no_optional_package():
    out = _run(
        "import sys, fusedmlp\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({OPTIONAL!r})))"
    )
    assert out.strip() == "[]", f"import fusedmlp imported {out.strip()}"


def test_lazy_modules_load_on_first_use():
    pytest.importorskip("sklearn")
    out = _run(
        "import sys, fusedmlp as fm\n"
        "assert 'sklearn' not in sys.modules\n"
        "print(fm.sklearn.MLPClassifier.__name__, fm.preprocessing.StandardScaler.__name__)"
    )
    assert out.split() == ["MLPClassifier", "StandardScaler"]


def _module_level_imports() -> dict[str, set[str]]:
    """{module: fusedmlp modules it imports at module level (not inside functions)}."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PKG_DIR.glob("*.py")):
        name = path.stem
        tree = ast.parse(path.read_text(), filename=str(path))
        deps: set[str] = set()
        for node in tree.body:  # module level only; if/try blocks at module level count too
            for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
                if isinstance(sub, ast.ImportFrom) and sub.level == 1:
                    if sub.module:
                        deps.add(sub.module.split(".")[0])
                    else:
                        deps.update(a.name for a in sub.names)
                elif isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("fusedmlp."):
                    deps.add(sub.module.split(".")[1])
        graph[name] = {d for d in deps if (PKG_DIR / f"{d}.py").exists() and d != name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_module_level_imports_have_no_cycle():
    graph = _module_level_imports()
    assert "ops" in graph and "trainer" in graph  # the scan found the package
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "module",
    sorted(
        p.stem
        for p in PKG_DIR.glob("*.py")
        if not p.stem.startswith("_") and p.stem not in ("sklearn", "preprocessing")
    ),
)
def test_each_public_module_imports_alone(module):
    _run(f"import fusedmlp.{module}")


# --- the test suite's own structure (issue 17, item 5): shared case tables and finite-difference
# helpers live in tests/reference/, so no test module imports another: each family's file stands
# alone, and a table shared by several families has one home.
TESTS_DIR = Path(__file__).resolve().parent


def _imported_test_modules(source: str) -> set[str]:
    """The test_* modules that ``source`` imports, at any depth (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # "from . import test_x" names the module last
            names = [node.module] if node.module else [a.name for a in node.names]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0].startswith("test_"))
    return found


def test_no_test_module_imports_another():
    paths = sorted(TESTS_DIR.glob("test_*.py"))
    assert len(paths) > 10  # the scan found the suite
    bad = {
        p.name: sorted(found)
        for p in paths
        if (found := _imported_test_modules(p.read_text(encoding="utf-8")))
    }
    assert not bad, (
        f"test modules importing other test modules (move shared code to reference/): {bad}"
    )


def test_test_import_scan_finds_planted_imports():
    assert _imported_test_modules("import test_loss as t\nfrom test_optimizer import CASES\n") == {
        "test_loss",
        "test_optimizer",
    }
    assert _imported_test_modules("def f():\n    from test_x.y import z\n") == {"test_x"}
    assert _imported_test_modules("from . import test_z, conftest\n") == {"test_z"}
    src = "from reference.optimizer_cases import CASES\nimport pytest\nfrom conftest import TOL\n"
    assert _imported_test_modules(src) == set()
