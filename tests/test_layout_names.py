"""Each dataset layout's folder and file names are written once, in its reader (``datasets/<name>/reader.py``;
the shared ones in data/layout.py): no other module of the package, the benchmarks or the
experiments spells one in code (docstrings may)."""

import ast
from pathlib import Path

from leffa_pl.data.layout import FLOW_FOLDER
from leffa_pl.datasets.deepfashion import reader as deepfashion
from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.vitonhd import reader as vitonhd

REPO = Path(__file__).resolve().parents[1]
READERS = {*(REPO / "leffa_pl" / "datasets" / name / "reader.py" for name in ("vitonhd", "dresscode", "deepfashion")),
           REPO / "leffa_pl" / "data" / "layout.py"}


def layout_names() -> tuple[set[str], set[str]]:
    """(distinctive names: flagged anywhere in a string; plain words such as ``image``, which are also dict keys:
    flagged as a path component, ``... / "image"``)."""
    names = {FLOW_FOLDER, deepfashion.NESTED_FOLDER, deepfashion.DENSEPOSE_FOLDER, deepfashion.split_folder(""),
             vitonhd.VitonHDPaths(Path()).pair_file("").name, *dresscode.PAIR_FILES.values(),
             *deepfashion.SPLIT_LISTS.values(), *deepfashion.PAIR_FILES.values(),
             *deepfashion.ANNOTATION_FILES.values()}
    for folder, suffix in [*vitonhd.FILES.values(), *dresscode.FILES.values()]:
        names.add(folder)
        if suffix and not suffix.startswith("."):  # a bare extension (.png) says nothing about a layout
            names.add(suffix)
    plain = {name for name in names if name.isalpha()}
    return names - plain, plain


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are statements of their own (docstrings, comments as strings)."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}


def spellings(source: str, where: str, distinctive: set[str], plain: set[str]) -> list[str]:
    tree = ast.parse(source, where)
    skipped = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            found += [f"{where}:{node.lineno}: {name!r}" for name in sorted(distinctive) if name in node.value]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found += [f"{where}:{node.lineno}: / {side.value!r}" for side in (node.left, node.right)
                      if isinstance(side, ast.Constant) and side.value in plain]
    return found


def test_the_names_and_their_spellings_are_found():
    distinctive, plain = layout_names()
    assert {"image-parse-v3", "openpose_json", "_keypoints.json", "label_maps", "_4.png", "ground-truth-flow",
            "_highres", "train.lst", "test_pairs_unpaired.txt", "_pairs.txt"} <= distinctive
    assert {"image", "cloth", "images", "dense", "keypoints", "densepose"} <= plain
    source = '''"""Reads image-parse-v3/ (a docstring may say so)."""
sample = {"image": 1, "densepose": 2}  # plain words as keys are fine
path = root / "image" / f"{stem}_keypoints.json"
'''
    assert sorted(spellings(source, "m.py", distinctive, plain)) == ["m.py:3: '_keypoints.json'", "m.py:3: / 'image'"]


def test_no_module_but_the_readers_spells_a_layout_name():
    distinctive, plain = layout_names()
    modules = [*(REPO / "leffa_pl").rglob("*.py"), *(REPO / "benchmarks").glob("*.py"),
               *(REPO / "experiments").glob("*.py")]
    found = [line for path in sorted(set(modules) - READERS)
             for line in spellings(path.read_text(), str(path.relative_to(REPO)), distinctive, plain)]
    assert found == []
