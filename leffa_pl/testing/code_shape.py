"""The code's shape, read from the source without importing it: the import graph of ``leffa_pl`` (function-local
imports too), its layers, upward imports, and the sizes a refactor is judged by (files, lines, longest function,
README lines). ``tests/test_import_graph.py`` holds the graph to no cycles and no new upward import; run on any
checkout (an old commit via ``git worktree``) for before/after numbers:

    python -m leffa_pl.testing.code_shape --root CHECKOUT
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

# One layer per top-level part of leffa_pl; a lower layer does not import a higher one.
LAYERS = {
    "__init__": 0, "atomic_write": 0, "exit_codes": 0, "revision": 0,
    "model": 1, "metrics": 1, "losses": 1,
    "data": 2, "annotators": 3, "datasets": 4, "preprocess": 5, "training": 6, "callbacks": 6,
    "evaluation": 7, "inference": 8, "config": 9, "planning": 10, "cli": 11, "testing": 12,
}
# data/ holds the base pieces the datasets build on and, at the class paths configs, checkpoints and exports
# record, the data modules and data commands that use the datasets: those may import leffa_pl.datasets.
DATASET_USERS_IN_DATA = ("datamodule", "check_data", "make_synthetic", "mixed", "registry")


def module_name(package: Path, path: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """{module: the leffa_pl modules it imports}; ``from a import b`` is an edge to ``a.b`` and to ``a``."""
    modules = {module_name(package, path): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            else:
                continue
            graph[name].update(target for target in targets if target in modules and target != name)
    return graph


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Edges from a lower layer to a higher one, except the data modules' use of the datasets."""
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if LAYERS[part(a)] < LAYERS[part(b)]
                  and not (a.split(".")[1:3] in (["data", user] for user in DATASET_USERS_IN_DATA)
                           and part(b) == "datasets"))


def longest_function(package: Path) -> tuple[int, str]:
    best = (0, "")
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                best = max(best, (node.end_lineno - node.lineno + 1, f"{path.relative_to(package.parent)}:{node.name}"))
    return best


def count_lines(paths) -> int:
    return sum(len(path.read_text().splitlines()) for path in paths)


def report(root: Path) -> list[str]:
    package = root / "leffa_pl"
    graph = import_graph(package)
    edges = [(a, b) for a, targets in graph.items() for b in targets]
    crossing = {(part(a), part(b)) for a, b in edges if part(a) != part(b)}
    mutual = sorted({tuple(sorted(pair)) for pair in crossing if pair[::-1] in crossing})
    upward = upward_imports(graph)
    length, where = longest_function(package)
    lines = [f"{name}: {len(files)} files, {count_lines(files)} lines"
             for name in ("leffa_pl", "tests", "benchmarks") for files in [sorted((root / name).rglob("*.py"))]]
    return lines + [
        f"import edges inside leffa_pl: {len(edges)}",
        f"upward imports: {len(upward)}" + "".join(f"\n  {a} -> {b}" for a, b in upward),
        f"parts of leffa_pl importing each other: {len(mutual)} {mutual}",
        f"longest function: {length} lines ({where})",
        f"README.md: {len((root / 'README.md').read_text().splitlines())} lines",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the checkout to measure (default: here)")
    print("\n".join(report(parser.parse_args().root)))


if __name__ == "__main__":
    main()
