"""Train the tiny checkpoint's tokenizer: a byte-level BPE over the memorised texts.

The pipeline is Qwen2's (NFC, Qwen2's pre-split regex, byte level), trained on the
memorised prompts and answers, so an answer is a few tokens a word. The special
tokens follow the BPE ids, as in Qwen2.5 (``config.SPECIAL_TOKENS``).
"""

from __future__ import annotations

from typing import Any

from cookbook.tiny import config

# Qwen2's pre-tokenizer split (transformers ``models/qwen2/tokenization_qwen2.py``).
_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def train_tokenizer(texts: list[str]) -> Any:
    """Return a ``tokenizers.Tokenizer`` of ``config.VOCAB_SIZE`` ids trained on ``texts``.

    Raises:
        RuntimeError: The texts are too few for that many BPE merges.
    """
    import tokenizers as tk
    from tokenizers.pre_tokenizers import ByteLevel, Split

    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.normalizer = tk.normalizers.NFC()
    split = Split(tk.Regex(_SPLIT), behavior="isolated")
    byte_level = ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([split, byte_level])
    tokenizer.decoder = tk.decoders.ByteLevel()
    size = config.VOCAB_SIZE - len(config.SPECIAL_TOKENS)
    trainer = tk.trainers.BpeTrainer(
        vocab_size=size, show_progress=False, initial_alphabet=ByteLevel.alphabet()
    )
    corpus = texts
    for token in config.SPECIAL_TOKENS + ("<image>", "<video>"):  # no merge spans them
        corpus = [text.replace(token, "\n") for text in corpus]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    if tokenizer.get_vocab_size() != size:
        raise RuntimeError(f"BPE reached {tokenizer.get_vocab_size()} ids, wanted {size}")
    tokenizer.add_special_tokens(
        [tk.AddedToken(t, special=True, normalized=False) for t in config.SPECIAL_TOKENS]
    )
    return tokenizer
