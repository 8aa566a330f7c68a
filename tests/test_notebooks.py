"""The notebook contract: every notebook can be run, parameterised and checked the same way."""

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NB_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
MANIFEST = tomllib.loads((NB_DIR / "manifest.toml").read_text())


def load(path):
    return json.loads(path.read_text())


def _outside_fences(text):
    """Lines of markdown that are not inside ``` code fences (a shell comment is no H1)."""
    inside = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside:
            yield line


def parameter_cells(nb):
    return [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]


def test_there_are_notebooks_and_the_manifest_lists_each_once():
    names = [p.stem for p in NOTEBOOKS]
    listed = [e["name"] for e in MANIFEST["notebooks"]]
    assert names, "no notebooks found"
    assert sorted(listed) == names
    assert len(set(listed)) == len(listed)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_name_is_lowercase_and_numbered(path):
    assert re.fullmatch(r"\d{2}_[a-z0-9_]+\.ipynb", path.name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exactly_one_parameters_cell_with_typed_commented_literals(path):
    nb = load(path)
    cells = parameter_cells(nb)
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged parameters"
    cell = cells[0]
    assert cell["cell_type"] == "code"
    src = "".join(cell["source"])
    tree = ast.parse(src)
    names = []
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign), (
            f"{path.name}: not `name: type = value`: {ast.unparse(node)}"
        )
        assert isinstance(node.value, ast.Constant), (
            f"{path.name}: {ast.unparse(node)} is not a literal"
        )
        names.append(node.target.id)
    for line in src.splitlines():
        if line.strip():
            assert "  # " in line, f"{path.name}: parameter line without a comment: {line}"
    assert "results_path" in names and "smoke" in names and "model" in names


def _bound_names(tree: ast.AST) -> list[tuple[str, int]]:
    """Return (name, line) of every name a piece of code binds or deletes at any depth.

    Assignments of every kind (``=``, ``+=``, annotated, tuple targets, ``for`` and
    ``with ... as`` targets, ``:=``), ``del``, imports and ``def``/``class`` names.
    """
    bound = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.append((node.id, node.lineno))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.append(((alias.asname or alias.name).split(".")[0], node.lineno))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.append((node.name, node.lineno))
    return bound


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_are_not_reassigned_before_use(path):
    """No untagged cell sets a parameter again, not even under ``if smoke:``.

    A reassigned parameter beats papermill's value, and the results record would then
    hold a value the runner did not inject (its parameters check fails, e.g. with
    ``-p smoke true``). A notebook derives a new name instead.
    """
    nb = load(path)
    params_src = "".join(parameter_cells(nb)[0]["source"])
    names = {n.target.id for n in ast.parse(params_src).body}
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        for name, line in _bound_names(ast.parse("".join(cell["source"]))):
            assert name not in names, (
                f"{path.name}: cell {index}, line {line} reassigns parameter {name}; derive "
                f"a new name instead (e.g. answer_tokens = min(max_tokens, 16) if smoke else "
                f"max_tokens), so the record keeps the injected value"
            )


def test_reassignment_check_sees_every_kind_of_binding():
    code = (
        "a = 1\nb += 1\nc: int = 2\nd, (e, f) = g\nfor h in g: pass\nwith g as i: pass\n"
        "(j := 3)\ndel k\nimport l\nfrom m import n as o\ndef p(q): r = 1\nclass s: pass\n"
        "if smoke:\n    t = 1\n"
    )
    names = {name for name, _ in _bound_names(ast.parse(code))}
    assert names == set("abcdefhijklopqrst") - {"q"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_generic_kernel_no_outputs_and_opening(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name} has outputs in git"
            assert cell["execution_count"] is None
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith("# ")
    assert "What you will learn" in first and "Prerequisites" in first
    h1 = [
        line
        for c in nb["cells"]
        if c["cell_type"] == "markdown"
        for line in _outside_fences("".join(c["source"]))
        if line.startswith("# ")
    ]
    assert len(h1) == 1, f"{path.name}: one H1 expected"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_help_notebook_documents_every_parameter(path):
    import papermill

    params = papermill.inspect_notebook(str(path))
    assert params
    for name, info in params.items():
        assert info["inferred_type_name"] not in ("None", ""), f"{name} has no type"
        assert info["help"], f"{name} has no help text"


@pytest.mark.notebook
def test_injected_model_is_the_one_used(tmp_path):
    """C08: a sentinel model injected by papermill must reach the engine (and be refused)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    sentinel = "sentinel-model-c08"
    with pytest.raises(PapermillExecutionError) as info:
        papermill.execute_notebook(
            str(NB_DIR / "01_single_image.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={
                "model": sentinel,
                "device": "auto",
                "results_path": str(tmp_path / "r.json"),
            },
            kernel_name="python3",
            cwd=str(NB_DIR),
            progress_bar=False,
        )
    assert info.value.ename == "ValueError"
    assert sentinel in info.value.evalue and "internvl3-8b" in info.value.evalue
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    injected = [
        c
        for c in executed["cells"]
        if "injected-parameters" in c.get("metadata", {}).get("tags", [])
    ]
    assert len(injected) == 1 and sentinel in "".join(injected[0]["source"])
