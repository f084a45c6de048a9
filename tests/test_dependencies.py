"""Declared dependencies are exactly what the code imports: nothing imported undeclared, nothing declared unused."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from fnmatch import fnmatch
from importlib.metadata import packages_distributions
from pathlib import Path

from conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
FIRST_PARTY = {"secureml"}
# Test requirements used without an import from tests/, and how they are used.
USED_WITHOUT_IMPORT = {
    "pytest-timeout": "a pytest plugin, loaded by its entry point (the timeout setting and marks)",
    "moto": "tests/support/s3.py has scripts/s3-local run moto's S3 server (a subprocess) for the S3 tests",
    "duckdb-cli": "the duckdb program beside the interpreter, which tests/test_lake.py runs on the catalog",
    "starlette": "the web framework of the explorer the ui tests serve (the ui extra)",
    "jinja2": "the templates of the explorer the ui tests serve (the ui extra)",
}
# Optional extras of the package -> the only folder whose code may import them (lazily, with an install hint).
EXTRA_CODE = {"ui": "consumers/secureml/ui"}
# Modules built from this repository (pip install ./native), never from a registry, so in no requirement list ->
# the only files that may import them (the package behind a pure-Python fallback).
# The modules built from this repository and the files that may import them (glob patterns): the package reaches the
# accelerator only through accelerator.py; its own tests import it directly.
LOCAL_BUILDS = {"secureml_audit_native": ("producer/secureml/audit/accelerator.py", "tests/test_native*.py")}


def normalised(name: str) -> str:
    """A distribution name normalised per PEP 503 (PyYAML -> pyyaml, confluent_kafka -> confluent-kafka)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: Iterable[str]) -> set[str]:
    """The normalised distribution names of PEP 508 requirement strings ("moto[server]>=5.0" -> moto)."""
    names = set()
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        assert match, f"unparsable requirement {requirement!r} in pyproject.toml"
        names.add(normalised(match.group(1)))
    return names


def names_type_checking(test: ast.expr) -> bool:
    """True for the condition of `if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:` (such imports never run)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(nodes: Iterable[ast.AST]) -> Iterator[str]:
    """Top-level names of the absolute imports in nodes that can run, lazy ones in functions included."""
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0]
        elif isinstance(node, ast.If) and names_type_checking(node.test):
            yield from runtime_imports(node.orelse)
        else:
            yield from runtime_imports(ast.iter_child_nodes(node))


def third_party_imports(roots: Iterable[Path], local: frozenset[str] = frozenset()) -> dict[str, set[str]]:
    """Each third-party module imported by the .py files under roots -> the files importing it."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for module in runtime_imports([ast.parse(path.read_text(encoding="utf-8"), str(path))]):
                if module not in sys.stdlib_module_names and module not in FIRST_PARTY | local:
                    found.setdefault(module, set()).add(str(path.relative_to(REPO)))
    return found


def distributions_of(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Normalised distribution name -> the files importing a module it provides; fails on a module none provides."""
    providers = packages_distributions()
    unprovided = {module: files for module, files in modules.items() if module not in providers}
    assert not unprovided, f"imported, but no installed distribution provides them: {unprovided}"
    found: dict[str, set[str]] = {}
    for module, files in modules.items():
        for distribution in providers[module]:
            found.setdefault(normalised(distribution), set()).update(files)
    return found


def without_local_builds(imported: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imported modules less the LOCAL_BUILDS, failing when a file outside their allowed ones imports one."""
    for module, allowed in LOCAL_BUILDS.items():
        outside = sorted(f for f in imported.get(module, set()) if not any(fnmatch(f, p) for p in allowed))
        assert not outside, f"{module} (built from this repository) is imported outside {sorted(allowed)}: {outside}"
    return {module: files for module, files in imported.items() if module not in LOCAL_BUILDS}


def test_dependencies_are_exactly_what_the_package_imports() -> None:
    """[project].dependencies names every distribution producer/ and consumers/ import, and no other."""
    imported = distributions_of(without_local_builds(third_party_imports([REPO / "producer", REPO / "consumers"])))
    declared = requirement_names(PROJECT["dependencies"])
    for extra, folder in EXTRA_CODE.items():
        for name in requirement_names(PROJECT["optional-dependencies"][extra]):
            outside = sorted(f for f in imported.pop(name, set()) if not f.startswith(folder + "/"))
            assert not outside, f"{name} (extra {extra!r}) is imported outside {folder}: {outside}"
    undeclared = {name: sorted(files) for name, files in imported.items() if name not in declared}
    assert not undeclared, f"imported but not in [project].dependencies: {undeclared}"
    assert not declared - imported.keys(), f"in [project].dependencies but never imported: {declared - imported.keys()}"


def test_test_extra_covers_what_the_tests_import() -> None:
    """The test extra plus the dependencies provide every test import; the extra holds nothing the tests never use."""
    tests = REPO / "tests"
    local = frozenset(Path(path.relative_to(tests).parts[0]).stem for path in tests.rglob("*.py"))  # conftest, support
    imported = distributions_of(without_local_builds(third_party_imports([tests], local)))
    declared = requirement_names(PROJECT["dependencies"])
    test_extra = requirement_names(PROJECT["optional-dependencies"]["test"])
    undeclared = {name: sorted(files) for name, files in imported.items() if name not in declared | test_extra}
    assert not undeclared, f"imported by tests but in neither the dependencies nor the test extra: {undeclared}"
    assert USED_WITHOUT_IMPORT.keys() <= test_extra, "USED_WITHOUT_IMPORT names a requirement the extra dropped"
    unused = test_extra - imported.keys() - USED_WITHOUT_IMPORT.keys()
    assert not unused, f"in the test extra but never imported by tests/: {unused}"
