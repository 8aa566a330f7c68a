"""A tiny InternVL checkpoint that has memorised a few answers about the sample photos.

vLLM runs its real InternVL code on it on a CPU in seconds: dynamic tiling into 448 px
tiles, 256 placeholder tokens a tile, InternViT, pixel shuffle, a Qwen2 language model.
It has memorised the answers of ``answers.toml`` (descriptions, counts, boxes, OCR, a
conversation, JSON, video) and knows nothing else; it is not a capable model.

    from cookbook import tiny
    path = tiny.checkpoint()          # folder for vLLM's model= (cached, about a second)
    tiny.checkpoint(layout="hf")      # the same weights in transformers' -hf layout
    for example in tiny.examples():   # what to send, and the exact answer it gives
        ...
    print(tiny.gate(llm))             # does vLLM reproduce them? (>= 95% to pass)

Retrain with ``python -m cookbook.tiny train``. Importing this package loads neither
torch, vLLM nor transformers; the functions import what they need.
"""

from cookbook.tiny.answers import Example, examples
from cookbook.tiny.build import checkpoint
from cookbook.tiny.gating import Report, gate
from cookbook.tiny.training import train

__all__ = ["Example", "Report", "checkpoint", "examples", "gate", "train"]
