"""The support matrix: each model's id, LLM family and recommended vLLM settings.

Facts come from the models' own cards and ``config.json`` files (cited on each entry) and
from vLLM's InternVL code. The recommended configuration (``max_model_len=8192``,
``dtype="bfloat16"``, ``limit_mm_per_prompt={"image": 4}``) is the one of the vllm-ascend
"Single NPU (InternVL Series)" tutorial.

Example:
    >>> spec = resolve_model("InternVL3-8B")
    >>> engine_args(spec)["limit_mm_per_prompt"]
    {'image': 4}

"""

from __future__ import annotations

import json
import re
import shlex
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MAX_DYNAMIC_PATCH",
    "RECOMMENDED_DTYPE",
    "RECOMMENDED_LIMIT_IMAGES",
    "RECOMMENDED_MAX_MODEL_LEN",
    "SUPPORT_MATRIX",
    "TINY_KEY",
    "ModelSpec",
    "engine_args",
    "kv_bytes_per_token",
    "memory_estimate_gib",
    "resolve_model",
    "serve_args",
    "serve_command",
    "spec_from_checkpoint",
]

#: ``max_model_len`` of the vllm-ascend InternVL tutorial (its support matrix table).
RECOMMENDED_MAX_MODEL_LEN = 8192
#: ``dtype`` of the vllm-ascend InternVL tutorial.
RECOMMENDED_DTYPE = "bfloat16"
#: ``limit_mm_per_prompt={"image": 4}`` of the vllm-ascend InternVL tutorial.
RECOMMENDED_LIMIT_IMAGES = 4
#: ``max_dynamic_patch`` in the ``config.json`` of InternVL2-8B, InternVL2_5-8B, InternVL3-8B.
DEFAULT_MAX_DYNAMIC_PATCH = 12

#: Key of the tiny random-weight checkpoint that the cookbook builds for CPU runs.
TINY_KEY = "tiny"
# model_id placeholder of the tiny entry until resolve_model()/ModelSpec.path() builds it.
_TINY_PLACEHOLDER = "cookbook:tiny"

# vLLM dtype names accepted by `--dtype` (vllm/config/model.py, ModelDType).
_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")

# Text-model types for which vLLM enables InternVL video input: the keys of
# `ctx_video_token_map` in InternVLProcessingInfo.ctx_video_token
# (vllm/model_executor/models/internvl.py, vLLM 0.23.0).
_VIDEO_LLM_TYPES = ("qwen2", "qwen3", "qwen3_moe", "gpt_oss")

# Tiling settings that live at the top level of an InternVL config.json.
_CONFIG_TILING_KEYS = (
    "min_dynamic_patch",
    "max_dynamic_patch",
    "dynamic_image_size",
    "use_thumbnail",
)


@dataclass(frozen=True)
class ModelSpec:
    """One row of the support matrix: what vLLM needs to run an InternVL model.

    Attributes:
        key: Short name, e.g. ``"internvl3-8b"``.
        model_id: What vLLM's ``model=`` takes: a hub id or a local directory. For the tiny
            entry of ``SUPPORT_MATRIX`` a placeholder; use ``path()`` or ``resolve_model``.
        llm_family: ``"internlm2"``, ``"qwen2"`` or ``"unknown"``; decides the chat
            template and stop tokens (read them from the tokenizer all the same).
        max_model_len: Context length in tokens (prompt incl. image tokens + output).
        dtype: vLLM ``dtype`` name.
        limit_images: Images allowed per prompt (``limit_mm_per_prompt={"image": N}``).
        max_dynamic_patch: Most tiles an image is cut into, before the thumbnail.
        supports_video: Whether vLLM accepts ``<video>`` input for this model.
        notes: Free text for users (known issues, hints).
        hub_id: Hugging Face hub id, when there is one.
        modelscope_id: ModelScope id (used when ``VLLM_USE_MODELSCOPE=True``).
        llm: Name of the language model inside, e.g. ``"Qwen2.5-7B"``.
        vision: Name of the vision encoder, e.g. ``"InternViT-300M-448px-V2_5"``.
        params_b: Total parameters in billions (weights memory estimate), or None.
        num_layers: LLM decoder layers (KV cache estimate), or None.
        num_kv_heads: LLM key/value heads (KV cache estimate), or None.
        head_dim: LLM attention head size (KV cache estimate), or None.
        config_max_dynamic_patch: ``max_dynamic_patch`` in the checkpoint's own config;
            ``engine_args`` passes ``mm_processor_kwargs`` only when the two differ.
        source: Where the facts above come from.

    """

    key: str
    model_id: str
    llm_family: str
    max_model_len: int = RECOMMENDED_MAX_MODEL_LEN
    dtype: str = RECOMMENDED_DTYPE
    limit_images: int = RECOMMENDED_LIMIT_IMAGES
    max_dynamic_patch: int = DEFAULT_MAX_DYNAMIC_PATCH
    supports_video: bool = False
    notes: str = ""
    hub_id: str | None = None
    modelscope_id: str | None = None
    llm: str = ""
    vision: str = ""
    params_b: float | None = None
    num_layers: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    config_max_dynamic_patch: int = DEFAULT_MAX_DYNAMIC_PATCH
    source: str = ""

    @property
    def is_tiny(self) -> bool:
        """Return True for the cookbook's tiny random-weight checkpoint."""
        return self.key == TINY_KEY

    def path(self) -> str:
        """Return the value for vLLM's ``model=``: hub id, local directory or tiny build.

        For the tiny entry the checkpoint is built on first use (and cached) by
        ``cookbook.tiny.ensure_tiny_checkpoint()``; that needs torch.
        """
        if self.model_id == _TINY_PLACEHOLDER:
            from cookbook.tiny import ensure_tiny_checkpoint

            return str(ensure_tiny_checkpoint())
        return self.model_id


_INTERNVL_SOURCE = (
    "Hugging Face model card and config.json of {hub}; KV shape from the LLM config "
    "({llm}: num_hidden_layers, num_key_value_heads, hidden_size/num_attention_heads); "
    "recommended settings from the vllm-ascend 'Single NPU (InternVL Series)' tutorial."
)

SUPPORT_MATRIX: dict[str, ModelSpec] = {
    "internvl2-8b": ModelSpec(
        key="internvl2-8b",
        model_id="OpenGVLab/InternVL2-8B",
        hub_id="OpenGVLab/InternVL2-8B",
        modelscope_id="OpenGVLab/InternVL2-8B",
        llm_family="internlm2",
        # The model card: "InternVL2-8B consists of InternViT-300M-448px, an MLP projector,
        # and internlm2_5-7b-chat."
        llm="internlm2_5-7b-chat",
        vision="InternViT-300M-448px",
        params_b=8.08,
        # internlm2_5-7b-chat config.json: 32 layers, 32 heads, 8 KV heads, hidden 4096.
        num_layers=32,
        num_kv_heads=8,
        head_dim=128,
        supports_video=False,
        notes=(
            "InternLM2 tokenizer (remote code): </s>=2 and <|im_end|>=92542 end a turn. "
            "Image input only in vLLM."
        ),
        source=_INTERNVL_SOURCE.format(hub="OpenGVLab/InternVL2-8B", llm="internlm2_5-7b-chat"),
    ),
    "internvl2.5-8b": ModelSpec(
        key="internvl2.5-8b",
        model_id="OpenGVLab/InternVL2_5-8B",
        hub_id="OpenGVLab/InternVL2_5-8B",
        modelscope_id="OpenGVLab/InternVL2_5-8B",
        llm_family="internlm2",
        # The InternVL 2.5 family table: InternViT-300M-448px-V2_5 + internlm2_5-7b-chat.
        llm="internlm2_5-7b-chat",
        vision="InternViT-300M-448px-V2_5",
        params_b=8.08,
        num_layers=32,
        num_kv_heads=8,
        head_dim=128,
        supports_video=False,
        notes=(
            "InternLM2 tokenizer (remote code): </s>=2 and <|im_end|>=92542 end a turn. "
            "Image input only in vLLM."
        ),
        source=_INTERNVL_SOURCE.format(hub="OpenGVLab/InternVL2_5-8B", llm="internlm2_5-7b-chat"),
    ),
    "internvl3-8b": ModelSpec(
        key="internvl3-8b",
        model_id="OpenGVLab/InternVL3-8B",
        hub_id="OpenGVLab/InternVL3-8B",
        modelscope_id="OpenGVLab/InternVL3-8B",
        llm_family="qwen2",
        # The InternVL3 family table: InternViT-300M-448px-V2_5 + Qwen2.5-7B.
        llm="Qwen2.5-7B",
        vision="InternViT-300M-448px-V2_5",
        params_b=7.94,
        # Qwen2.5-7B config.json: 28 layers, 28 heads, 4 KV heads, hidden 3584.
        num_layers=28,
        num_kv_heads=4,
        head_dim=128,
        supports_video=True,
        notes=(
            "Qwen2.5 tokenizer: <|im_end|>=151645 and <|endoftext|>=151643 end a turn; "
            "2 and 92542 are ordinary tokens here. Image and video input in vLLM."
        ),
        source=_INTERNVL_SOURCE.format(hub="OpenGVLab/InternVL3-8B", llm="Qwen2.5-7B"),
    ),
    TINY_KEY: ModelSpec(
        key=TINY_KEY,
        model_id=_TINY_PLACEHOLDER,
        llm_family="qwen2",
        max_model_len=4096,
        # float32: safe on any CPU; the weights are random, so precision does not matter.
        dtype="float32",
        limit_images=4,
        llm="tiny Qwen2 (random weights)",
        vision="tiny InternViT (random weights)",
        supports_video=True,
        notes=(
            "Random weights built by cookbook.tiny for CPU runs and tests: real vLLM "
            "InternVL code paths, meaningless text. Never compare its answers."
        ),
        source="Built by cookbook.tiny; facts read from its config.json by resolve_model().",
    ),
}


def _normalise(name: str) -> str:
    # "OpenGVLab/InternVL2_5-8B" -> "opengvlab/internvl2.5-8b"
    name = name.strip().rstrip("/").lower()
    return re.sub(r"(?<=\d)_(?=\d)", ".", name)


def _aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    for key, spec in SUPPORT_MATRIX.items():
        names = {key, spec.hub_id or "", spec.modelscope_id or ""}
        for ident in (spec.hub_id, spec.modelscope_id):
            if ident:
                names.add(ident.rsplit("/", 1)[-1])
        for name in names:
            if name:
                table[_normalise(name)] = key
    return table


def resolve_model(name_or_path: str | Path) -> ModelSpec:
    """Return the ``ModelSpec`` for a matrix key, a hub id or a local checkpoint directory.

    Accepted, in this order:

    * a key of ``SUPPORT_MATRIX`` or a spelling of a supported model, case-insensitive:
      ``"internvl3-8b"``, ``"InternVL3-8B"``, ``"OpenGVLab/InternVL3-8B"``,
      ``"InternVL2_5-8B"``, ``"InternVL2.5-8B"``;
    * ``"tiny"``: the tiny checkpoint is built (once, then cached) by
      ``cookbook.tiny.ensure_tiny_checkpoint()`` and ``model_id`` is its directory; facts
      (LLM family, ``max_dynamic_patch``, KV shape, parameters) are read from it;
    * a local directory holding an InternVL ``config.json``: a spec derived from that file
      with the recommended settings;
    * any other hub id of the form ``"org/name"``: the recommended settings and
      ``llm_family="unknown"`` (stop tokens then come from the tokenizer at run time).

    Args:
        name_or_path: Model name, hub id or directory.

    Returns:
        The spec. Matrix entries are returned as stored (they are frozen).

    Raises:
        TypeError: If ``name_or_path`` is not a str or Path.
        ValueError: If the name is empty, unknown and neither a directory nor ``org/name``
            (the message lists the known keys), or a directory lacks ``config.json``.

    """
    if not isinstance(name_or_path, str | Path):
        raise TypeError(
            f"model must be a name, hub id or directory (str or Path), "
            f"got {type(name_or_path).__name__}"
        )
    raw = str(name_or_path)
    if not raw.strip():
        raise ValueError(f"model name is empty; use one of {sorted(SUPPORT_MATRIX)}")

    key = _aliases().get(_normalise(raw)) if isinstance(name_or_path, str) else None
    if key == TINY_KEY:
        return _resolve_tiny()
    if key is not None:
        return SUPPORT_MATRIX[key]

    path = Path(raw).expanduser()
    if path.is_dir():
        return spec_from_checkpoint(path)
    if path.exists():
        raise ValueError(f"{raw!r} is a file; pass a checkpoint directory or a model name")

    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", raw.strip()):
        hub_id = raw.strip()
        return ModelSpec(
            key=hub_id.rsplit("/", 1)[-1].lower(),
            model_id=hub_id,
            hub_id=hub_id,
            llm_family="unknown",
            notes=(
                "Not in the support matrix: recommended settings applied; the chat template "
                "and stop token ids come from its tokenizer."
            ),
            source="Defaults of the cookbook support matrix; model not verified.",
        )

    known = ", ".join(sorted(SUPPORT_MATRIX))
    raise ValueError(
        f"unknown model {raw!r}. Use one of the keys [{known}], a hub id such as "
        f"'OpenGVLab/InternVL3-8B', or a local checkpoint directory."
    )


def _resolve_tiny() -> ModelSpec:
    base = SUPPORT_MATRIX[TINY_KEY]
    built = Path(base.path())
    derived = spec_from_checkpoint(built)
    return replace(
        base,
        model_id=str(built),
        llm_family=derived.llm_family if derived.llm_family != "unknown" else base.llm_family,
        max_dynamic_patch=derived.config_max_dynamic_patch,
        config_max_dynamic_patch=derived.config_max_dynamic_patch,
        supports_video=derived.supports_video,
        params_b=derived.params_b,
        num_layers=derived.num_layers,
        num_kv_heads=derived.num_kv_heads,
        head_dim=derived.head_dim,
    )


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _llm_family(llm_config: Any) -> str:
    arch = " ".join(_get(llm_config, "architectures", None) or []).lower()
    model_type = str(_get(llm_config, "model_type", "") or "").lower()
    if "internlm2" in arch or model_type.startswith("internlm2"):
        return "internlm2"
    if "qwen2" in arch or model_type.startswith("qwen2"):
        return "qwen2"
    return "unknown"


def _count_safetensors_params(directory: Path) -> int | None:
    # Each .safetensors file starts with an 8-byte little-endian header size and a JSON
    # header mapping tensor names to {"dtype", "shape", "data_offsets"}.
    total = 0
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    for file in files:
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            total += count
    return total


def _tokenizer_has(directory: Path, token: str) -> bool | None:
    # True/False when the directory has tokenizer files, None when it has none.
    files = [
        directory / name
        for name in ("tokenizer.json", "tokenizer_config.json", "added_tokens.json", "vocab.json")
        if (directory / name).is_file()
    ]
    if not files:
        return None
    needle = json.dumps(token)
    return any(needle in file.read_text(encoding="utf-8", errors="replace") for file in files)


def spec_from_checkpoint(directory: str | Path, *, key: str | None = None) -> ModelSpec:
    """Return a ``ModelSpec`` derived from an InternVL checkpoint directory's config.json.

    Reads ``llm_config`` (``architectures``/``model_type`` -> LLM family; layers, KV heads,
    head size), ``max_dynamic_patch`` and the parameter count from the safetensors headers.
    Everything else takes the recommended settings.

    Args:
        directory: Checkpoint directory (the layout of OpenGVLab's repositories).
        key: Spec key; defaults to the directory name, lower-cased.

    Returns:
        The derived spec, ``model_id`` set to the resolved directory.

    Raises:
        ValueError: If the directory has no readable ``config.json``.

    """
    directory = Path(directory).expanduser().resolve()
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"{str(directory)!r} has no config.json; pass an InternVL checkpoint directory "
            f"(with config.json, tokenizer and weights) or a model name"
        )
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {config_file}: {exc}") from exc

    llm_config = config.get("llm_config") or config.get("text_config") or {}
    family = _llm_family(llm_config)
    layers = llm_config.get("num_hidden_layers")
    heads = llm_config.get("num_attention_heads")
    kv_heads = llm_config.get("num_key_value_heads", heads)
    head_dim = llm_config.get("head_dim")
    if head_dim is None and heads and llm_config.get("hidden_size"):
        head_dim = int(llm_config["hidden_size"]) // int(heads)
    max_patch = int(config.get("max_dynamic_patch", DEFAULT_MAX_DYNAMIC_PATCH))
    model_type = str(llm_config.get("model_type", "")).lower()
    params = _count_safetensors_params(directory)
    # vLLM enables InternVL video only for these LLM types and only when the tokenizer has
    # the context token <|video_pad|> (InternVLProcessingInfo.ctx_video_token).
    has_video_token = _tokenizer_has(directory, "<|video_pad|>")
    supports_video = model_type in _VIDEO_LLM_TYPES and has_video_token is not False
    return ModelSpec(
        key=key or directory.name.lower(),
        model_id=str(directory),
        llm_family=family,
        max_dynamic_patch=max_patch,
        config_max_dynamic_patch=max_patch,
        supports_video=supports_video,
        llm=str((llm_config.get("architectures") or [model_type or "unknown"])[0]),
        params_b=None if params is None else params / 1e9,
        num_layers=None if layers is None else int(layers),
        num_kv_heads=None if kv_heads is None else int(kv_heads),
        head_dim=None if head_dim is None else int(head_dim),
        notes="Derived from a local checkpoint's config.json with the recommended settings.",
        source=f"{config_file}",
    )


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_mapping(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        example = "{'image': 4}" if name == "limit_mm_per_prompt" else "{'max_dynamic_patch': 6}"
        raise TypeError(f"{name} must be a dict such as {example}, got {value!r}")
    return dict(value)


def engine_args(spec: ModelSpec, **overrides: Any) -> dict[str, Any]:
    """Return keyword arguments for ``vllm.LLM(**kwargs)`` from a spec, with overrides.

    Always sets ``model``, ``trust_remote_code=True``, ``max_model_len``, ``dtype`` and
    ``limit_mm_per_prompt={"image": limit_images}``. When ``max_dynamic_patch`` differs
    from the checkpoint's own value it is passed as
    ``mm_processor_kwargs={"max_dynamic_patch": N}`` (vLLM merges these into InternVL's
    image processor: ``InternVLProcessingInfo.get_image_processor`` in
    vllm/model_executor/models/internvl.py), except for video-capable models (InternVL3),
    where it goes into ``hf_overrides`` instead: vLLM 0.23.0 also passes
    ``mm_processor_kwargs`` to ``InternVLVideoProcessor``, which accepts only
    ``image_size``, so the engine fails to start with "InternVLVideoProcessor.__init__()
    got an unexpected keyword argument 'max_dynamic_patch'" (seen with the tiny Qwen2
    checkpoint). The image processor reads the overridden config value, so the tiling is
    the same. Tiling keys given in ``mm_processor_kwargs`` for such a model are moved the
    same way.

    Args:
        spec: The model's spec.
        **overrides: ``max_model_len``, ``dtype``, ``limit_images``, ``max_dynamic_patch``,
            ``model`` override the spec; ``limit_mm_per_prompt``, ``mm_processor_kwargs``
            and ``hf_overrides`` (a dict) are merged into the generated dicts; any other
            key (``enforce_eager``, ``gpu_memory_utilization``, ...) is passed through
            unchanged. None removes a key (vLLM's default applies);
            ``max_dynamic_patch=None`` keeps the checkpoint's own value.

    Returns:
        A new dict; for the tiny spec ``model`` is the built checkpoint directory.

    Raises:
        TypeError: If a numeric setting is not an int, or ``limit_mm_per_prompt``,
            ``mm_processor_kwargs`` or ``hf_overrides`` is not a dict (``hf_overrides``
            may also be a callable).
        ValueError: If a numeric setting is < 1, ``dtype`` is not a vLLM dtype name, or
            tiling must go into an ``hf_overrides`` that is a callable.

    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec (see resolve_model), got {type(spec).__name__}")
    over = dict(overrides)
    removed = {k for k, v in over.items() if v is None}
    for k in removed:
        del over[k]

    max_model_len = _check_positive_int(
        "max_model_len", over.pop("max_model_len", spec.max_model_len)
    )
    limit_images = _check_positive_int("limit_images", over.pop("limit_images", spec.limit_images))
    default_patch = (
        spec.config_max_dynamic_patch if "max_dynamic_patch" in removed else spec.max_dynamic_patch
    )
    max_patch = _check_positive_int(
        "max_dynamic_patch", over.pop("max_dynamic_patch", default_patch)
    )
    dtype = over.pop("dtype", spec.dtype)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")

    user_limits = _check_mapping("limit_mm_per_prompt", over.pop("limit_mm_per_prompt", None))
    limits: dict[str, Any] = {"image": limit_images}
    limits.update(user_limits)

    tiling: dict[str, Any] = {}
    if max_patch != spec.config_max_dynamic_patch:
        tiling["max_dynamic_patch"] = max_patch
    mm_kwargs = _check_mapping("mm_processor_kwargs", over.pop("mm_processor_kwargs", None))
    hf_overrides = over.pop("hf_overrides", None)
    if not callable(hf_overrides):
        hf_overrides = _check_mapping("hf_overrides", hf_overrides) or None
    if spec.supports_video:
        tiling.update({k: mm_kwargs.pop(k) for k in _CONFIG_TILING_KEYS if k in mm_kwargs})
        if tiling:
            if callable(hf_overrides):
                raise ValueError(
                    f"{spec.key} takes tiling settings {sorted(tiling)} through hf_overrides "
                    f"(vLLM 0.23 rejects them in mm_processor_kwargs for video-capable "
                    f"InternVL); pass hf_overrides as a dict, not a callable"
                )
            hf_overrides = {**(hf_overrides or {}), **tiling}
    else:
        mm_kwargs = {**tiling, **mm_kwargs}

    model = over.pop("model", None) or spec.path()
    args: dict[str, Any] = {
        "model": model,
        "trust_remote_code": over.pop("trust_remote_code", True),
        "max_model_len": max_model_len,
        "dtype": dtype,
        "limit_mm_per_prompt": limits,
    }
    if mm_kwargs:
        args["mm_processor_kwargs"] = mm_kwargs
    if hf_overrides:
        args["hf_overrides"] = hf_overrides
    args.update(over)
    for k in removed:
        args.pop(k, None)
    if "limit_images" in removed:
        args.pop("limit_mm_per_prompt", None)
    return args


def serve_args(spec: ModelSpec, *, include_model: bool = False, **overrides: Any) -> list[str]:
    """Return ``vllm serve`` command-line flags equivalent to ``engine_args(spec, ...)``.

    Dicts become compact JSON (``--limit-mm-per-prompt '{"image":4}'``), True becomes a bare
    flag (``--trust-remote-code``), False becomes ``--no-<flag>``, lists repeat their items
    after the flag. The model is positional for ``vllm serve``; pass ``include_model=True``
    for ``--model PATH`` (what ``python -m vllm.entrypoints.openai.api_server`` takes).

    Args:
        spec: The model's spec.
        include_model: Put ``--model <model>`` first.
        **overrides: As for ``engine_args``.

    Returns:
        The argument list (unquoted; ``shlex.join`` it for a shell).

    """
    args = engine_args(spec, **overrides)
    model = args.pop("model")
    flags: list[str] = ["--model", str(model)] if include_model else []
    for name, value in args.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + name.replace("_", "-"))
        elif isinstance(value, Mapping):
            flags += [flag, json.dumps(dict(value), separators=(",", ":"))]
        elif isinstance(value, list | tuple):
            flags += [flag, *(str(v) for v in value)]
        else:
            flags += [flag, str(value)]
    return flags


def serve_command(spec: ModelSpec, **overrides: Any) -> str:
    """Return a shell-quoted ``vllm serve MODEL --flags...`` line for docs and notebooks."""
    args = serve_args(spec, **overrides)
    model = engine_args(spec, **overrides)["model"]
    return shlex.join(["vllm", "serve", str(model), *args])


def kv_bytes_per_token(spec: ModelSpec, dtype_bytes: int = 2) -> int:
    """Return the KV-cache bytes one token takes: 2 * layers * KV heads * head_dim * bytes.

    Args:
        spec: Spec with ``num_layers``, ``num_kv_heads`` and ``head_dim`` set.
        dtype_bytes: Bytes per cached value (2 for bfloat16/float16).

    Raises:
        ValueError: If the spec lacks the LLM shape.

    """
    missing = [n for n in ("num_layers", "num_kv_heads", "head_dim") if getattr(spec, n) is None]
    if missing:
        raise ValueError(
            f"spec {spec.key!r} lacks {', '.join(missing)}; resolve a local checkpoint "
            f"(its config.json has them) or set them with dataclasses.replace"
        )
    assert spec.num_layers and spec.num_kv_heads and spec.head_dim
    return 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * dtype_bytes


def memory_estimate_gib(
    spec: ModelSpec, max_model_len: int | None = None, dtype_bytes: int = 2
) -> dict[str, float]:
    """Return a rough device-memory estimate (GiB) for weights plus one full-length sequence.

    Weights = ``params_b * 1e9 * dtype_bytes``; KV cache = ``kv_bytes_per_token *
    max_model_len``. Activations, the vision encoder's workspace and the runtime are not
    counted, so real use is higher; vLLM's memory profiling decides in the end.

    Args:
        spec: Spec with ``params_b`` and the LLM shape.
        max_model_len: Tokens of KV cache to count; defaults to ``spec.max_model_len``.
        dtype_bytes: Bytes per weight and cache value (2 for bfloat16).

    Returns:
        ``{"weights_gib", "kv_cache_gib", "total_gib", "kv_bytes_per_token", "max_model_len"}``.

    Raises:
        ValueError: If ``params_b`` or the LLM shape is unknown.

    """
    if spec.params_b is None:
        raise ValueError(f"spec {spec.key!r} has no params_b; cannot estimate weight memory")
    length = _check_positive_int("max_model_len", max_model_len or spec.max_model_len)
    per_token = kv_bytes_per_token(spec, dtype_bytes)
    gib = float(2**30)
    weights = spec.params_b * 1e9 * dtype_bytes / gib
    kv = per_token * length / gib
    return {
        "weights_gib": weights,
        "kv_cache_gib": kv,
        "total_gib": weights + kv,
        "kv_bytes_per_token": float(per_token),
        "max_model_len": float(length),
    }
