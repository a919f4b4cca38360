"""What every checkpoint loader returns, and the one place weights enter a `ClipBackbone`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import FalipError
from .clip import ClipBackbone, ClipConfig
from .tokenizer import ClipTokenizer


@dataclass
class LoadedCheckpoint:
    """What a checkpoint format's `load` returns.

    `model`: the internal model in eval mode; `tokenizer`: None when the checkpoint carries none (text
    then needs `tokenizer=`); `name`: how the model is named in outputs; `mean` / `std`: per RGB channel,
    on pixels scaled to [0, 1] (None: OpenAI's `OPENAI_MEAN` / `OPENAI_STD`); `resize_mode`: the
    checkpoint's own preprocessing ("squash", "crop" or "pad"), None when it does not say."""

    model: ClipBackbone
    tokenizer: ClipTokenizer | None
    name: str
    mean: tuple[float, float, float] | None = None  # None: OpenAI's statistics
    std: tuple[float, float, float] | None = None
    resize_mode: str | None = None  # the checkpoint's own preprocessing ("squash", "crop", "pad"), if it says
    tokenizer_note: str | None = None  # why there is no tokenizer, when the loader knows (a missing package)


@dataclass(frozen=True)
class CheckpointFormat:
    """A registry entry: `can_load(spec)` says whether `load(spec)` applies to a name or path."""

    name: str
    can_load: Callable[[str], bool]
    load: Callable[[str], LoadedCheckpoint]


def build_backbone(cfg: ClipConfig, state: dict[str, torch.Tensor], source: str) -> ClipBackbone:
    """A float32 `ClipBackbone` of `cfg`, in eval mode, holding exactly `state` (internal key names).

    Raises FalipError, prefixed with `source` (the checkpoint's name), for an architecture the model
    cannot be built from (a ValueError while building) and for any missing, extra or misshapen tensor."""
    try:
        model = ClipBackbone(cfg)
    except ValueError as exc:
        raise FalipError(f"{source}: unsupported architecture: {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise FalipError(f"{source}: weights do not match the inferred CLIP ViT ({what})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise FalipError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()
