"""Text tokenisation for CLIP checkpoints, through `transformers`' CLIPTokenizer.

OpenAI-format checkpoints carry no tokenizer files; OpenAI's byte-pair merges file
(`bpe_simple_vocab_16e6.txt.gz`) is turned into the vocabulary and merges that CLIPTokenizer takes,
in the order OpenAI's SimpleTokenizer builds them, so token ids are OpenAI's.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import FalipError, first_line

OPENAI_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
OPENAI_MERGES = 49152 - 256 - 2


def byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> character table, in its own order: printable bytes as themselves,
    then the other bytes as `chr(256 + n)`. OpenAI's vocabulary starts with these 256 symbols."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


class ClipTokenizer:
    """Texts -> (N, context_length) token ids: start token, BPE tokens, end token, padding."""

    def __init__(self, hf_tokenizer, context_length: int, pad_id: int | None = None):
        self.hf = hf_tokenizer
        self.context_length = context_length
        self.pad_id = hf_tokenizer.pad_token_id if pad_id is None else pad_id

    def tells_apart(self) -> bool:
        """Whether different words get different tokens (an empty vocabulary maps all to one)."""
        try:
            first, second = self(["a photo of a cat"]), self(["the dog on the left"])
        except Exception:  # a broken tokenizer: as good as none
            return False
        return not torch.equal(first, second)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise FalipError(f"empty or non-text caption: {text!r}")
        ids = self.hf(texts, truncation=True, max_length=self.context_length)["input_ids"]
        out = torch.full((len(ids), self.context_length), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out


def tokenizer_from_bpe(path: str | Path, context_length: int = 77) -> ClipTokenizer:
    """OpenAI's tokenizer from its merges file; pads with 0 as OpenAI's `clip.tokenize` does."""
    from transformers import CLIPTokenizer

    try:
        lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    except (OSError, EOFError) as exc:
        raise FalipError(f"cannot read BPE merges file {path}: {exc}") from None
    merges = [line for line in lines[1 : OPENAI_MERGES + 1] if line]
    symbols = byte_symbols()
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    hf = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])
    return ClipTokenizer(hf, context_length, pad_id=0)


def tokenizer_from_pretrained(name_or_path: str | Path, context_length: int = 77) -> ClipTokenizer:
    """A Hugging Face tokenizer (hub id or local directory) or an OpenAI BPE file."""
    path = Path(name_or_path)
    if path.is_file():
        return tokenizer_from_bpe(path, context_length)
    if path.is_dir() and (path / OPENAI_BPE_NAME).is_file():
        return tokenizer_from_bpe(path / OPENAI_BPE_NAME, context_length)
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as exc:  # transformers raises OSError, ValueError or hub errors here
        raise FalipError(f"cannot load a tokenizer from {name_or_path!r}: {first_line(exc)}") from None
    return ClipTokenizer(hf, context_length)
