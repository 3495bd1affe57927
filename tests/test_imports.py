"""The modules of src/ import one another in one direction: no cycle, through a package's `__init__` or a
function-level import included (docs/architecture.md draws the arrows)."""

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, package: str = "peftbench") -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports anywhere in its body. `from a.b import c` imports a.b,
    or only the module a.b.c when c is one; importing a.b.c also runs the `__init__` of its subpackage a.b,
    except from inside a.b, whose `__init__` has run before any of its modules. The top package's `__init__`
    (the public API, run by every import of the package) is an edge only where a module imports from it by name."""
    files = {module_name(path, root): path for path in (root / package).rglob("*.py")}
    packages = {name for name, path in files.items() if path.name == "__init__.py"}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        here = name if name in packages else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                modules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in files]
                targets = modules + ([base] if len(modules) < len(node.names) else [])
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for depth in range(1, len(parts) + 1):  # a.b.c runs a.b's __init__ before it
                    prefix = ".".join(parts[:depth])
                    own_package = name.startswith(prefix + ".")  # its __init__ has run before this module
                    if prefix in files and prefix != name and not own_package and (depth > 1 or depth == len(parts)):
                        graph[name].add(prefix)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring modules on the current path)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_src():
    cycle = find_cycle(import_graph(SOURCE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found(tmp_path):
    """The check itself: a cycle through a package's __init__ and a function-level import is caught."""
    package = tmp_path / "peftbench"
    (package / "report").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "report" / "__init__.py").write_text("from peftbench.report.summary import blocks\n")
    (package / "report" / "summary.py").write_text("def blocks():\n    from peftbench import recommend\n")
    (package / "report" / "stats.py").write_text("")
    (package / "recommend.py").write_text("from .report import stats\n")
    assert find_cycle(import_graph(tmp_path)) == ["peftbench.recommend", "peftbench.report",
                                                  "peftbench.report.summary", "peftbench.recommend"]
    (package / "report" / "summary.py").write_text("def blocks():\n    pass\n")
    assert find_cycle(import_graph(tmp_path)) is None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


# What a report must not need: it reads every fact from the stored rows (peftbench.run_facts.RunFacts).
MODEL_SIDE = ("peftbench.models", "peftbench.evaluate", "peftbench.methods", "peftbench.accounting",
              "peftbench.execution", "peftbench.train", "peftbench.baselines")


def test_the_report_and_recommend_read_rows_and_import_no_model_code():
    graph = import_graph(SOURCE)
    readers = [name for name in graph if name.startswith(("peftbench.report", "peftbench.recommend"))]
    assert "peftbench.report.tables" in readers and "peftbench.recommend" in readers
    for name in readers:
        found = sorted(m for m in reachable(graph, name) if m.startswith(MODEL_SIDE))
        assert found == [], f"{name} imports {found}"


def test_every_name_the_benchmark_scripts_import_from_peftbench_exists():
    """The scripts in benchmarks/ import peftbench inside their workers, where no test runs them: a module split
    must not leave them importing names from where they no longer are."""
    import importlib

    missing = []
    for path in sorted((SOURCE.parent / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "peftbench":
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{alias.name}" for alias in node.names
                            if not hasattr(module, alias.name)]
    assert missing == []
