"""No module outside ``leffa_pl/datasets/`` switches on a dataset's name: no comparison with a registered name
(``==``, ``!=``, ``in``, ``is``) and no table keyed by one; commands ask the dataset's ``DatasetSpec`` instead."""

import ast
from pathlib import Path

from leffa_pl.datasets import registry

PACKAGE = Path(__file__).resolve().parents[1] / "leffa_pl"
DATASETS = PACKAGE / "datasets"


def _constants(node: ast.AST) -> list[ast.Constant]:
    """The string constants of a compared operand, looking into literal tuples, lists and sets."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [constant for element in node.elts for constant in _constants(element)]
    return []


def name_switches(source: str, where: str, names: set[str]) -> list[str]:
    """``where:line: how 'name'`` for each registered name compared with or used as a dict key in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.Compare):
            operands, how = [node.left, *node.comparators], "compared with"
        elif isinstance(node, ast.Dict):
            operands, how = [key for key in node.keys if key is not None], "dict key"
        elif isinstance(node, ast.DictComp):
            operands, how = [node.key], "dict key"
        else:
            continue
        found += [f"{where}:{constant.lineno}: {how} {constant.value!r}"
                  for operand in operands for constant in _constants(operand) if constant.value in names]
    return found


def test_the_scanner_finds_comparisons_and_tables():
    names = {"vitonhd", "deepfashion"}
    source = '''
if dataset == "vitonhd":
    pass
order = 1 if "deepfashion" != layout else 2
known = dataset in ("vitonhd", "other")
RESOLUTION = {"vitonhd": (1024, 768), "something": 1}
fine = registry.get("vitonhd").title, "vitonhd"  # a lookup or a value is no switch
'''
    assert sorted(name_switches(source, "m.py", names)) == [
        "m.py:2: compared with 'vitonhd'", "m.py:4: compared with 'deepfashion'", "m.py:5: compared with 'vitonhd'",
        "m.py:6: dict key 'vitonhd'"]
    assert name_switches('{"deepfashion": v for v in x}', "m.py", names) == ["m.py:1: dict key 'deepfashion'"]


def test_the_scanner_would_catch_a_switch_added_to_evaluate():
    evaluate = PACKAGE / "evaluation" / "evaluate.py"
    changed = evaluate.read_text() + '\n\ndef resolution(dataset):\n    return 1 if dataset == "vitonhd" else 2\n'
    assert len(name_switches(changed, "evaluate.py", set(registry.names()))) == 1


def test_no_dataset_name_switch_outside_the_datasets_package():
    names = set(registry.names())
    assert {"vitonhd", "dresscode", "deepfashion"} <= names
    found = [line for path in sorted(PACKAGE.rglob("*.py")) if not path.is_relative_to(DATASETS)
             for line in name_switches(path.read_text(), str(path.relative_to(PACKAGE.parent)), names)]
    assert found == []
