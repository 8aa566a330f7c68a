"""The tiny checkpoint in transformers' ``-hf`` layout, as ``OpenGVLab/InternVL3-8B-hf``.

``InternVLForConditionalGeneration`` (no remote code), weights renamed as transformers'
``convert_internvl_weights_to_hf.py`` does (InternViT's ``qkv`` split in three), and
``InternVLProcessor``'s files. vLLM runs it as ``InternS1ForConditionalGeneration``, image
placeholder ``<IMG_CONTEXT>``. The chat template is the original build's: one prompt for both.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

FILES = ("README.md", "config.json", "generation_config.json", "model.safetensors",
         "preprocessor_config.json", "processor_config.json", "tokenizer.json",
         "tokenizer_config.json", "video_preprocessor_config.json")  # fmt: skip
#: Named tokens of the tokenizer. vLLM's InternS1 processor needs ``<video>`` to be one
#: token: it takes the id of ``<|video_pad|>``, the original's video token.
NAMED = {"start_image_token": "<img>", "end_image_token": "</img>",
         "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}  # fmt: skip
#: The conversion script's renames, in its order; the vision ones apply to vision keys.
VISION = [("^vision_model", "model.vision_tower"), ("layers", "layer"),
    ("class_embedding", "cls_token"), ("position_embedding", "position_embeddings"),
    ("patch_embedding", "patch_embeddings.projection"), (r"ls(\d)", r"lambda_\1"),
    (r"attn\.proj", "attention.projection_layer"), ("attn", "attention"),
    ("norm1", "layernorm_before"), ("norm2", "layernorm_after")]  # fmt: skip
OTHER = [(r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head", "lm_head"),
    (r"^mlp1\.0", "model.multi_modal_projector.layer_norm"),
    (r"^mlp1\.1", "model.multi_modal_projector.linear_1"),
    (r"^mlp1\.3", "model.multi_modal_projector.linear_2")]  # fmt: skip


def rename(name: str) -> str:
    """Return the ``-hf`` name of an original weight (before the ``qkv`` split)."""
    for pattern, new in VISION if name.startswith("vision_model") else OTHER:
        name = re.sub(pattern, new, name)
    return name


def convert(folder: Path) -> None:
    """Rewrite ``folder``, an original-layout build (`build.write`), into the ``-hf`` layout."""
    from safetensors.numpy import load_file, save_file

    tensors = {}
    for name, value in load_file(folder / "model.safetensors").items():
        if ".attn.qkv." in name:  # rows q, k, v
            for part, chunk in zip("qkv", value.reshape(3, -1, *value.shape[1:]), strict=True):
                tensors[rename(name).replace(".qkv.", f".{part}_proj.")] = chunk
        else:
            tensors[rename(name)] = value
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = folder / name
        path.write_text(path.read_text().replace('"<|video_pad|>"', '"<video>"'))
    added = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in added}
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    old = json.loads((folder / "config.json").read_text())
    vis, size = old["vision_config"], old["force_image_size"]
    vis.update(model_type="internvl_vision", image_size=[size] * 2,
               patch_size=[vis["patch_size"]] * 2, attention_bias=vis.pop("qkv_bias"),
               use_qk_norm=vis.pop("qk_normalization"), use_absolute_position_embeddings=True,
               use_mean_pooling=True, layer_scale_init_value=vis["initializer_factor"])  # fmt: skip
    for key in ("architectures", "use_flash_attn"):
        del vis[key]
    seq = int((size // vis["patch_size"][0]) ** 2 * old["downsample_ratio"] ** 2)  # 256
    pixels = {"do_resize": True, "size": {"height": size, "width": size}, "resample": 3,
              "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
              "do_convert_rgb": True, "processor_class": "InternVLProcessor"}  # fmt: skip

    def dump(name: str, **data: Any) -> None:
        (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    dump("config.json", architectures=["InternVLForConditionalGeneration"], model_type="internvl",
         downsample_ratio=old["downsample_ratio"], image_seq_length=seq,
         image_token_id=ids["<IMG_CONTEXT>"], projector_hidden_act="gelu",
         vision_feature_layer=old["select_layer"], vision_feature_select_strategy="default",
         torch_dtype=old["torch_dtype"], text_config=old["llm_config"], vision_config=vis,
         tie_word_embeddings=old["llm_config"]["tie_word_embeddings"])  # fmt: skip
    dump("preprocessor_config.json", image_processor_type="GotOcr2ImageProcessorFast",
         crop_to_patches=old["use_thumbnail"], min_patches=old["min_dynamic_patch"],
         max_patches=old["max_dynamic_patch"], **pixels)  # fmt: skip
    dump("video_preprocessor_config.json", video_processor_type="InternVLVideoProcessor", **pixels)
    dump("processor_config.json", processor_class="InternVLProcessor", image_seq_length=seq)
    tok.update(extra_special_tokens=NAMED, processor_class="InternVLProcessor")
    dump("tokenizer_config.json", **tok)
    (folder / "configuration_internvl_chat.py").unlink()
    card = (folder / "README.md").read_text().replace("InternVL (", "InternVL-hf (")
    note = "Its layout is transformers' `-hf` one: image placeholder `<IMG_CONTEXT>`."
    (folder / "README.md").write_text(card.replace("Load it with `trust_remote_code=True`.", note))
    for path in folder.iterdir():
        path.chmod(0o644)


def examples(todo: list[Any] | None = None) -> list[Any]:
    """Return the memorised examples (or ``todo``) with ``<image>`` typed as ``<IMG_CONTEXT>``."""
    from cookbook.tiny.answers import examples as every

    def swap(m: dict[str, Any]) -> dict[str, Any]:  # a user turn: a list of parts
        typed = [{**p, "text": p["text"].replace("<image>", "<IMG_CONTEXT>")} if "text" in p
                 else p for p in m["content"]]  # fmt: skip
        return {**m, "content": typed} if m["role"] == "user" else m

    todo = every() if todo is None else todo
    return [dataclasses.replace(e, messages=[swap(m) for m in e.messages]) for e in todo]
