"""The runner's checks can fail: each wrong answer, truncation, box or turn order is caught."""

from __future__ import annotations

import json

import nbformat
import pytest

from cookbook import runner


def _result(text, images=("cat",), **fields):
    return {
        "text": text,
        "images": list(images),
        "finish_reason": "stop",
        "output_tokens": 9,
        "prompt_tokens": 2000,
        "image_tokens": 1792,
        "planned_image_tokens": 1792,
        "extra": {},
        **fields,
    }


def _failures(*results):
    return runner.check_record({"cells": []}, {"results": list(results)})


def test_a_right_answer_passes():
    assert _failures(_result("The image shows a tabby cat lying on a blanket.")) == []


def test_an_answer_about_the_wrong_photo_fails():
    assert any("names none of" in f for f in _failures(_result("A dog runs on the grass.")))


@pytest.mark.parametrize(
    "text", ["A location near the sea.", "It occupies the frame.", "Cathedral."]
)
def test_a_word_inside_another_word_does_not_count(text):
    assert runner.mentions(text, ["cat", "cup"]) is None
    assert _failures(_result(text)) != []


def test_a_truncated_answer_fails():
    failures = _failures(_result("The image shows a cat", finish_reason="length"))
    assert any("not 'stop'" in f for f in failures)


def test_a_permuted_batch_fails():
    right = [_result("A tabby cat.", ["cat"]), _result("A cup of coffee.", ["coffee"])]
    assert _failures(*right) == []
    permuted = [dict(right[0], text=right[1]["text"]), dict(right[1], text=right[0]["text"])]
    assert len(_failures(*permuted)) == 2


def test_a_multi_image_answer_must_follow_the_image_order():
    text = "Image-1 shows a tabby cat. Image-2 shows a cup of coffee."
    assert _failures(_result(text, ["cat", "coffee"])) == []
    assert any("out of order" in f for f in _failures(_result(text, ["coffee", "cat"])))
    assert any("coffee" in f for f in _failures(_result("Image-1 shows a cat.", ["cat", "coffee"])))


def test_image_tokens_must_match_the_plan():
    failures = _failures(_result("A cat.", image_tokens=256))
    assert any("vLLM used 256 image tokens, the plan said 1792" in f for f in failures)


def test_a_box_must_land_on_its_object():
    from cookbook import images

    cat = next(o for o in images.samples()["cat"]["objects"] if o["label"] == "cat")
    on = _result("", extra={"boxes": [{"label": "the cat", "box": cat["box"]}]})
    assert _failures(on) == []
    x1, y1, x2, y2 = cat["box"]
    shifted = [x2, y1, x2 + (x2 - x1), y2]  # beside the cat: no overlap
    off = _result("", extra={"boxes": [{"label": "the cat", "box": shifted}]})
    assert any("misses its object" in f for f in _failures(off))


def test_invalid_json_and_lost_turns_fail():
    assert any("invalid JSON" in f for f in _failures(_result("A cat.", extra={"json_error": "x"})))
    turns = [_result("A cat.", extra={"turn": t}) for t in (1, 3)]
    assert any("turns out of order" in f for f in _failures(*turns))


def test_an_error_output_and_a_missing_record_fail():
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "outputs": [{"output_type": "error", "ename": "ValueError", "evalue": "boom"}],
            }
        ]
    }
    failures = runner.check_record(nb, None)
    assert "cell 0 raised ValueError: boom" in failures
    assert "the notebook wrote no results file" in failures


def test_the_runner_names_the_kernel_and_keeps_injected_parameters(tmp_path, monkeypatch):
    # C09: the saved kernelspec names an environment that does not exist; C08: the
    # injected value is the one the notebook uses.
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "no-such-env",
        "display_name": "gone",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(
            'answer: str = "default"  # the answer', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(
            "from cookbook import results\n"
            "results.write(results_path, [results.Result(text=answer, finish_reason='stop',"
            " output_tokens=1)])"
        ),
    ]
    (tmp_path / "99_probe.ipynb").write_text(nbformat.writes(nb))
    (tmp_path / "manifest.toml").write_text(
        'timeout = 120\n[profiles.cpu]\nparameters = {}\n[[notebooks]]\nname = "99_probe"\n'
    )
    monkeypatch.setattr(runner, "MANIFEST", tmp_path / "manifest.toml")
    (report,) = runner.run_notebooks(
        "cpu", out_dir=tmp_path / "out", overrides={"answer": "sentinel-42"}
    )
    assert report.status == "passed", report.failures
    assert json.loads(open(report.record).read())["results"][0]["text"] == "sentinel-42"
