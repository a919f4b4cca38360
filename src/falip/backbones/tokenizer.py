"""Text tokenisation for CLIP checkpoints: each family's text cleaning, then byte-pair encoding.

OpenAI-format checkpoints carry no tokenizer files; OpenAI's byte-pair merges file
(`bpe_simple_vocab_16e6.txt.gz`) is turned into the vocabulary and merges that transformers'
CLIPTokenizer takes, in the order OpenAI's SimpleTokenizer builds them, so token ids are OpenAI's.

Cleaning is part of a model's input. Each family is tokenized as its own reference tokenizer does:

- OpenAI-format checkpoints (`clean="openai"`), as OpenAI's `clip/simple_tokenizer.py`: ftfy's
  `fix_text`, HTML entities unescaped twice, whitespace runs (the `regex` module's `\\s`) collapsed to one
  space, lower case; the text split by OpenAI's pattern (the `regex` module, case-insensitive), each
  piece's UTF-8 bytes byte-pair encoded. The curly apostrophe of "the man’s" thus becomes the "'s"
  token, as in OpenAI's; without the cleaning it was three other tokens.
- open_clip checkpoints (`clean="open_clip"`), as open_clip's `SimpleTokenizer` (`clean="lower"`,
  its default): the same cleaning (open_clip collapses whitespace with `str.split`, which differs from
  the `regex` module's `\\s` only on U+001C..U+001F, control characters that ftfy has already removed);
  its special tokens are spelled `<start_of_text>` and `<end_of_text>` (same ids).
- Hugging Face checkpoints (`clean=None`): transformers' own tokenizer, as `CLIPProcessor` would call
  it (CLIPTokenizer: NFC, whitespace, lower case, no ftfy; SigLIP's: its own rules).

The split is done in Python with the `regex` module rather than by the tokenizers library's own
pre-tokenizer, whose regular-expression engine (Oniguruma) treats some characters differently
(U+0345 under case-insensitive matching, code points newer than its Unicode tables); the byte-pair
merges are the tokenizers library's BPE model's, fed one piece at a time.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..errors import FalipError, first_line
from ..inputs.texts import check_texts

OPENAI_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
OPENAI_MERGES = 49152 - 256 - 2
# OpenAI's split pattern after its special tokens (clip/simple_tokenizer.py); open_clip's is the same
SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _printable_bytes() -> list[int]:
    return [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]


def byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> character table, in its own order: printable bytes as themselves,
    then the other bytes as `chr(256 + n)`. OpenAI's vocabulary starts with these 256 symbols."""
    printable = _printable_bytes()
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def byte_table() -> list[str]:
    """The symbol of each byte value 0..255 (`byte_symbols`, indexed by byte)."""
    printable = _printable_bytes()
    order = printable + [b for b in range(256) if b not in printable]
    table = [""] * 256
    for byte, symbol in zip(order, byte_symbols()):
        table[byte] = symbol
    return table


def _basic_clean(text: str) -> str:
    """OpenAI's `basic_clean`: ftfy's `fix_text` (mojibake, curly quotes, ligatures, width, NFC),
    HTML entities unescaped twice, stripped."""
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def openai_clean(text: str) -> str:
    """OpenAI's `whitespace_clean(basic_clean(text)).lower()` (clip/simple_tokenizer.py)."""
    import regex

    return regex.sub(r"\s+", " ", _basic_clean(text)).strip().lower()


# family -> (cleaning, the special tokens its split pattern keeps whole)
CLEANINGS: dict[str, tuple[Callable[[str], str], tuple[str, str]]] = {
    "openai": (openai_clean, ("<|startoftext|>", "<|endoftext|>")),
    "open_clip": (openai_clean, ("<start_of_text>", "<end_of_text>")),
}


class ClipTokenizer:
    """Texts -> (N, context_length) token ids: start token, BPE tokens, end token, padding.

    `clean`: "openai" or "open_clip" to clean and split as that family's reference tokenizer does
    (see the module's docstring; the tokenizer must be a byte-level BPE one, as CLIP's are); None to
    call the Hugging Face tokenizer as it is. A text longer than the context is cut, keeping the
    end token last (as `clip.tokenize(truncate=True)`)."""

    def __init__(
        self, hf_tokenizer, context_length: int, pad_id: int | None = None, clean: str | None = None
    ):
        self.hf = hf_tokenizer
        self.context_length = context_length
        self.pad_id = hf_tokenizer.pad_token_id if pad_id is None else pad_id
        if clean is not None and clean not in CLEANINGS:
            raise ValueError(f"unknown text cleaning {clean!r}; choose one of {', '.join(CLEANINGS)}")
        self.clean = clean
        if clean is not None:
            import regex

            cleaner, special = CLEANINGS[clean]
            self._cleaner = cleaner
            self._bpe = hf_tokenizer.backend_tokenizer.model
            self._bytes = byte_table()
            self._start, self._end = hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id
            self._special = dict(zip(special, (self._start, self._end)))
            self._split = regex.compile(
                "|".join(regex.escape(s) for s in special) + "|" + SPLIT, regex.IGNORECASE
            )

    def tells_apart(self) -> bool:
        """Whether different words get different tokens (an empty vocabulary maps all to one)."""
        try:
            first, second = self(["a photo of a cat"]), self(["the dog on the left"])
        except Exception:  # a broken tokenizer: as good as none
            return False
        return not torch.equal(first, second)

    def _encode(self, text: str) -> list[int]:
        """The reference tokenizer's ids of one text (start and end tokens included, cut to fit)."""
        ids = []
        for piece in self._split.findall(self._cleaner(text)):
            if piece in self._special:
                ids.append(self._special[piece])
            else:
                ids.extend(
                    token.id for token in self._bpe.tokenize("".join(self._bytes[b] for b in piece.encode()))
                )
        return [self._start, *ids[: self.context_length - 2], self._end]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """(N, context_length) int64 ids of one text or a list of texts.

        Raises:
            FalipError: no text, or a text `falip.inputs.texts.check_text` refuses (not a string, or
                nothing visible in it)."""
        texts = check_texts(texts)
        if self.clean is not None:
            ids = [self._encode(text) for text in texts]
        else:
            ids = self.hf(texts, truncation=True, max_length=self.context_length)["input_ids"]
        out = torch.full((len(ids), self.context_length), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out


def tokenizer_from_bpe(path: str | Path, context_length: int = 77, clean: str = "openai") -> ClipTokenizer:
    """OpenAI's tokenizer from its merges file, cleaning texts as OpenAI's `simple_tokenizer` (or, with
    `clean="open_clip"`, as open_clip's); pads with 0 as OpenAI's `clip.tokenize` does."""
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
    return ClipTokenizer(hf, context_length, pad_id=0, clean=clean)


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
