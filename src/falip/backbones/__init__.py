"""Checkpoint formats, tried in order; a new format is a new module plus one `FORMATS` entry."""

from __future__ import annotations

from pathlib import Path

from ..errors import FalipError
from . import hf, open_clip, openai, toy
from .base import CheckpointFormat, LoadedCheckpoint, build_backbone
from .clip import ClipBackbone, ClipConfig, TextConfig, VisionConfig
from .tokenizer import ClipTokenizer, tokenizer_from_bpe, tokenizer_from_pretrained

FORMATS: list[CheckpointFormat] = [
    CheckpointFormat("toy", toy.can_load, toy.load),
    CheckpointFormat("openai", openai.can_load, openai.load),
    CheckpointFormat("open_clip", open_clip.can_load, open_clip.load),
    CheckpointFormat("huggingface", hf.can_load, hf.load),  # last: it also takes hub ids
]


def register_format(fmt: CheckpointFormat) -> None:
    """Put a checkpoint format ahead of the built-in ones."""
    FORMATS.insert(0, fmt)


def _looks_like_missing_path(spec: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else that does not exist is a missing file."""
    path = Path(spec)
    if path.exists():
        return False
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or path.suffix in openai.SUFFIXES


def load_checkpoint(spec: str, tokenizer: str | None = None) -> LoadedCheckpoint:
    """Load a CLIP ViT from a hub id or a path, in the first format that claims it."""
    if _looks_like_missing_path(spec):
        raise FalipError(f"checkpoint not found: {spec}")
    for fmt in FORMATS:
        if fmt.can_load(spec):
            loaded = fmt.load(spec)
            break
    else:
        raise FalipError(
            f"no CLIP checkpoint at {spec!r}: expected a Hugging Face directory with config.json, an "
            "open_clip "
            f"directory with {open_clip.CONFIG}, a hub id, or an OpenAI-format file "
            f"({', '.join(openai.SUFFIXES)})"
        )
    if tokenizer is not None:
        loaded.tokenizer = tokenizer_from_pretrained(tokenizer, loaded.model.cfg.text.context_length)
    return loaded


__all__ = [
    "CheckpointFormat",
    "ClipBackbone",
    "ClipConfig",
    "ClipTokenizer",
    "FORMATS",
    "LoadedCheckpoint",
    "TextConfig",
    "VisionConfig",
    "build_backbone",
    "load_checkpoint",
    "register_format",
    "tokenizer_from_bpe",
    "tokenizer_from_pretrained",
]
