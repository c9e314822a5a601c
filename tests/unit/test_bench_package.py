"""The benchmark scripts' shape: scripts/bench/ is a package of small modules that import
each other without cycles (imports inside functions count too: a late import back into a
module that imported you is a cycle all the same; those for type checkers only do not), and
the commands in scripts/ only import it."""

from __future__ import annotations

import ast
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {path.stem: path for path in SCRIPTS.glob("*.py")}
    found["bench"] = SCRIPTS / "bench" / "__init__.py"  # the package wins over bench.py
    for path in (SCRIPTS / "bench").glob("*.py"):
        if path.stem != "__init__":
            found[f"bench.{path.stem}"] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every import of the file, in functions too, but not under ``if TYPE_CHECKING``
    (annotations only: never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in imported if m in modules}


def test_no_import_cycles_among_the_scripts() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    for name in modules:
        if name.startswith("bench."):
            graph[name].add("bench")
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert graph["bench.cli"], "the graph found no imports at all"
    assert not cycles, f"import cycles: {cycles}"


def test_bench_modules_stay_small() -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in (SCRIPTS / "bench").glob("*.py")
    }
    assert len(sizes) >= 5, sizes
    long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_commands_are_thin() -> None:
    """bench.py and the other entries hold no benchmark code of their own."""
    for name in ("bench.py", "bench_agent.py", "bench_editor.py"):
        text = (SCRIPTS / name).read_text(encoding="utf-8")
        assert "from bench." in text, name
        assert len(text.splitlines()) < 40, name
