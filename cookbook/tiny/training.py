"""Train the tiny checkpoint to memorise ``answers.toml``, deterministically from a seed.

Each example becomes the tokens and pixels vLLM makes of it (its chat template, placeholder
expansion and InternVL preprocessing). The loss is on the answer and ``<|im_end|>``; the whole
model trains (AdamW, one-cycle learning rate, gradient clipping). Examples that send the same
images form a group whose shared prompt prefix runs once a step, its KV cache shared.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path
from typing import Any

from cookbook.tiling import TOKENS_PER_TILE
from cookbook.tiny import build, config
from cookbook.tiny.answers import Example, clip_as_sent, examples

STEPS, MAX_LR = 1800, 3e-3  # optimizer steps, peak learning rate of the one-cycle schedule


def vllm_prompt(messages: list[dict[str, Any]]) -> str:
    """Return the prompt text vLLM renders for ``messages``, before placeholder expansion."""
    import jinja2

    rendered = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):  # as vllm.entrypoints.chat_utils does it
            text = "\n".join(p["text"] for p in content if p["type"] == "text")
            counts = {"<image>": 0, "<video>": 0}
            for part in content:
                kind = {"image_pil": "<image>", "video_url": "<video>"}.get(part["type"])
                if kind:
                    counts[kind] += 1
            missing = [k for k, n in counts.items() for _ in range(n - text.count(k))]
            content = "\n".join([*missing, text])
        rendered.append({"role": message["role"], "content": content})
    template = jinja2.Template(config.CHAT_TEMPLATE)
    return template.render(messages=rendered, add_generation_prompt=True)


def encode(example: Example, tokenizer: Any) -> dict[str, Any]:
    """Return ``{"ids", "answer_start", "media"}`` for one example, as vLLM would see it.

    ``media``: ``(digest, pixels (tiles, 3, 448, 448))`` in prompt order, for the placeholders.
    """
    from vllm.transformers_utils.processors.internvl import (
        image_to_pixel_values_internvl,
        video_to_pixel_values_internvl,
    )

    media, pieces = [], []
    for message in example.messages:
        for part in message["content"] if not isinstance(message["content"], str) else []:
            if part["type"] == "image_pil":
                pixels = image_to_pixel_values_internvl(
                    part["image_pil"], input_size=448, min_num=1, max_num=12, use_thumbnail=True
                )
                pieces.append("<img>" + "<IMG_CONTEXT>" * TOKENS_PER_TILE * len(pixels) + "</img>")
            elif part["type"] == "video_url":
                pixels = video_to_pixel_values_internvl(
                    clip_as_sent(), input_size=448, min_num=1, max_num=1, use_thumbnail=False
                )
                frame = "<img>" + "<|video_pad|>" * TOKENS_PER_TILE + "</img>"
                pieces.append("".join(f"Frame{i + 1}: {frame}" for i in range(len(pixels))))
            else:
                continue
            media.append((hashlib.sha1(pixels.numpy().tobytes()).hexdigest(), pixels))
    prompt = re.sub("<image>|<video>", lambda _: pieces.pop(0), vllm_prompt(example.messages))
    ids = tokenizer.encode(prompt).ids
    answer = tokenizer.encode(example.answer).ids + [config.ids()["<|im_end|>"]]
    return {"ids": ids + answer, "answer_start": len(ids), "media": media}


def train(out_dir: str | Path, *, steps: int = STEPS, seed: int = 0, log: Any = print) -> Path:
    """Train; write ``model.safetensors`` and ``tokenizer.json`` into ``out_dir``; return it.

    The same ``seed`` (initial weights, group order) and ``steps`` give the same bytes on one
    machine. A step is one group of examples sharing their images; 1800 steps take about 15
    minutes on 2 CPU cores (0.5 s a step). Check with `cookbook.tiny.gate`.
    """
    import torch

    from cookbook.tiny.model import TinyInternVL
    from cookbook.tiny.tokenizer import train_tokenizer

    torch.manual_seed(seed)
    torch.set_flush_denormal(True)  # as the loss nears 0, denormal floats slow steps 5x
    todo = examples()
    tokenizer = train_tokenizer([vllm_prompt(e.messages) + e.answer for e in todo])
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for example in todo:  # a group: the same images, the same tokens up to the first one's end
        encoded = encode(example, tokenizer)
        ids = encoded["ids"]
        first_image = ids[: ids.index(config.ids()["</img>"]) + 1]
        groups.setdefault((*[d for d, _ in encoded["media"]], *first_image), []).append(encoded)
    model = TinyInternVL(config.model_config())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    init = build.random_weights(shapes, seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in init.items()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LR, total_steps=steps)
    order: list[list[dict[str, Any]]] = []
    rng = random.Random(seed)
    for step in range(steps):
        if not order:
            order = list(groups.values())
            rng.shuffle(order)
        loss = _group_loss(model, order.pop())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps}  loss {loss.item():.4f}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    from safetensors.torch import save_file

    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}  # float32
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _group_loss(model: Any, group: list[dict[str, Any]]) -> Any:
    """Return the mean cross-entropy of the answer tokens of a group sharing its images."""
    import torch
    import torch.nn.functional as F

    lm = model.language_model
    features = {d: model.image_features(p) for d, p in group[0]["media"]}
    mm_ids = [config.ids()["<IMG_CONTEXT>"], config.ids()["<|video_pad|>"]]
    embeds = []
    for item in group:
        ids = torch.tensor(item["ids"])
        x = lm.model.embed_tokens(ids)
        mask = torch.isin(ids, torch.tensor(mm_ids))
        x = x.masked_scatter(mask[:, None], torch.cat([features[d] for d, _ in item["media"]]))
        embeds.append(x)
    # The shared prefix: equal tokens (and the same images), ending before any answer.
    common = os.path.commonprefix([item["ids"] for item in group])
    prefix = min(len(common), *(item["answer_start"] - 1 for item in group))
    cache = lm.model(inputs_embeds=embeds[0][None, :prefix], use_cache=True).past_key_values
    cache.batch_repeat_interleave(len(group))
    longest = max(len(x) for x in embeds) - prefix
    suffix = torch.stack([F.pad(x[prefix:], (0, 0, 0, longest - len(x) + prefix)) for x in embeds])
    hidden = lm.model(inputs_embeds=suffix, past_key_values=cache).last_hidden_state
    picked, targets = [], []
    for row, item in enumerate(group):
        start, end = item["answer_start"] - prefix, len(item["ids"]) - prefix
        picked.append(hidden[row, start - 1 : end - 1])
        targets += item["ids"][item["answer_start"] :]
    return F.cross_entropy(lm.lm_head(torch.cat(picked)), torch.tensor(targets))
