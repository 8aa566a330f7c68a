"""The notebook contract, for every notebook: what a reader and papermill rely on.

Static checks read the committed notebooks; the ``notebook`` tests read what the runner's
cpu run produced (``make test`` runs the notebooks first, see ``conftest.executed``).
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MANIFEST = tomllib.loads((NOTEBOOKS / "manifest.toml").read_text())
NAMES = [entry["name"] for entry in MANIFEST["notebooks"]]
#: Code lines a cell may have: one visible step each.
MAX_CELL_LINES = 14


def _load(name):
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


def _code(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_every_notebook_file_is_in_the_manifest_and_named_lowercase():
    files = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert files == sorted(NAMES)
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+", name) for name in files)


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_opens_with_title_goals_and_prerequisites(name):
    cells = _load(name)["cells"]
    first = "".join(cells[0]["source"])
    assert (
        first.startswith("# ") and "## What you will learn" in first and "## Prerequisites" in first
    )
    prose = "".join(
        re.sub(r"(?s)```.*?```", "", "".join(c["source"])) + "\n"
        for c in cells
        if c["cell_type"] == "markdown"
    )
    titles = [line for line in prose.splitlines() if line.startswith("# ")]
    assert len(titles) == 1


@pytest.mark.parametrize("name", NAMES)
def test_no_outputs_in_git_and_the_generic_kernel(name):
    nb = _load(name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"  # C09
    assert all(
        not c.get("outputs") and not c.get("execution_count")
        for c in nb["cells"]
        if c["cell_type"] == "code"
    )


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_has_its_own_id(name):
    """nbformat 4.5 ids: missing or repeated ones are "corrected" with a warning on every read."""
    ids = [c.get("id") for c in _load(name)["cells"]]
    assert all(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("name", NAMES)
def test_one_parameters_cell_of_typed_literals_with_help(name):
    import papermill

    nb = _load(name)
    tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1  # C08
    inspected = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    assert inspected and "results_path" in inspected
    for param in inspected.values():
        assert param["inferred_type_name"] != "None" and param["help"], param


@pytest.mark.parametrize("name", NAMES)
def test_no_cell_rebinds_a_parameter_defines_a_function_or_asserts(name):
    nb = _load(name)
    tagged = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params = {
        t.id
        for node in ast.parse("".join(tagged["source"])).body
        if isinstance(node, ast.AnnAssign)
        for t in [node.target]
    }
    for source in _code(nb):
        if source == "".join(tagged["source"]) or source.startswith("%%"):
            continue  # the parameters cell itself, and shell cells (%%bash)
        tree = ast.parse("\n".join(x for x in source.splitlines() if not x.startswith("!")))
        for node in ast.walk(tree):
            assert not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.Assert
            ), source
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                assert node.id not in params, f"{name} rebinds the parameter {node.id!r}"


@pytest.mark.parametrize("name", NAMES)
def test_each_code_cell_is_one_short_step(name):
    for source in _code(_load(name)):
        assert len(source.strip().splitlines()) <= MAX_CELL_LINES, source


@pytest.mark.parametrize("name", [n for n in NAMES if n != "00_environment_setup"])
def test_the_notebook_shows_the_vllm_calls_it_makes(name):
    code = "\n".join(_code(_load(name)))
    assert re.search(r"LLM\(\*\*|\.chat\.completions\.create\(|bench", code), name


# ------------------------------------------------------------------ what the runs produced


def _outputs(report) -> str:
    """Return every text a notebook's cells printed or displayed, joined."""
    nb = json.loads(Path(report.executed).read_text())
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts.append("".join(out.get("data", {}).get("text/plain", "")))
            texts.append("".join(out.get("data", {}).get("text/html", "")))
    return "\n".join(texts)


@pytest.mark.notebook
def test_01_shows_both_forms_give_the_same_answer(executed):
    report, record = executed("01_single_image")
    assert report.status == "passed", report.failures
    printed = _outputs(report)
    assert "same prompt tokens: True" in printed and "same answer: True" in printed
    assert record["results"][0]["finish_reason"] == "stop"
    # Without stop tokens the answer runs to max_tokens, past the end of its turn.
    assert "<|im_end|>" in printed and "finish reason: length | tokens: 40" in printed
    greedy = next(line for line in printed.splitlines() if line.startswith("temperature 0.0:"))
    assert len(set(ast.literal_eval(greedy.split(":", 1)[1].strip()))) == 1  # greedy: one answer


@pytest.mark.notebook
def test_02_refusals_are_shown_and_one_tile_fits(executed):
    report, record = executed("02_multi_image")
    assert report.status == "passed", report.failures
    printed = _outputs(report)
    assert "refused: message 1 has 1 <image> placeholder(s) but 2 image(s)" in printed
    assert "the cookbook: 5 images" in printed and "vLLM: At most 4 image(s)" in printed
    assert "refused: 4 image(s) take 13312 tokens" in printed
    assert record["one_tile_per_image"]["image_tokens"] == 4 * 256


@pytest.mark.notebook
def test_03_shows_the_seed_bug_and_keeps_the_good_items(executed):
    report, record = executed("03_batch")
    assert report.status == "passed", report.failures
    assert "TypeError: Prompt text should be a string" in _outputs(report)
    good, bad, other = record["bad_item"]
    assert "FileNotFoundError" in bad["error"] and "no_such_photo.png" in bad["error"]
    assert good["images"] == ["cat"] and other["images"] == ["coffee"]
    assert not good["error"] and not other["error"] and good["text"] and other["text"]


@pytest.mark.notebook
def test_04_streams_the_same_answer_and_survives_a_refusal(executed):
    report, record = executed("04_server_query")
    assert report.status == "passed", report.failures
    printed = _outputs(report)
    assert "same as not streamed: True" in printed and "next request: stop" in printed
    assert "At most 4 image(s)" in printed and "the cookbook: 5 images" in printed
    assert not any("--api-key" in part for part in record["command"])


@pytest.mark.notebook
def test_06_the_prefix_cache_serves_the_history_and_the_server_agrees(executed):
    report, record = executed("06_chat")
    assert report.status == "passed", report.failures
    turns = record["results"]
    assert [t["extra"]["turn"] for t in turns] == [1, 2, 3, 4]
    assert all(t["extra"]["cached_tokens"] > 0 for t in turns[1:])
    assert [t["text"] for t in record["server"]] == [t["text"] for t in turns]


@pytest.mark.notebook
def test_07_refuses_bad_boxes_with_a_message(executed):
    report, record = executed("07_grounding_ocr")
    assert report.status == "passed", report.failures
    printed = _outputs(report)
    assert printed.count("refused:") == 3 and "skip_special_tokens=False" in printed
    assert all(r["extra"]["boxes"] for r in record["results"] if "boxes" in r["extra"])


@pytest.mark.notebook
def test_08_json_is_valid_offline_and_online_and_a_cut_answer_is_reported(executed):
    report, record = executed("08_structured_output")
    assert report.status == "passed", report.failures
    assert record["server_answer"] == record["results"][0]["extra"]["json"]
    assert record["cut"]["finish_reason"] == "length"
    assert "not valid for the schema" in _outputs(report)


@pytest.mark.notebook
def test_09_counts_the_frames_both_ways_and_refuses_a_long_clip(executed):
    report, record = executed("09_video")
    assert report.status == "passed", report.failures
    video, frames = record["results"]
    assert video["image_tokens"] == frames["image_tokens"] == record["frames"] * 256
    assert video["text"] == frames["text"]
    assert "refused: 0 image(s) and 64 video frame(s) take 16384 tokens" in _outputs(report)


def test_05_forces_the_length_of_measurements_only_never_of_the_checked_answer():
    # The upstream defect: min_tokens equal to max_tokens made every checked answer run to
    # max_tokens with finish reason "length" on the npu profile (max_tokens=256).
    cells = _code(_load("05_benchmark"))
    checked = next(c for c in cells if "results.from_output(" in c)
    assert "SamplingParams(" in checked and "min_tokens" not in checked


@pytest.mark.notebook
def test_05_records_an_answer_that_stops_on_its_own_and_every_lever(executed):
    report, record = executed("05_benchmark")
    assert report.status == "passed", report.failures
    (answer,) = record["results"]
    assert answer["finish_reason"] == "stop" and answer["output_tokens"] < 128
    names = set(record["ratios"])
    for lever in ("overhead.cookbook", "batching.cold.4", "caches.processor", "caches.prefix",
                  "payload.offline", "payload.bytes"):  # fmt: skip
        assert lever in names, sorted(names)
    assert [row["tiles"] for row in record["stages"]] == [1, 7, 13]
