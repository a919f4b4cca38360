"""open_clip checkpoints (LAION-2B, DataComp, DFN, MetaCLIP, ...): a folder with
`open_clip_config.json` and `open_clip_model.safetensors` (or `open_clip_pytorch_model.bin`), or
`hf-hub:org/name` through `huggingface_hub` (its cache when offline).

The architecture comes from the config's `model_cfg`, not from tensor shapes: open_clip models may
set `head_width` (heads = width // head_width, where OpenAI's files imply 64), and most of them use
plain GELU where OpenAI's use QuickGELU (`quick_gelu: true`, or a name ending in `-quickgelu`, marks
the QuickGELU ones: OpenAI's, DFN's, MetaCLIP 400m/fullcc). Loading such a file as an OpenAI file
would give silently wrong features. The weights use OpenAI's key names. Only ViT towers that pool
the [CLS] token are supported; anything else is an error naming what is unsupported.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import FalipError, first_line
from .base import LoadedCheckpoint, build_backbone
from .clip import ClipConfig, TextConfig, VisionConfig
from .openai import read_state_dict, to_internal_keys
from .tokenizer import OPENAI_BPE_NAME, ClipTokenizer, tokenizer_from_bpe

CONFIG = "open_clip_config.json"
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HUB_PREFIX = "hf-hub:"
RESIZE_MODES = {"shortest": "crop", "longest": "pad", "squash": "squash"}
# model_cfg options that change the computation in ways this project does not implement
UNSUPPORTED_VISION = {
    "timm_model_name": "a timm image tower",
    "attentional_pool": "an attentional pooler",
    "global_average_pool": "average pooling",
    "final_ln_after_pool": "a final LayerNorm after pooling",
    "no_ln_pre": "a tower without ln_pre",
    "ls_init_value": "layer scale",
    "output_tokens": "token outputs",
    "act_kwargs": "activation options",
    "norm_kwargs": "LayerNorm options",
}
UNSUPPORTED_TEXT = {
    "hf_model_name": "a Hugging Face text tower",
    "ls_init_value": "layer scale",
    "embed_cls": "a text [CLS] token",
    "no_causal_mask": "a text tower without causal mask",
    "proj_bias": "a text projection bias",
    "act_kwargs": "activation options",
    "norm_kwargs": "LayerNorm options",
}


def can_load(spec: str) -> bool:
    """`hf-hub:org/name` ids, and local folders holding `open_clip_config.json`."""
    return spec.startswith(HUB_PREFIX) or (Path(spec) / CONFIG).is_file()


def _hub_file(repo: str, filename: str, required: bool = True) -> Path | None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from .hf import hub_reachable

    if not hub_reachable():
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
        if required:
            raise FalipError(
                f"{HUB_PREFIX}{repo}: {filename} is not in the Hugging Face cache and the hub cannot be "
                "reached "
                "(no network?): give a local open_clip folder"
            )
        return None
    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as exc:  # missing repo or file, or a network failure
        if required:
            raise FalipError(f"cannot fetch {filename} of {HUB_PREFIX}{repo}: {first_line(exc)}") from None
        return None


def _files(spec: str) -> tuple[Path, Path, Path | None]:
    """The config file, the weights file, and the local folder (None for a hub id)."""
    if spec.startswith(HUB_PREFIX):
        repo = spec[len(HUB_PREFIX) :]
        config = _hub_file(repo, CONFIG)
        for name in WEIGHTS:
            weights = _hub_file(repo, name, required=False)
            if weights is not None:
                return config, weights, config.parent
        raise FalipError(f"{spec}: no {' or '.join(WEIGHTS)} found")
    folder = Path(spec)
    for name in WEIGHTS:
        if (folder / name).is_file():
            return folder / CONFIG, folder / name, folder
    raise FalipError(f"{folder}: has {CONFIG} but no weights ({' or '.join(WEIGHTS)})")


def _check(section: dict, unsupported: dict[str, str], where: str) -> None:
    for key, what in unsupported.items():
        value = section.get(key)
        if value not in (None, False, "", {}):
            raise FalipError(
                f"{where}: this open_clip model uses {what} ({key}={value!r}), which falip does not support; "
                "only ViT towers that pool the [CLS] token"
            )
    pool = section.get("pool_type", "tok" if where.endswith("vision_cfg") else "argmax")
    if pool not in ("tok", "argmax"):
        raise FalipError(
            f"{where}: pool_type {pool!r} is not supported (the [CLS] token / the end-of-text token only)"
        )


def config_from_open_clip(data: dict, name: str) -> ClipConfig:
    """open_clip's `model_cfg` (in `data`, the parsed `open_clip_config.json`) -> the internal config.

    Heads come from `heads`, else `width // head_width`; MLP sizes from `mlp_ratio`; QuickGELU when
    `quick_gelu` is set or the name (`name`, also used in messages) ends in "-quickgelu", else GELU;
    open_clip's own defaults fill what the file leaves out. Raises FalipError when `model_cfg`,
    `vision_cfg` or `embed_dim` is missing, for a value that is not a number, a non-square patch or
    image size, or an option this project does not implement (`UNSUPPORTED_VISION`, `UNSUPPORTED_TEXT`,
    pooling other than the [CLS] / end-of-text token)."""
    try:
        model_cfg = data["model_cfg"]
        vision_cfg, text_cfg, embed_dim = (
            model_cfg["vision_cfg"],
            model_cfg.get("text_cfg", {}),
            model_cfg["embed_dim"],
        )
    except (KeyError, TypeError):
        raise FalipError(f"{name}: {CONFIG} has no model_cfg with vision_cfg and embed_dim") from None
    _check(vision_cfg, UNSUPPORTED_VISION, f"{name}: vision_cfg")
    _check(text_cfg, UNSUPPORTED_TEXT, f"{name}: text_cfg")
    quick = (
        bool(model_cfg.get("quick_gelu", False))
        or "quickgelu" in Path(name.removeprefix(HUB_PREFIX)).name.lower()
    )
    act = "quick_gelu" if quick else "gelu"
    try:
        v_width = int(vision_cfg.get("width", 768))
        heads = (
            int(vision_cfg["heads"])
            if "heads" in vision_cfg
            else v_width // int(vision_cfg.get("head_width", 64))
        )
        patch = _square(vision_cfg.get("patch_size", 16), "patch_size", name)
        image = _square(vision_cfg.get("image_size", 224), "image_size", name)
        vision = VisionConfig(
            width=v_width,
            layers=int(vision_cfg.get("layers", 12)),
            heads=heads,
            patch_size=int(patch),
            image_size=int(image),
            mlp_dim=int(v_width * float(vision_cfg.get("mlp_ratio", 4.0))),
            output_dim=int(embed_dim),
            act=act,
        )
        t_width = int(text_cfg.get("width", 512))
        text = TextConfig(
            width=t_width,
            layers=int(text_cfg.get("layers", 12)),
            heads=int(text_cfg.get("heads", 8)),
            context_length=int(text_cfg.get("context_length", 77)),
            vocab_size=int(text_cfg.get("vocab_size", 49408)),
            mlp_dim=int(t_width * float(text_cfg.get("mlp_ratio", 4.0))),
            output_dim=int(embed_dim),
            act=act,
        )
    except (TypeError, ValueError) as exc:
        raise FalipError(f"{name}: bad value in {CONFIG}: {exc}") from None
    return ClipConfig(vision, text)


def _square(value, what: str, name: str) -> int:
    """One side of a square: open_clip allows a pair, which must then be equal."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise FalipError(f"{name}: non-square {what} {list(value)} is not supported")
        value = value[0]
    return int(value)


def _tokenizer(folder: Path | None, spec: str, context_length: int) -> ClipTokenizer | None:
    """The checkpoint's Hugging Face tokenizer files, or OpenAI's BPE file beside it; else none. Either
    way texts are cleaned and split as open_clip's own SimpleTokenizer does (`clean="open_clip"`)."""
    if folder is not None and (folder / OPENAI_BPE_NAME).is_file():
        return tokenizer_from_bpe(folder / OPENAI_BPE_NAME, context_length, clean="open_clip")
    if folder is not None and any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        from transformers import AutoTokenizer

        try:
            tok = ClipTokenizer(
                AutoTokenizer.from_pretrained(str(folder)), context_length, pad_id=0, clean="open_clip"
            )
        except Exception:  # unreadable tokenizer files: the checkpoint has none
            return None
        return tok if tok.tells_apart() else None
    return None


def load(spec: str) -> LoadedCheckpoint:
    """Load an open_clip checkpoint: a local folder or an `hf-hub:` id (from the cache when offline).

    The architecture comes from `model_cfg` (`config_from_open_clip`), the weights (OpenAI's key names)
    from `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`, the image mean / std and resize
    mode from `preprocess_cfg` (open_clip's "shortest" -> "crop", "longest" -> "pad", "squash"; default
    "crop"). Raises FalipError for an unreadable config, missing weights, an unsupported architecture
    (`UNSUPPORTED_VISION`, `UNSUPPORTED_TEXT`, pooling other than [CLS] / end-of-text), or weights that do
    not match the config."""
    config_path, weights_path, folder = _files(spec)
    try:
        data = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FalipError(f"cannot read {config_path}: {first_line(exc)}") from None
    cfg = config_from_open_clip(data, spec)
    state = {k: v for k, v in read_state_dict(weights_path).items() if k != "attn_mask"}
    model = build_backbone(cfg, to_internal_keys(state), spec)
    pre = data.get("preprocess_cfg", {}) or {}
    mean, std = pre.get("mean"), pre.get("std")
    return LoadedCheckpoint(
        model=model,
        tokenizer=_tokenizer(folder, spec, cfg.text.context_length),
        name=spec,
        mean=tuple(mean) if mean else None,
        std=tuple(std) if std else None,
        resize_mode=RESIZE_MODES.get(pre.get("resize_mode", "shortest"), "crop"),
    )
