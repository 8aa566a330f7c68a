"""A tiny InternVL checkpoint that has memorised a few answers about the sample photos.

vLLM runs its real InternVL code on it on a CPU in seconds (448 px tiles, 256 tokens a tile,
InternViT, pixel shuffle, Qwen2); it knows only the answers of ``answers.toml``. `checkpoint`
gives the folder for vLLM's ``model=``, `examples` what to send and the exact answer, `gate`
whether vLLM reproduces them (95% to pass). Retrain with ``python -m cookbook.tiny train``.
Importing this package loads neither torch, vLLM nor transformers.
"""

from cookbook.tiny.answers import Example, examples
from cookbook.tiny.build import checkpoint
from cookbook.tiny.gating import Report, gate
from cookbook.tiny.training import train

__all__ = ["Example", "Report", "checkpoint", "examples", "gate", "train"]
