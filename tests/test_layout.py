"""The shape of the package: data flows one way, rules stay pure, developer tools stay out.

Every import of every module under src/ringback (function-level imports included) is
read with `ast`; each subpackage (or top-level module) gets a layer, and a package may
import only packages of a lower layer. That rules out import cycles between packages
and any module reaching back upstream (the sinks importing the stream worker, the
console importing the sinks, ...).
"""

from __future__ import annotations

import ast
from collections import defaultdict

from tests.conftest import REPO

PACKAGE = REPO / "src" / "ringback"

# Lower layers know nothing of higher ones.
LAYERS = {
    "clock": 0,
    "domain": 0,
    "schemas": 0,  # pure values and rules; the codec
    "config": 1,
    "workflow": 1,  # settings and the practices file; the workflow (pure)
    "observability": 2,  # logs, metrics
    "kafka": 3,  # topics, producer, admin, caches, the Faust app factory
    "sources": 4,
    "worker": 4,
    "sinks": 4,
    "console": 4,
    "report": 4,  # the processes
    "dev": 5,  # local broker, demo, simulator, bench, fakes
    "cli": 6,
    "__main__": 7,  # `python -m ringback`: runs the cli
}
# Pure packages: no broker, no network, no clock of their own.
PURE = ("domain", "workflow")
IO_LIBRARIES = ("faust", "aiokafka", "confluent_kafka", "httpx", "aiohttp", "twilio", "aiosmtplib", "time")


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ringback"


def _imports() -> dict[str, set[tuple[str, str]]]:
    """package -> {(imported module, importing module)}"""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "ringback" else [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                found[_package_of(module)].add((name, module))
    return found


def test_every_package_has_a_layer():
    packages = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")
    }
    assert packages == set(LAYERS), "give every new package a layer in LAYERS"


def test_packages_import_only_lower_layers():
    wrong = []
    for package, imports in _imports().items():
        for imported, importer in imports:
            if not imported.startswith("ringback."):
                continue
            target = _package_of(imported)
            if target != package and LAYERS[target] >= LAYERS[package]:
                wrong.append(
                    f"{importer} imports {imported} ({package} layer {LAYERS[package]} -> "
                    f"{target} layer {LAYERS[target]})"
                )
    assert not wrong, "\n".join(sorted(wrong))


def test_pure_packages_do_no_io():
    wrong = [
        f"{importer} imports {imported}"
        for package in PURE
        for imported, importer in _imports().get(package, ())
        if imported.split(".")[0] in IO_LIBRARIES
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_runtime_never_imports_developer_tools():
    wrong = [
        f"{importer} imports {imported}"
        for package, imports in _imports().items()
        if package not in ("dev", "cli")
        for imported, importer in imports
        if imported.startswith("ringback.dev")
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_only_ringback_is_installed_at_top_level():
    src = REPO / "src"
    top = sorted(p.name for p in src.iterdir() if not p.name.endswith(".egg-info") and p.name != "__pycache__")
    assert top == ["ringback"], top


def _module_graph() -> dict[str, set[str]]:
    """module -> the ringback modules it imports (`from ringback.x import y` names y when y is a module)."""
    paths = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }
    graph: dict[str, set[str]] = {module: set() for module in paths}
    for module, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[module].update(t for t in targets if t in paths and t != module)
    return graph


def test_no_module_imports_itself_back_through_others():
    """No import cycle between modules either (type-only imports included): each module can be
    read knowing only what it imports."""
    graph = _module_graph()
    done: set[str] = set()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(" -> ".join(path[path.index(module) :] + [module]))
            return
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "\n".join(cycles)
