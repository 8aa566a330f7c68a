"""Notebook 01 executed by papermill on the CPU with the tiny model: its record checked."""

from __future__ import annotations

import nbformat
import pytest

from cookbook.images import load_image
from cookbook.tiling import plan_images

pytestmark = pytest.mark.notebook


def test_single_image_notebook_record(executed_notebook):
    report, record = executed_notebook("01_single_image")
    assert report.status == "passed", report.failures
    assert record["notebook"] == "01_single_image"
    # the injected parameters are the ones used
    for key, value in report.parameters.items():
        assert record["parameters"][key] == value
    assert record["parameters"]["model"] == "tiny" and record["engine"]["device"] == "cpu"
    (res,) = record["results"]
    # tiles and tokens as InternVL's rule says for the photo actually sent
    photo = load_image(record["parameters"]["image"])
    assert record["image_sizes"] == [[photo.width, photo.height]]
    (plan,) = plan_images([photo], **record["engine"]["tiling"])
    assert res["tiles"] == [plan.tiles] and res["image_tokens"] == plan.tokens
    assert res["measured_image_tokens"] == plan.tokens
    assert res["prompt_tokens"] > plan.tokens
    assert res["output_tokens"] >= record["parameters"]["min_tokens"] > 0
    assert res["finish_reason"] in ("stop", "length")
    # stop ids came from the tokenizer, not the seed's InternLM2 ids
    assert 92542 not in record["engine"]["stop_token_ids"]


def test_single_image_notebook_cells(executed_notebook):
    report, _ = executed_notebook("01_single_image")
    nb = nbformat.read(report.executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o for o in outputs if o.output_type == "display_data" and "text/html" in o.data]
    assert any("data:image/jpeg;base64," in o.data["text/html"] for o in html)  # the photo
    assert any("output tokens" in o.data["text/html"] for o in html)  # the answer block
    # vLLM's own log lines stay out of the cells (they go to the engine's log file)
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for noise in ("INFO ", "(EngineCore", "(Worker", "Loading safetensors"):
        assert noise not in streams, noise
