"""The core imports one way: types.py and pure.py use the standard library (and each other) only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "otel_wsgi"
# What each core module may import beyond the standard library.
ALLOWED = {
    "types.py": set(),
    "semconv.py": set(),
    "values.py": {"otel_wsgi.types"},
    "naming.py": {"otel_wsgi.types", "otel_wsgi.values"},
    "memo.py": {"otel_wsgi.types"},
    "finish.py": {
        "otel_wsgi",
        "otel_wsgi.types",
        "otel_wsgi.semconv",
        "otel_wsgi.values",
        "otel_wsgi.naming",
        "otel_wsgi.config",
    },
    "pure.py": {
        "otel_wsgi",
        "otel_wsgi.memo",
        "otel_wsgi.types",
        "otel_wsgi.semconv",
        "otel_wsgi.values",
        "otel_wsgi.naming",
        "otel_wsgi.finish",
        "otel_wsgi.config",
    },
    "cli/decide.py": set(),  # the command's decisions: table-tested, no SDK, no I/O
}
FORBIDDEN_IN_PURE = {"os", "time", "logging", "opentelemetry"}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_core_imports_only_the_standard_library(module: str) -> None:
    modules = imported_modules(PACKAGE / module)
    outside = {
        name
        for name in modules
        if name.split(".")[0] not in sys.stdlib_module_names and name not in ALLOWED[module]
    }
    assert outside == set()


@pytest.mark.parametrize(
    "module", ["pure.py", "values.py", "naming.py", "finish.py", "memo.py", "types.py", "cli/decide.py"]
)
def test_core_never_imports_io_clock_or_logging(module: str) -> None:
    roots = {name.split(".")[0] for name in imported_modules(PACKAGE / module)}
    assert roots & FORBIDDEN_IN_PURE == set()


def test_the_layering_check_sees_imports() -> None:
    # Guard against a vacuous pass: the effects module does import opentelemetry.
    assert "opentelemetry" in {name.split(".")[0] for name in imported_modules(PACKAGE / "effects.py")}


def test_the_middleware_never_imports_the_sdk() -> None:
    """`wrap()` needs only opentelemetry-api: importing the package, pure and effects loads no SDK module
    (checked in a fresh interpreter, where nothing else has imported it)."""
    probe = (
        "import sys, otel_wsgi, otel_wsgi.pure, otel_wsgi.effects, otel_wsgi.config\n"
        "sdk = ('opentelemetry.sdk', 'opentelemetry.exporter')\n"
        "print(sorted(name for name in sys.modules if name.startswith(sdk)))\n"
        "print('opentelemetry.trace' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split("\n")[:2] == ["[]", "True"]


def package_imports() -> dict[str, set[str]]:
    """Each package module's imports of other package modules, type-only ones included."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        name = f"otel_wsgi.{path.stem}"
        graph[name] = {module for module in imported_modules(path) if module.startswith("otel_wsgi.")}
    return graph


def test_package_has_no_import_cycle() -> None:
    graph = package_imports()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in graph.get(module, set()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert "otel_wsgi.effects" not in graph["otel_wsgi.metrics"]
