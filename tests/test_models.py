"""The support matrix and the engine arguments it gives per device."""

from __future__ import annotations

import json

import pytest

from cookbook import engine, models


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("InternVL3-8B", "internvl3-8b"),
        ("OpenGVLab/InternVL2_5-8B", "internvl2.5-8b"),
        ("internvl2.5-8b", "internvl2.5-8b"),
        ("OpenGVLab/InternVL3_5-8B-HF", "internvl3.5-8b-hf"),
    ],
)
def test_spellings_of_a_model_name_the_same_row(name, key):
    assert models.resolve(name).key == key


def test_an_unknown_name_lists_the_keys():
    with pytest.raises(ValueError, match="internvl3-8b"):
        models.resolve("internvl9")


def test_another_hub_id_gets_the_recommended_settings_unverified():
    spec = models.resolve("OpenGVLab/InternVL3-2B")
    assert spec.hub_id == "OpenGVLab/InternVL3-2B" and "unverified" in spec.upstream


def test_every_key_is_its_hub_name_lower_cased():
    for key, spec in models.SUPPORT_MATRIX.items():
        if spec.hub_id:
            assert models.resolve(spec.hub_id).key == key


def test_a_checkpoint_folder_is_read_from_its_config(tmp_path):
    config = {
        "architectures": ["InternVLForConditionalGeneration"],
        "text_config": {
            "model_type": "qwen3",
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "hidden_size": 512,
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = models.resolve(str(tmp_path))
    assert (spec.llm_family, spec.hf_format, spec.video) == ("qwen3", True, True)
    assert spec.image_placeholder == "<IMG_CONTEXT>"
    assert spec.kv_bytes_per_token(2) == 2 * 4 * 2 * 64 * 2


def test_kv_cache_of_internvl3_8b():
    # Qwen2.5-7B: 28 layers, 4 KV heads of 128: 57,344 bytes a token in bfloat16.
    assert models.SUPPORT_MATRIX["internvl3-8b"].kv_bytes_per_token() == 57344


def test_cpu_engine_args_add_the_cpu_settings():
    args = engine.engine_args("internvl3-8b", "cpu")
    assert args["model"] == "OpenGVLab/InternVL3-8B" and args["trust_remote_code"] is True
    assert args["limit_mm_per_prompt"] == {"image": 4} and args["max_model_len"] == 8192
    assert args["enforce_eager"] is True and args["kv_cache_memory_bytes"] > 0


def test_overrides_merge_limits_and_route_max_dynamic_patch():
    video = engine.engine_args(
        "internvl3-8b", "cpu", limit_mm_per_prompt={"video": 1}, max_dynamic_patch=6
    )
    assert video["limit_mm_per_prompt"] == {"image": 4, "video": 1}
    assert video["hf_overrides"] == {"max_dynamic_patch": 6} and "mm_processor_kwargs" not in video
    image_only = engine.engine_args("internvl2-8b", "cpu", max_dynamic_patch=6)
    assert image_only["mm_processor_kwargs"] == {"max_dynamic_patch": 6}


def test_set_device_env_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "0")
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    added = engine.set_device_env("cpu")
    assert added == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def test_the_npu_default_is_graph_mode_with_upstreams_allocator():
    assert "enforce_eager" not in engine.DEVICE_ARGS["npu"]
    assert "PYTORCH_NPU_ALLOC_CONF" not in engine.DEVICE_ENV["npu"]


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device must be"):
        engine.detect_device("tpu")


@pytest.mark.vllm
def test_vllms_own_parser_reads_the_serve_flags_back_as_the_engine_args():
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = engine.engine_args(
        "internvl3-8b", "cpu", max_dynamic_patch=6, limit_mm_per_prompt={"video": 1}
    )
    command = engine.serve_command(args, port=8123)
    flags = command[command.index("--model") :] if "--model" in command else command[2:]
    parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(flags)
    again = EngineArgs.from_cli_args(parsed)
    for name, value in args.items():
        assert getattr(again, name) == value, name
    assert parsed.port == 8123 and parsed.host == "127.0.0.1"


def test_the_hf_format_takes_max_patches_and_the_pil_resize():
    args = engine.engine_args("internvl3.5-8b-hf", "cpu", max_dynamic_patch=2)
    assert args["mm_processor_kwargs"] == {"use_fast": False, "max_patches": 2}
    assert "hf_overrides" not in args
