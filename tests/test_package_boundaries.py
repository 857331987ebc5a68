"""Who may import whom: the emulator stands apart from the gateway it checks; testbed/ (what tests and bench
share) and bench/ apart from tests/, and tests apart from bench/, from their own conftest and from each
other; the gateway is layered: `service/` on `backends/` on `common/`, no package importing one above it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GATEWAY_PACKAGES = frozenset({"backends", "common", "service", "tests"})


def _imports(package: str, *, whole: bool = False) -> dict[str, set[str]]:
    """Every import, lazy and relative ones included, of each module under `package`: file -> top-level
    names (`whole`: full dotted names, `from a import b` naming both `a` and `a.b`, as b may be a module)."""
    found: dict[str, set[str]] = {}
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        relative = path.relative_to(PROJECT_ROOT)
        modules: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _import_source(relative, node)
                modules.add(source)
                modules.update(f"{source}.{alias.name}" for alias in node.names)
        found[str(relative)] = modules if whole else {module.split(".")[0] for module in modules}
    return found


def _import_source(path: Path, node: ast.ImportFrom) -> str:
    """The full dotted name of the module a `from ... import` in the file `path` reads from."""
    package = path.parent.parts[: len(path.parent.parts) + 1 - node.level] if node.level else ()
    return ".".join((*package, *([node.module] if node.module else [])))


def _is_test_module(name: str) -> bool:
    """`name` is a module of tests/ that pytest collects: a file tests/**/test_*.py."""
    path = PROJECT_ROOT.joinpath(*name.split(".")).with_suffix(".py")
    return name.startswith("tests.") and path.name.startswith("test_") and path.is_file()


def _offenders(package: str, forbidden: frozenset[str]) -> dict[str, list[str]]:
    imports = _imports(package)
    assert imports, f"no modules found under {package}/"
    return {path: sorted(names & forbidden) for path, names in imports.items() if names & forbidden}


def test_emulator_source_imports_nothing_from_the_gateway_or_tests() -> None:
    assert _offenders("emulator", GATEWAY_PACKAGES) == {}


def test_running_the_emulator_loads_no_gateway_module() -> None:
    # The process `python -m emulator` runs, up to parsing its arguments: what a user actually loads.
    script = (
        "import json, sys, emulator, emulator.__main__\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    top_level = set(json.loads(loaded.stdout))
    assert "emulator" in top_level
    assert top_level.isdisjoint(GATEWAY_PACKAGES)


def test_bench_imports_nothing_from_tests() -> None:
    assert _offenders("bench", frozenset({"tests"})) == {}


def test_common_imports_neither_the_backends_nor_the_service() -> None:
    assert _offenders("common", frozenset({"backends", "service", "tests", "bench"})) == {}


def test_backends_import_nothing_from_the_service() -> None:
    assert _offenders("backends", frozenset({"service", "tests", "bench"})) == {}


def test_testbed_imports_nothing_from_tests_or_bench() -> None:
    assert _offenders("testbed", frozenset({"tests", "bench"})) == {}


# The bench's own unit tests: they test bench/, not the gateway with bench's helpers.
BENCH_TESTS = frozenset(
    {"tests/unit/test_bench_parts.py", "tests/unit/test_efficiency_ab.py", "tests/test_bench_senders.py"}
)


def test_tests_borrow_nothing_from_bench() -> None:
    assert set(_offenders("tests", frozenset({"bench"}))) <= BENCH_TESTS


def test_tests_import_nothing_from_their_conftest() -> None:
    # Fixtures reach tests through pytest; what tests import lives in tests/support.
    importers = [
        path for path, modules in _imports("tests", whole=True).items() if "tests.conftest" in modules
    ]
    assert importers == []


def test_no_test_module_imports_another() -> None:
    # What test modules share lives in tests/support, named for its concern: renaming or splitting a test
    # module breaks no other.
    importers = {
        path: sorted(filter(_is_test_module, modules))
        for path, modules in _imports("tests", whole=True).items()
    }
    assert {path: modules for path, modules in importers.items() if modules} == {}
