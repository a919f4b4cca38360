"""OpenAI-format CLIP checkpoints: TorchScript `.pt` archives and plain state dicts (.pt/.bin/.safetensors).

The architecture is read off the tensors as OpenAI's `build_model` does (heads = width // 64).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch

from ..errors import FalipError
from ..inputs.files import read_torch_data, read_torchscript
from .base import LoadedCheckpoint, build_backbone
from .clip import ClipConfig, TextConfig, VisionConfig
from .tokenizer import OPENAI_BPE_NAME, tokenizer_from_bpe

SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def can_load(spec: str) -> bool:
    """An existing file whose suffix is one of `SUFFIXES` (.pt, .pth, .bin, .safetensors)."""
    path = Path(spec)
    return path.is_file() and path.suffix in SUFFIXES


WRAPPERS = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without the prefixes training code leaves on every key: `module.` (a model saved
    from `DataParallel` or `DistributedDataParallel`) and `_orig_mod.` (from `torch.compile`), nested
    in any order. As open_clip's `load_state_dict` strips `module.`; a prefix only some keys carry is
    left alone (the weights then fail to match, naming a key)."""
    while state:
        prefix = next((p for p in WRAPPERS if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, a TorchScript archive, or a `torch.save` state dict (also one
    nested under "state_dict"), read on the CPU through `falip.inputs.files`, which runs no code from the
    file; wrapper prefixes stripped (`strip_wrappers`).

    Raises FalipError for a damaged safetensors file, a file that is not a zip archive (truncated, or
    not PyTorch's), an archive torch cannot read or that asks for a global, or one that holds no dict
    of tensors."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return strip_wrappers(load_file(str(path)))
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise FalipError(f"corrupt or unreadable safetensors file {path}: {exc}") from None
    if not zipfile.is_zipfile(path):
        raise FalipError(f"{path} is not a PyTorch checkpoint (not a zip archive); is the file truncated?")
    scripted = read_torchscript(path)
    if scripted is not None:
        return strip_wrappers(scripted)
    # not TorchScript: a saved state dict, as OpenAI's loader also falls back to
    obj = read_torch_data(path, "checkpoint")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FalipError(f"{path} holds no state dict of tensors")
    return strip_wrappers(obj)


def _count_blocks(state: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def config_from_state_dict(state: dict[str, torch.Tensor]) -> ClipConfig:
    """Infer the architecture from OpenAI key names and tensor shapes, as OpenAI's `build_model` does
    (heads = width // 64; the input size is patch size times the position grid's side).

    Raises FalipError for a ResNet CLIP, a state dict without `visual.conv1.weight`, or one missing a
    tensor the inference needs."""
    if "visual.conv1.weight" not in state:
        if any(k.startswith("visual.layer1.") for k in state):
            raise FalipError("this is a ResNet CLIP (RN50, RN101, ...): FALIP needs a ViT image encoder")
        wrapped = next((k for k in state if k.endswith(".visual.conv1.weight")), None)
        if wrapped is not None:
            prefix = wrapped.removesuffix("visual.conv1.weight")
            raise FalipError(
                f"the keys carry a prefix {prefix!r} (e.g. {wrapped}) that falip does not strip "
                f"(it strips {' and '.join(WRAPPERS)}): save the model's own state dict"
            )
        raise FalipError("no `visual.conv1.weight`: not an OpenAI-format CLIP ViT checkpoint")
    try:
        conv = state["visual.conv1.weight"]
        v_width, patch = conv.shape[0], conv.shape[-1]
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        t_width = state["ln_final.weight"].shape[0]
        vision = VisionConfig(
            width=v_width,
            layers=_count_blocks(state, "visual.transformer.resblocks."),
            heads=v_width // 64,
            patch_size=patch,
            image_size=patch * grid,
            mlp_dim=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            output_dim=state["visual.proj"].shape[1],
        )
        text = TextConfig(
            width=t_width,
            layers=_count_blocks(state, "transformer.resblocks."),
            heads=max(1, t_width // 64),
            context_length=state["positional_embedding"].shape[0],
            vocab_size=state["token_embedding.weight"].shape[0],
            mlp_dim=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            output_dim=state["text_projection"].shape[1],
        )
    except KeyError as exc:
        raise FalipError(f"incomplete OpenAI CLIP checkpoint: missing {exc.args[0]!r}") from None
    return ClipConfig(vision, text)


def to_internal_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI names -> ClipBackbone names: the text tower moves under `text.`."""
    out = {}
    for key, value in state.items():
        if key in EXTRA_KEYS:
            continue
        out[key if key.startswith("visual.") or key == "logit_scale" else "text." + key] = value
    return out


def load(spec: str) -> LoadedCheckpoint:
    """Load an OpenAI-format file; OpenAI's BPE file beside it, if any, becomes its tokenizer."""
    path = Path(spec)
    state = read_state_dict(path)
    cfg = config_from_state_dict(state)
    model = build_backbone(cfg, to_internal_keys(state), str(path))
    bpe = path.parent / OPENAI_BPE_NAME
    tok = tokenizer_from_bpe(bpe, cfg.text.context_length) if bpe.is_file() else None
    return LoadedCheckpoint(model=model, tokenizer=tok, name=str(path))
