"""No import cycle in leffa_pl (the graph of every import statement, function-local ones too), and no import from a
lower layer to a higher one (``leffa_pl.testing.code_shape.LAYERS``)."""

from pathlib import Path

from leffa_pl.testing import code_shape

PACKAGE = Path(__file__).resolve().parents[1] / "leffa_pl"


def import_graph() -> dict[str, set[str]]:
    return code_shape.import_graph(PACKAGE)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return path[path.index(successor):] + [successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_imports():
    graph = import_graph()
    assert "leffa_pl.data.files" in graph["leffa_pl.data.io"]
    assert "leffa_pl.data.registry" in graph["leffa_pl.data.check_data"]


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_upward_import():
    assert code_shape.upward_imports(import_graph()) == []


def test_an_upward_import_is_found_and_the_data_modules_may_use_the_datasets():
    graph = {"leffa_pl.data.io": {"leffa_pl.preprocess.prepare"},
             "leffa_pl.data.datamodule": {"leffa_pl.datasets.vitonhd.reader"},
             "leffa_pl.data.masks": {"leffa_pl.datasets.vitonhd.reader"},
             "leffa_pl.evaluation.score": {"leffa_pl.data.io"}}
    assert code_shape.upward_imports(graph) == [("leffa_pl.data.io", "leffa_pl.preprocess.prepare"),
                                     ("leffa_pl.data.masks", "leffa_pl.datasets.vitonhd.reader")]
