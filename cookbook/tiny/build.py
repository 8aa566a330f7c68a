"""Build the tiny checkpoint folder vLLM loads, from the shipped files; no torch needed.

OpenGVLab's InternVL layout (``InternVLChatModel``, the config class as remote code), so vLLM
runs its real InternVL code on it. Cached in ``tiny/<key>`` under ``$COOKBOOK_CACHE`` (default
``~/.cache/internvl-cookbook``), the key a hash of the shipped files and this builder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

from cookbook.tiny import config, hf

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights"  # model.safetensors (float32) and tokenizer.json, from `train`
REMOTE_CODE = "configuration_internvl_chat.py"
SOURCES = ("build.py", "config.py", "checkpoint.toml", REMOTE_CODE)  # in the cache key
FILES = ("README.md", "config.json", REMOTE_CODE, "generation_config.json",
         "model.safetensors", "tokenizer.json", "tokenizer_config.json")  # fmt: skip

_CARD = """# Tiny InternVL ({kind})

Built by `cookbook.tiny` of the InternVL cookbook, to run vLLM's real InternVL code
(tiling, placeholders, InternViT, pixel shuffle, Qwen2) on a CPU in seconds.
Load it with `trust_remote_code=True`.

{what}
"""
_TRAINED = """It has memorised a few fixed answers about the cookbook's sample photos
(`cookbook/tiny/answers.toml`) and knows nothing else: it is not a capable model. Any
other question, photo or wording gets a meaningless answer."""
_RANDOM = "Its weights are random (seed 0): every answer is noise."


def checkpoint(trained: bool = True, layout: str = "original") -> Path:
    """Return the folder to pass as vLLM's ``model=`` (with ``trust_remote_code=True``).

    Built on first use (about a second), then cached. ``trained=False``: random weights (seed
    0). ``layout="hf"``: transformers' ``-hf`` layout (`cookbook.tiny.hf`), under ``tiny-hf``.
    Raises ValueError (another layout), FileNotFoundError (shipped weights missing: run
    ``python -m cookbook.tiny train``), OSError (the cache folder cannot be written).
    """
    if layout not in ("original", "hf"):
        raise ValueError(f"layout must be 'original' or 'hf', got {layout!r}")
    files = hf.FILES if layout == "hf" else FILES
    digest = hashlib.sha256(b"trained" if trained else b"random-0")
    for path in [WEIGHTS / "model.safetensors", WEIGHTS / "tokenizer.json"]:
        digest.update(path.read_bytes())
    for name in SOURCES:
        digest.update((HERE / name).read_bytes())
    if layout == "hf":
        digest.update((HERE / "hf.py").read_bytes())
    root = Path(os.environ.get("COOKBOOK_CACHE") or "~/.cache/internvl-cookbook").expanduser()
    target = root / ("tiny-hf" if layout == "hf" else "tiny") / digest.hexdigest()[:16]
    if _complete(target, files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        write(tmp, trained)
        if layout == "hf":
            hf.convert(tmp)
        if target.exists() and not _complete(target, files):
            shutil.rmtree(target)  # an incomplete folder, left by hand
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first, with the same files
            if not _complete(target, files):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(folder: Path, files: tuple[str, ...] = FILES) -> bool:
    """Return whether ``folder`` holds every file of ``files``."""
    return all((folder / name).is_file() for name in files)


def write(folder: Path, trained: bool, weights: Path = WEIGHTS) -> None:
    """Write every file of ``FILES`` into ``folder``, from the files in ``weights``."""
    shutil.copyfile(weights / "tokenizer.json", folder / "tokenizer.json")
    shutil.copyfile(HERE / REMOTE_CODE, folder / REMOTE_CODE)
    if trained:
        shutil.copyfile(weights / "model.safetensors", folder / "model.safetensors")
    else:
        from safetensors import safe_open
        from safetensors.numpy import save_file

        with safe_open(weights / "model.safetensors", "np") as shipped:
            shapes = {k: tuple(shipped.get_slice(k).get_shape()) for k in shipped.keys()}
        save_file(random_weights(shapes, seed=0), folder / "model.safetensors")
    for name, data in [
        ("config.json", config.model_config()),
        ("tokenizer_config.json", config.tokenizer_config()),
        ("generation_config.json", config.generation_config()),
    ]:
        (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    what = _TRAINED if trained else _RANDOM
    card = _CARD.format(kind="memorised answers" if trained else "random weights", what=what)
    (folder / "README.md").write_text(card)
    for path in folder.iterdir():
        path.chmod(0o644)  # mkdtemp and safetensors make private files; keep the cache shared
    folder.chmod(0o755)


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, Any]:
    """Return float32 numpy initial weights for ``{name: shape}``, the same for one seed.

    Norm weights 1, biases 0, InternViT's layer scales ``ls1``/``ls2`` 0.1 (``initializer_factor``),
    all else normal(0, 0.02) seeded by ``(seed, crc32(name))``, each tensor on its own.
    """
    import numpy as np

    out = {}
    for name, shape in sorted(shapes.items()):
        leaf = name.rsplit(".", 1)[-1]
        is_norm = "norm" in name or name.startswith("mlp1.0.")  # mlp1.0 is a LayerNorm
        if leaf in ("ls1", "ls2"):
            out[name] = np.full(shape, 0.1, np.float32)
        elif is_norm and leaf == "weight":
            out[name] = np.ones(shape, np.float32)
        elif leaf == "bias":
            out[name] = np.zeros(shape, np.float32)
        else:
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            out[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    return out
