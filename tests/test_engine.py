"""Engine construction without starting vLLM: device settings, argument precedence, logs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cookbook import engine as eng
from cookbook.models import resolve_model

SPEC = resolve_model("internvl3-8b")


def test_detect_device_rejects_unknown_names():
    with pytest.raises(ValueError, match="'auto' or one of"):
        eng.detect_device("tpu")


def test_detect_device_refuses_a_device_this_machine_lacks(monkeypatch):
    monkeypatch.setattr(eng, "_find_device", lambda: "cpu")
    with pytest.raises(RuntimeError, match="'npu' was requested .* runs vLLM on 'cpu'"):
        eng.detect_device("npu")
    assert eng.detect_device("auto") == "cpu"
    monkeypatch.setenv("COOKBOOK_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="'cuda' was requested"):
        eng.detect_device("auto")


@pytest.mark.parametrize(
    ("device", "eager", "kv", "env_keys"),
    [
        ("cpu", True, eng.CPU_KV_CACHE_BYTES, set()),
        ("npu", True, None, {"PYTORCH_NPU_ALLOC_CONF", "VLLM_WORKER_MULTIPROC_METHOD"}),
        ("cuda", None, None, set()),
    ],
)
def test_device_settings(device, eager, kv, env_keys):
    kwargs, env = eng.device_settings(device, SPEC)
    assert kwargs.get("enforce_eager") is eager
    assert kwargs.get("kv_cache_memory_bytes") == kv
    assert set(env) == env_keys


def test_npu_engine_args_are_the_seed_recommendation_plus_eager():
    kwargs, env = eng.build_engine_args(SPEC, "npu")
    assert kwargs["model"] == "OpenGVLab/InternVL3-8B"
    assert kwargs["max_model_len"] == 8192 and kwargs["dtype"] == "bfloat16"
    assert kwargs["limit_mm_per_prompt"] == {"image": 4}
    assert kwargs["trust_remote_code"] is True and kwargs["enforce_eager"] is True
    assert env["PYTORCH_NPU_ALLOC_CONF"] == "max_split_size_mb:256"


def test_caller_beats_device_beats_recommendation():
    kwargs, _ = eng.build_engine_args(
        SPEC, "cpu", max_model_len=2048, limit_images=2, enforce_eager=False, seed=7
    )
    assert kwargs["max_model_len"] == 2048
    assert kwargs["limit_mm_per_prompt"] == {"image": 2}
    assert kwargs["enforce_eager"] is False and kwargs["seed"] == 7


def test_max_dynamic_patch_reaches_the_engine_arguments():
    kwargs, _ = eng.build_engine_args(SPEC, "npu", max_dynamic_patch=6)
    where = {**kwargs.get("hf_overrides", {}), **kwargs.get("mm_processor_kwargs", {})}
    assert where["max_dynamic_patch"] == 6


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8"])
def test_bad_sizes_refused_before_loading(bad):
    with pytest.raises(ValueError, match="max_model_len"):
        eng.build_engine_args(SPEC, "cpu", max_model_len=bad)


def test_unknown_model_refused_before_loading():
    with pytest.raises(ValueError, match="internvl3-8b"):
        eng.create_engine("internvl9-1b", "cpu")


def test_npu_env_defaults_never_override_the_user(monkeypatch):
    monkeypatch.setenv("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "placeholder")  # restored afterwards
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD")
    _, env = eng.build_engine_args(SPEC, "npu")
    applied = eng.apply_env_defaults(env)
    assert applied == {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    assert os.environ["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"


def test_output_to_file_captures_child_processes(tmp_path, capfd):
    log = tmp_path / "engine.log"
    with eng.output_to_file(log):
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; print('child out'); print('child err', file=sys.stderr)",
            ],
            check=True,
        )
    subprocess.run([sys.executable, "-c", "print('after')"], check=True)
    text = log.read_text()
    assert "child out" in text and "child err" in text
    assert "after" not in text
    assert "after" in capfd.readouterr().out


def test_quiet_vllm_logs_keeps_a_user_setting(monkeypatch):
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    eng.quiet_vllm_logs()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG"


# --- overrides go through cookbook.models.engine_args -----------------------------------


def test_limit_mm_per_prompt_override_is_merged_not_replaced():
    kwargs, _ = eng.build_engine_args(SPEC, "cpu", limit_mm_per_prompt={"video": 1})
    assert kwargs["limit_mm_per_prompt"] == {"image": 4, "video": 1}
    kwargs, _ = eng.build_engine_args(SPEC, "cpu", limit_images=2, limit_mm_per_prompt={"video": 0})
    assert kwargs["limit_mm_per_prompt"] == {"image": 2, "video": 0}


def test_tiling_in_mm_processor_kwargs_is_routed_like_engine_args():
    from cookbook.models import engine_args

    # InternVL3 (video-capable): vLLM 0.23 passes mm_processor_kwargs to its video
    # processor too, which has no max_dynamic_patch, so the setting goes to hf_overrides.
    kwargs, _ = eng.build_engine_args(SPEC, "cpu", mm_processor_kwargs={"max_dynamic_patch": 6})
    assert "mm_processor_kwargs" not in kwargs
    assert kwargs["hf_overrides"] == {"max_dynamic_patch": 6}
    expected = engine_args(SPEC, mm_processor_kwargs={"max_dynamic_patch": 6})
    assert {k: v for k, v in kwargs.items() if k in expected} == expected
    # InternVL2 (image only): mm_processor_kwargs is the right place.
    kwargs, _ = eng.build_engine_args(
        resolve_model("internvl2-8b"), "cpu", mm_processor_kwargs={"max_dynamic_patch": 6}
    )
    assert kwargs["mm_processor_kwargs"] == {"max_dynamic_patch": 6}
    assert "hf_overrides" not in kwargs


def test_caller_none_removes_a_device_setting():
    kwargs, _ = eng.build_engine_args(SPEC, "cpu", kv_cache_memory_bytes=None)
    assert "kv_cache_memory_bytes" not in kwargs  # vLLM's own default applies
    assert kwargs["enforce_eager"] is True


def test_dict_settings_must_be_dicts():
    with pytest.raises(TypeError, match="limit_mm_per_prompt must be a dict"):
        eng.build_engine_args(SPEC, "cpu", limit_mm_per_prompt=8)


def _engine(engine_args):
    return eng.Engine(
        llm=None,
        spec=SPEC,
        device="cpu",
        engine_args=engine_args,
        tokenizer=None,
        hf_config=None,
        stop_token_ids=[1],
        tiling={},
        startup_seconds=0.0,
    )


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ({"image": 3}, 3),
        ({"image": {"count": 8, "width": 512, "height": 512}}, 8),
        ({"image": 2, "video": 1}, 2),
        ({"video": 1}, eng.VLLM_DEFAULT_MM_LIMIT),  # vLLM's default for an unnamed modality
        ({"image": {"width": 512}}, eng.VLLM_DEFAULT_MM_LIMIT),
        (None, eng.VLLM_DEFAULT_MM_LIMIT),
    ],
)
def test_engine_limit_images_reads_every_vllm_form(limit, expected):
    args = {"model": "x"} if limit is None else {"model": "x", "limit_mm_per_prompt": limit}
    assert _engine(args).limit_images == expected


def test_engine_limit_images_from_built_arguments():
    kwargs, _ = eng.build_engine_args(SPEC, "cpu", limit_mm_per_prompt={"video": 1})
    assert _engine(kwargs).limit_images == 4
    kwargs, _ = eng.build_engine_args(SPEC, "cpu", limit_mm_per_prompt={"image": {"count": 8}})
    assert _engine(kwargs).limit_images == 8
    with pytest.raises(TypeError, match="limit_mm_per_prompt\\['image'\\]"):
        _ = _engine({"limit_mm_per_prompt": {"image": "8"}}).limit_images
