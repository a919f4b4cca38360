"""The embedded default model: a small CLIP trained from scratch on this project's generated scenes.

It ships inside the package (`falip/toy/weights/`, a `save_pretrained` directory with its model card)
so that the demo, tests and benchmarks run offline. A model organism, not OpenAI's CLIP: it has
seen coloured shapes on cluttered backgrounds and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FalipError
from . import hf
from .base import LoadedCheckpoint

NAMES = ("toy", "falip-toy")
TOY_DIR = Path(__file__).resolve().parents[1] / "toy" / "weights"


def checkpoint_dir(name: str) -> Path:
    """The folder a loaded model's files live in: the package's for the toy, else the name itself."""
    return TOY_DIR if name in NAMES else Path(name)


def can_load(spec: str) -> bool:
    """The embedded toy model's names, "toy" and "falip-toy"."""
    return spec in NAMES


def load(spec: str) -> LoadedCheckpoint:
    """The embedded toy CLIP, read from the package's `toy/weights` folder as a Hugging Face checkpoint and
    named "toy". A model organism trained on generated scenes, not OpenAI's CLIP. Raises FalipError when
    the folder is missing from the installation."""
    if not (TOY_DIR / "config.json").is_file():
        raise FalipError(f"the embedded toy model is missing from this installation (expected {TOY_DIR})")
    loaded = hf.load(str(TOY_DIR))
    loaded.name = "toy"
    return loaded
