"""The notebook checks must be able to fail: feed them records that are wrong."""

import copy

import pytest

from cookbook.checks import check_executed, result_content, result_structure

GOOD = {
    "index": 0,
    "text": "A cat sits on a wooden floor.",
    "prompt_tokens": 1850,
    "output_tokens": 12,
    "finish_reason": "stop",
    "num_images": 1,
    "tiles": [7],
    "image_tokens": 1794,
    "measured_image_tokens": 1794,
    "image_names": ["cat"],
}
NB_OK = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "text": "hi"}]}]}
WORDS = {"cat": ["cat", "kitten"]}


def record(**changes):
    res = copy.deepcopy(GOOD)
    res.update(changes)
    return {"parameters": {"model": "tiny"}, "results": [res]}


def test_good_record_passes_both_kinds():
    for kind in ("structure", "content"):
        assert (
            check_executed(
                NB_OK, record(), injected={"model": "tiny"}, kind=kind, expected_words=WORDS
            )
            == []
        )


def test_wrong_answer_fails_content_but_not_structure():
    bad = record(text="A dog runs on the beach.")
    assert check_executed(NB_OK, bad, injected={}, kind="structure") == []
    fails = check_executed(NB_OK, bad, injected={}, kind="content", expected_words=WORDS)
    assert len(fails) == 1 and "mentions none of" in fails[0]


def test_truncated_answer_fails_content():
    fails = result_content(record(finish_reason="length")["results"], WORDS)
    assert any("expected 'stop'" in f for f in fails)


def test_error_output_fails():
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "outputs": [
                    {
                        "output_type": "error",
                        "ename": "ValueError",
                        "evalue": "boom",
                        "traceback": [],
                    }
                ],
            }
        ]
    }
    fails = check_executed(nb, record(), injected={}, kind="structure")
    assert fails == ["cell 0 raised ValueError: boom"]


def test_missing_record_and_injected_parameter_mismatch():
    assert (
        "wrote no results record" in check_executed(NB_OK, None, injected={}, kind="structure")[0]
    )
    fails = check_executed(NB_OK, record(), injected={"model": "internvl3-8b"}, kind="structure")
    assert fails and "injected 'internvl3-8b'" in fails[0]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"output_tokens": 0}, "output tokens"),
        ({"finish_reason": None}, "finish reason"),
        ({"tiles": []}, "tiles"),
        ({"measured_image_tokens": 1538}, "plan said"),
        ({"error": "request 0: FileNotFoundError"}, "failed"),
        ({"prompt_tokens": 10}, "not above image tokens"),
    ],
)
def test_structure_failures(change, needle):
    fails = result_structure(record(**change)["results"])
    assert len(fails) == 1 and needle in fails[0]


def test_expected_error_must_happen():
    assert result_structure(record(expected_error=True, error="request 0: bad")["results"]) == []
    assert "expected" in result_structure(record(expected_error=True)["results"])[0]


def test_unknown_kind_rejected():
    with pytest.raises(ValueError, match="structure"):
        check_executed(NB_OK, record(), injected={}, kind="text")
