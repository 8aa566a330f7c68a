"""The support matrix, model resolution, engine/server arguments and memory estimate."""

from __future__ import annotations

import json
import shlex
import struct
import sys
import types

import pytest

from cookbook.models import (
    SUPPORT_MATRIX,
    ModelSpec,
    engine_args,
    kv_bytes_per_token,
    memory_estimate_gib,
    resolve_model,
    serve_args,
    serve_command,
    spec_from_checkpoint,
)

EIGHT_B = ("internvl2-8b", "internvl2.5-8b", "internvl3-8b")


def _write_checkpoint(directory, *, family="qwen2", max_patch=6, tensors=None):
    llm = {
        "qwen2": {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_size": 256,
        },
        "internlm2": {
            "architectures": ["InternLM2ForCausalLM"],
            "model_type": "internlm2",
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "hidden_size": 4096,
        },
    }[family]
    config = {
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "max_dynamic_patch": max_patch,
        "min_dynamic_patch": 1,
        "llm_config": llm,
        "vision_config": {"image_size": 448, "patch_size": 14},
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    if tensors:
        header = {
            name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}
            for name, shape in tensors.items()
        }
        header["__metadata__"] = {"format": "pt"}
        raw = json.dumps(header).encode()
        (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return directory


# --------------------------------------------------------------------------- matrix


def test_matrix_keys_and_recommended_settings():
    assert set(SUPPORT_MATRIX) == {*EIGHT_B, "tiny"}
    for key in EIGHT_B:
        spec = SUPPORT_MATRIX[key]
        assert spec.key == key
        assert (spec.max_model_len, spec.dtype, spec.limit_images) == (8192, "bfloat16", 4)
        assert spec.max_dynamic_patch == spec.config_max_dynamic_patch == 12
        assert spec.model_id.startswith("OpenGVLab/") and spec.hub_id == spec.model_id
        assert spec.params_b and spec.num_layers and spec.num_kv_heads and spec.head_dim
        assert spec.source and spec.llm and spec.vision
    assert SUPPORT_MATRIX["internvl2-8b"].llm_family == "internlm2"
    assert SUPPORT_MATRIX["internvl2.5-8b"].llm_family == "internlm2"
    assert SUPPORT_MATRIX["internvl3-8b"].llm_family == "qwen2"
    assert [SUPPORT_MATRIX[k].supports_video for k in EIGHT_B] == [False, False, True]
    tiny = SUPPORT_MATRIX["tiny"]
    assert tiny.max_model_len == 4096 and tiny.limit_images == 4 and tiny.is_tiny


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        SUPPORT_MATRIX["internvl3-8b"].max_model_len = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- resolve_model


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("internvl3-8b", "internvl3-8b"),
        ("InternVL3-8B", "internvl3-8b"),
        ("OpenGVLab/InternVL3-8B", "internvl3-8b"),
        ("  opengvlab/internvl3-8b ", "internvl3-8b"),
        ("InternVL2_5-8B", "internvl2.5-8b"),
        ("InternVL2.5-8B", "internvl2.5-8b"),
        ("OpenGVLab/InternVL2_5-8B", "internvl2.5-8b"),
        ("internvl2-8b", "internvl2-8b"),
        ("OpenGVLab/InternVL2-8B", "internvl2-8b"),
    ],
)
def test_resolve_spellings(name, key):
    assert resolve_model(name) is SUPPORT_MATRIX[key]


def test_resolve_unknown_name_lists_keys():
    with pytest.raises(ValueError) as err:
        resolve_model("internvl9-8b")
    msg = str(err.value)
    for key in SUPPORT_MATRIX:
        assert key in msg


@pytest.mark.parametrize(("value", "error"), [("", ValueError), ("  ", ValueError), (3, TypeError)])
def test_resolve_bad_input(value, error):
    with pytest.raises(error):
        resolve_model(value)


def test_resolve_unknown_hub_id_gets_defaults():
    spec = resolve_model("SomeOrg/Some-VLM-2B")
    assert spec.model_id == "SomeOrg/Some-VLM-2B"
    assert spec.llm_family == "unknown"
    assert (spec.max_model_len, spec.dtype, spec.limit_images) == (8192, "bfloat16", 4)
    assert engine_args(spec)["model"] == "SomeOrg/Some-VLM-2B"


def test_resolve_local_directory_reads_config(tmp_path):
    ckpt = _write_checkpoint(
        tmp_path / "My-InternVL",
        family="qwen2",
        max_patch=6,
        tensors={"a": [256, 300], "b": [64]},
    )
    spec = resolve_model(str(ckpt))
    assert spec.model_id == str(ckpt.resolve())
    assert spec.key == "my-internvl"
    assert spec.llm_family == "qwen2" and spec.supports_video is True
    assert spec.max_dynamic_patch == spec.config_max_dynamic_patch == 6
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim) == (2, 2, 64)
    assert spec.params_b == pytest.approx((256 * 300 + 64) / 1e9)
    # The checkpoint's own max_dynamic_patch is the default: no mm_processor_kwargs.
    assert "mm_processor_kwargs" not in engine_args(spec)
    assert resolve_model(ckpt) == spec  # a Path works too


def test_video_support_needs_the_video_token(tmp_path):
    ckpt = _write_checkpoint(tmp_path / "ckpt", family="qwen2")
    (ckpt / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"content": "<|im_end|>"}]}))
    assert spec_from_checkpoint(ckpt).supports_video is False
    (ckpt / "tokenizer.json").write_text(
        json.dumps({"added_tokens": [{"content": "<|video_pad|>"}]})
    )
    assert spec_from_checkpoint(ckpt).supports_video is True


def test_resolve_internlm2_directory(tmp_path):
    spec = spec_from_checkpoint(_write_checkpoint(tmp_path / "ckpt", family="internlm2"))
    assert spec.llm_family == "internlm2" and spec.supports_video is False
    assert kv_bytes_per_token(spec) == kv_bytes_per_token(SUPPORT_MATRIX["internvl2-8b"])
    assert spec.params_b is None  # no weights in the directory


def test_resolve_directory_without_config(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        resolve_model(str(tmp_path))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        resolve_model(str(file))


def test_tiny_is_built_lazily(tmp_path, monkeypatch):
    calls = []
    built = _write_checkpoint(tmp_path / "tiny-build", family="qwen2", max_patch=6)

    def ensure_tiny_checkpoint():
        calls.append(1)
        return built

    fake = types.ModuleType("cookbook.tiny")
    fake.ensure_tiny_checkpoint = ensure_tiny_checkpoint
    monkeypatch.setitem(sys.modules, "cookbook.tiny", fake)

    assert SUPPORT_MATRIX["tiny"].key == "tiny" and calls == []  # reading costs nothing
    spec = resolve_model("TINY")
    assert calls == [1]
    assert spec.model_id == str(built)
    assert (spec.max_model_len, spec.dtype, spec.limit_images) == (4096, "float32", 4)
    assert spec.max_dynamic_patch == 6 and spec.llm_family == "qwen2"
    assert engine_args(spec)["model"] == str(built)
    assert engine_args(SUPPORT_MATRIX["tiny"])["model"] == str(built)  # path() builds too


@pytest.mark.vllm
def test_tiny_resolves_to_a_real_checkpoint():
    from transformers import AutoTokenizer

    from cookbook.prompts import STOP_TOKEN_CANDIDATES, stop_token_ids

    spec = resolve_model("tiny")
    from pathlib import Path

    assert (Path(spec.model_id) / "config.json").is_file()
    assert spec.llm_family == "qwen2"
    assert spec.num_layers and spec.num_kv_heads and spec.head_dim and spec.params_b
    tok = AutoTokenizer.from_pretrained(spec.model_id, trust_remote_code=True)
    ids = stop_token_ids(tok)
    assert ids and all(
        tok.convert_ids_to_tokens(i) in (*STOP_TOKEN_CANDIDATES, tok.eos_token) for i in ids
    )


# --------------------------------------------------------------------------- engine_args


@pytest.mark.parametrize("key", EIGHT_B)
def test_engine_args_match_the_seed_configuration(key):
    spec = SUPPORT_MATRIX[key]
    assert engine_args(spec) == {
        "model": spec.model_id,
        "trust_remote_code": True,
        "max_model_len": 8192,
        "dtype": "bfloat16",
        "limit_mm_per_prompt": {"image": 4},
    }


def test_engine_args_max_dynamic_patch_image_only_model():
    args = engine_args(SUPPORT_MATRIX["internvl2.5-8b"], max_dynamic_patch=6)
    assert args["mm_processor_kwargs"] == {"max_dynamic_patch": 6}
    assert "hf_overrides" not in args
    assert "mm_processor_kwargs" not in engine_args(
        SUPPORT_MATRIX["internvl2.5-8b"], max_dynamic_patch=None
    )


def test_engine_args_max_dynamic_patch_video_model_uses_hf_overrides():
    # vLLM 0.23 hands mm_processor_kwargs to InternVLVideoProcessor too, which rejects
    # max_dynamic_patch; the config override reaches the image processor instead.
    spec = SUPPORT_MATRIX["internvl3-8b"]
    args = engine_args(spec, max_dynamic_patch=6)
    assert args["hf_overrides"] == {"max_dynamic_patch": 6}
    assert "mm_processor_kwargs" not in args
    moved = engine_args(spec, mm_processor_kwargs={"max_dynamic_patch": 4, "min_dynamic_patch": 2})
    assert moved["hf_overrides"] == {"max_dynamic_patch": 4, "min_dynamic_patch": 2}
    assert "mm_processor_kwargs" not in moved
    kept = engine_args(spec, max_dynamic_patch=6, hf_overrides={"foo": 1})
    assert kept["hf_overrides"] == {"foo": 1, "max_dynamic_patch": 6}
    with pytest.raises(ValueError, match="hf_overrides"):
        engine_args(spec, max_dynamic_patch=6, hf_overrides=lambda cfg: cfg)


def test_engine_args_overrides():
    spec = SUPPORT_MATRIX["internvl3-8b"]
    args = engine_args(
        spec,
        max_model_len=16384,
        limit_images=2,
        enforce_eager=True,
        gpu_memory_utilization=0.5,
    )
    assert args["max_model_len"] == 16384
    assert args["limit_mm_per_prompt"] == {"image": 2}
    assert args["enforce_eager"] is True and args["gpu_memory_utilization"] == 0.5
    merged = engine_args(spec, limit_mm_per_prompt={"image": 1, "video": 1})
    assert merged["limit_mm_per_prompt"] == {"image": 1, "video": 1}
    assert "max_model_len" not in engine_args(spec, max_model_len=None)
    assert engine_args(spec, model="/models/InternVL3-8B")["model"] == "/models/InternVL3-8B"
    # The spec itself is unchanged.
    assert spec.max_model_len == 8192 and "hf_overrides" not in engine_args(spec)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"dtype": "fp8"}, ValueError),
        ({"max_model_len": 0}, ValueError),
        ({"max_model_len": "8192"}, TypeError),
        ({"limit_images": 0}, ValueError),
        ({"max_dynamic_patch": 2.5}, TypeError),
    ],
)
def test_engine_args_rejects_bad_overrides(overrides, error):
    with pytest.raises(error):
        engine_args(SUPPORT_MATRIX["internvl3-8b"], **overrides)


def test_engine_args_needs_a_spec():
    with pytest.raises(TypeError, match="resolve_model"):
        engine_args("internvl3-8b")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- serve_args


def _parse_flags(flags):
    """Turn serve flags back into engine kwargs (the inverse of serve_args)."""
    out, i = {}, 0
    while i < len(flags):
        name = flags[i][2:]
        nxt = flags[i + 1] if i + 1 < len(flags) else None
        if nxt is None or nxt.startswith("--"):
            if name.startswith("no-"):
                out[name[3:].replace("-", "_")] = False
            else:
                out[name.replace("-", "_")] = True
            i += 1
            continue
        try:
            value = json.loads(nxt)
        except json.JSONDecodeError:
            value = nxt
        out[name.replace("-", "_")] = value
        i += 2
    return out


def test_serve_args_match_the_seed_command():
    flags = serve_args(SUPPORT_MATRIX["internvl3-8b"])
    assert flags == [
        "--trust-remote-code",
        "--max-model-len",
        "8192",
        "--dtype",
        "bfloat16",
        "--limit-mm-per-prompt",
        '{"image":4}',
    ]
    command = serve_command(SUPPORT_MATRIX["internvl3-8b"])
    assert command.startswith("vllm serve OpenGVLab/InternVL3-8B ")
    assert "--limit-mm-per-prompt '{\"image\":4}'" in command
    assert shlex.split(command)[3:] == flags


@pytest.mark.parametrize("key", EIGHT_B)
@pytest.mark.parametrize(
    "overrides",
    [{}, {"max_dynamic_patch": 6}, {"enforce_eager": True, "max_model_len": 4096}],
)
def test_serve_args_agree_with_engine_args(key, overrides):
    spec = SUPPORT_MATRIX[key]
    expected = engine_args(spec, **overrides)
    parsed = _parse_flags(serve_args(spec, include_model=True, **overrides))
    assert parsed == expected


@pytest.mark.vllm
@pytest.mark.parametrize("key", EIGHT_B)
def test_serve_args_parse_with_vllms_own_parser(key):
    """vLLM's CLI parser turns our flags into the same EngineArgs as our kwargs."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    spec = SUPPORT_MATRIX[key]
    overrides = {"max_dynamic_patch": 6, "enforce_eager": True}
    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    from_cli = EngineArgs.from_cli_args(
        parser.parse_args(serve_args(spec, include_model=True, **overrides))
    )
    from_kwargs = EngineArgs(**engine_args(spec, **overrides))
    for field in (
        "model",
        "trust_remote_code",
        "max_model_len",
        "dtype",
        "limit_mm_per_prompt",
        "mm_processor_kwargs",
        "hf_overrides",
        "enforce_eager",
    ):
        assert getattr(from_cli, field) == getattr(from_kwargs, field), field
    assert from_cli.limit_mm_per_prompt == {"image": 4}
    tiling_setting = from_cli.hf_overrides if spec.supports_video else from_cli.mm_processor_kwargs
    assert tiling_setting == {"max_dynamic_patch": 6}


# --------------------------------------------------------------------------- memory


def test_kv_bytes_per_token():
    # 2 (K and V) * layers * KV heads * head_dim * 2 bytes.
    assert kv_bytes_per_token(SUPPORT_MATRIX["internvl2-8b"]) == 2 * 32 * 8 * 128 * 2 == 131072
    assert kv_bytes_per_token(SUPPORT_MATRIX["internvl3-8b"]) == 2 * 28 * 4 * 128 * 2 == 57344


def test_memory_estimate():
    est = memory_estimate_gib(SUPPORT_MATRIX["internvl2-8b"])
    assert est["kv_cache_gib"] == pytest.approx(1.0)  # 128 KiB * 8192 tokens
    assert est["weights_gib"] == pytest.approx(8.08e9 * 2 / 2**30)
    assert est["total_gib"] == pytest.approx(est["weights_gib"] + est["kv_cache_gib"])
    est3 = memory_estimate_gib(SUPPORT_MATRIX["internvl3-8b"], max_model_len=32768)
    assert est3["kv_cache_gib"] == pytest.approx(57344 * 32768 / 2**30)
    assert est3["max_model_len"] == 32768
    # Qwen2.5's grouped-query attention keeps less KV per token than InternLM2.5.
    assert est3["kv_bytes_per_token"] < est["kv_bytes_per_token"]


def test_memory_estimate_needs_facts():
    with pytest.raises(ValueError, match="params_b"):
        memory_estimate_gib(resolve_model("SomeOrg/Some-VLM-2B"))
    bare = ModelSpec(key="x", model_id="x/y", llm_family="unknown", params_b=1.0)
    with pytest.raises(ValueError, match="num_layers"):
        memory_estimate_gib(bare)


@pytest.mark.parametrize("key", ["limit_mm_per_prompt", "mm_processor_kwargs", "hf_overrides"])
def test_engine_args_dict_settings_must_be_dicts(key):
    spec = resolve_model("internvl3-8b")
    with pytest.raises(TypeError, match=f"{key} must be a dict"):
        engine_args(spec, **{key: [("image", 4)]})


def test_engine_args_keeps_vllms_count_form_and_the_other_modalities():
    spec = resolve_model("internvl3-8b")
    args = engine_args(spec, limit_mm_per_prompt={"image": {"count": 8}, "video": 1})
    assert args["limit_mm_per_prompt"] == {"image": {"count": 8}, "video": 1}
