"""The package's shape (docs/architecture.md): no import cycles, the web framework stays in
the HTTP and API layers, and no module grows past what one reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "locallab_cpp"
MAX_LINES = 450
FRAMEWORK_FREE = ("locallab_cpp.engine", "locallab_cpp.models", "locallab_cpp.errors",
                  "locallab_cpp.config", "locallab_cpp.serving")  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _top_level_imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Modules imported when ``name`` is imported: module-level statements only (imports in
    functions and under ``if TYPE_CHECKING`` run later or never)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            imported.add(base)
            imported.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in imported if m in modules}


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _top_level_imports(path, name, modules) for name, path in modules.items()}
    # A package's __init__ runs before its submodules: importing a.b imports a.
    for name in modules:
        parent = name.rpartition(".")[0]
        if parent in modules:
            graph[name].add(parent)
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == node:
                continue
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("prefix", FRAMEWORK_FREE)
def test_core_does_not_import_the_web_framework(prefix: str) -> None:
    for name, path in _modules().items():
        if name != prefix and not name.startswith(prefix + "."):
            continue
        source = path.read_text(encoding="utf-8")
        for word in ("litestar", "uvicorn", "starlette"):
            assert f"import {word}" not in source and f"from {word}" not in source, (
                f"{name} imports {word}: the engine and the core must not know the framework"
            )


def test_serving_never_imports_an_api() -> None:
    """serving/ is what every API shares: it speaks no wire format, so none may be below it
    (each API maps serving's neutral events to its own shapes)."""
    modules = _modules()
    for name, path in modules.items():
        if name != "locallab_cpp.serving" and not name.startswith("locallab_cpp.serving."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # imports inside functions count too
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for imported in names:
                assert not imported.startswith(("locallab_cpp.api", "locallab_cpp.http")), (
                    f"{name} imports {imported}: serving must not know any API or HTTP"
                )


def test_modules_stay_small() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_registry_ships_inside_the_package() -> None:
    assert (PACKAGE / "models" / "models.toml").is_file()
