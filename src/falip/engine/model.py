"""`falip.load` and `FalipModel`: a CLIP ViT with one preprocessing, a tokenizer and the foveal encoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..backbones import ClipBackbone, ClipTokenizer, load_checkpoint
from ..backbones.clip import resize_positions
from ..errors import FalipError, spelled
from ..inputs import checks
from ..inputs.images import ImageInput, open_image
from ..inputs.masks import resolve_layers, select_heads
from ..inputs.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocessing
from ..inputs.regions import Region, check_regions, region_bias_rows
from ..inputs.settings import FalipSettings
from ..inputs.texts import check_texts
from .ablations import OPERATIONS, ablated_features
from .encoder import DEFAULT_CHUNK, FovealEncoder
from .pasta import PASTA_SCALE, pasta_features
from .two_stream import TWO_STREAM_MODES, two_stream_features
from .unleash import unleash_features

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TextInput = str | Sequence[str] | torch.Tensor


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise FalipError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _device(device: str | torch.device) -> torch.device:
    return checks.device(device)


class FalipModel:
    """CLIP with foveal attention. Features are projected and unnormalised, like CLIP's `encode_image`."""

    def __init__(
        self,
        backbone: ClipBackbone,
        preprocessing: Preprocessing,
        tokenizer: ClipTokenizer | None = None,
        name: str = "",
        box_rule: str = "authors",
        gaussian: str = "authors",
        chunk_size: int = DEFAULT_CHUNK,
    ):
        self.backbone = backbone.eval()
        self.preprocessing = preprocessing
        self.tokenizer = tokenizer
        self.tokenizer_note: str | None = None  # why there is none, when the loader knew (a missing package)
        self.name = name
        self.settings = FalipSettings(box_rule=box_rule, gaussian=gaussian)
        chunk_size = checks.count("chunk_size", chunk_size)
        if self.is_siglip:
            from ..backbones.siglip import SiglipRegionEncoder

            self.encoder = SiglipRegionEncoder(backbone.visual, chunk_size)
        else:
            self.encoder = FovealEncoder(backbone.visual, chunk_size)

    @property
    def box_rule(self) -> str:
        """The box rule of the model's own settings (`settings.box_rule`)."""
        return self.settings.box_rule

    @property
    def gaussian(self) -> str:
        """The Gaussian of the model's own settings (`settings.gaussian`)."""
        return self.settings.gaussian

    def settings_for(self, settings: FalipSettings | None = None, **changes) -> FalipSettings:
        """The settings a call runs with: `settings` (or the model's own: the paper's, with its box rule
        and Gaussian), with the keyword arguments that are not None put on top (`alpha=`, `sigma=`,
        `layers=`, `form=`). Raises FalipError for a value `FalipSettings` refuses."""
        return (settings or self.settings).with_(**changes)

    def __repr__(self) -> str:
        v = self.backbone.cfg.vision
        return (
            f"FalipModel({self.name!r}, ViT {v.layers} layers x {v.width}, patch {v.patch_size}, "
            f"{v.image_size}px, preprocess={self.preprocessing.mode!r}, {self.dtype}, {self.device})"
        )

    @property
    def is_siglip(self) -> bool:
        """A SigLIP: no [CLS] token; FALIP's bias goes on its attention-pooling query (see
        backbones.siglip)."""
        return getattr(self.backbone, "kind", "clip") == "siglip"

    def needs_cls(self, what: str) -> None:
        """Methods built on the [CLS] token's residual stream are for CLIP ViTs only."""
        if self.is_siglip:
            raise FalipError(
                f"{what} works on a CLIP ViT's [CLS] token; {self.name or 'this model'} is a SigLIP, which "
                "has none"
            )

    @property
    def device(self) -> torch.device:
        """The device the backbone's weights are on."""
        return self.backbone.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the backbone's weights."""
        return self.backbone.logit_scale.dtype

    @property
    def depth(self) -> int:
        """The number of transformer layers of the vision tower."""
        return self.backbone.cfg.vision.layers

    @property
    def patch_size(self) -> int:
        """The vision tower's patch size in pixels."""
        return self.backbone.cfg.vision.patch_size

    @property
    def default_layers(self) -> list[int]:
        """The 0-based layers FALIP masks when none are given (`resolve_layers(None, depth)`)."""
        return resolve_layers(None, self.depth)

    def to(self, device=None, dtype=None) -> FalipModel:
        """Move the backbone to `device` and/or cast it to `dtype` (a torch dtype or a name); returns the
        model. Raises FalipError for a device this machine lacks or an unknown dtype name."""
        self.backbone.to(
            device=_device(device) if device is not None else None, dtype=_dtype(dtype) if dtype else None
        )
        return self

    def pixels(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor) -> torch.Tensor:
        """Preprocessed (N, 3, S, S) input; a tensor is taken as already preprocessed."""
        size = self.preprocessing.size
        if isinstance(images, torch.Tensor):
            batch = images if images.dim() == 4 else images[None]
            if batch.dim() != 4 or tuple(batch.shape[1:]) != (3, size, size):
                raise FalipError(
                    f"a tensor is taken as preprocessed pixels (N, 3, {size}, {size}) or (3, {size}, "
                    f"{size}); "
                    f"got {tuple(images.shape)}: give images (paths, PIL images, uint8 arrays) to "
                    "preprocess them"
                )
            if not batch.is_floating_point():
                raise FalipError(f"preprocessed pixels must be floating point, got {batch.dtype}")
            return batch
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise FalipError("no image given")
        return torch.stack([self.preprocessing.pixels(image) for image in images])

    @torch.no_grad()
    def encode_image(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor) -> torch.Tensor:
        """Plain CLIP image features (N, D)."""
        pixels = self.pixels(images).to(self.device, self.dtype)
        return self.backbone.visual(pixels)

    def region_rows(
        self,
        image_size: tuple[int, int],
        regions: Sequence[Region],
        *,
        alpha: float | None = None,
        sigma: float | None = None,
        box_format: str = "xywh",
        settings: FalipSettings | None = None,
    ) -> torch.Tensor:
        """The foveal bias rows (R, T) of regions on an image of `image_size = (width, height)` (Eq. 1-2);
        `alpha`, `sigma` override `settings` (default: the model's, the paper's 0.2 and 100)."""
        s = self.settings_for(settings, alpha=alpha, sigma=sigma)
        return region_bias_rows(
            check_regions(regions, image_size, box_format),
            image_size,
            self.preprocessing,
            self.patch_size,
            alpha=s.alpha,
            sigma=s.sigma,
            box_rule=s.box_rule,
            numerics=s.gaussian,
        )

    @torch.no_grad()
    def encode_regions(
        self,
        image: ImageInput,
        regions: Sequence[Region],
        *,
        alpha: float | None = None,
        sigma: float | None = None,
        layers: Sequence[int] | None = None,
        form: str | None = None,
        operation: str = "bias",
        box_format: str = "xywh",
        chunk_size: int | None = None,
        settings: FalipSettings | None = None,
    ) -> torch.Tensor:
        """FALIP features (R, D) of regions of one image (Eq. 3-4 in the masked layers).

        Args:
            image: a path, bytes, PIL image or (H, W, 3) uint8 array (EXIF orientation applied).
            regions: boxes (`box_format`, original-image pixels) or binary masks shaped like the image.
            alpha, sigma, layers, form: override `settings` (default: the model's, i.e. the paper's alpha
                0.2, sigma 100, the last third of the layers, form "cls"); see `FalipSettings`.
            operation: "bias" (FALIP) or an ablated operation of `falip.engine.ablations` (form a only).
            box_format: "xywh" (COCO) or "xyxy".
            chunk_size: regions per forward pass (memory only; results are equal).
        Returns:
            (R, D) projected, unnormalised features, like CLIP's `encode_image`.
        Raises:
            FalipError: a bad image, region, setting or operation (one line naming it).
        """
        s = self.settings_for(settings, alpha=alpha, sigma=sigma, layers=layers, form=form)
        form = s.form
        if operation != "bias" and operation not in OPERATIONS:
            raise FalipError(
                f"unknown attention operation {operation!r}; choose bias or one of {', '.join(OPERATIONS)}"
            )
        if operation != "bias":
            self.needs_cls(f"the {operation} ablation")
        if operation != "bias" and form != "cls":
            raise FalipError(f"the {operation} ablation acts on the [CLS] row only; use form='cls'")
        checks.optional_count("chunk_size", chunk_size)
        img = open_image(image)
        regions = check_regions(regions, img.size, box_format)
        rows = self.region_rows(img.size, regions, settings=s)
        masked = self.masked_layers(s.layers)
        pixels = self.pixels(img).to(self.device, self.dtype)
        if operation != "bias":
            try:
                return ablated_features(
                    self.backbone.visual,
                    pixels,
                    rows,
                    masked,
                    operation,
                    chunk_size or self.encoder.chunk_size,
                )
            except ValueError as exc:
                raise FalipError(str(exc)) from None
        index = torch.zeros(len(rows), dtype=torch.long)
        return self.encoder(pixels, rows, index, masked, form, chunk_size)

    def prepared_rows(
        self,
        regions: Sequence[Region | None],
        *,
        alpha: float | None = None,
        sigma: float | None = None,
        settings: FalipSettings | None = None,
    ) -> torch.Tensor:
        """Foveal bias rows (R, T) of regions given in the model's input pixels; None gives a zero row."""
        s = self.settings_for(settings, alpha=alpha, sigma=sigma)
        size = self.preprocessing.size
        identity = Preprocessing(size, "squash", self.preprocessing.mean, self.preprocessing.std)
        rows = torch.zeros(len(regions), self.backbone.cfg.vision.num_tokens)
        given = [i for i, region in enumerate(regions) if region is not None]
        if given:
            rows[given] = region_bias_rows(
                check_regions([regions[i] for i in given], (size, size)),
                (size, size),
                identity,
                self.patch_size,
                alpha=s.alpha,
                sigma=s.sigma,
                box_rule=s.box_rule,
                numerics=s.gaussian,
            )
        return rows

    @torch.no_grad()
    def encode_prepared(
        self,
        pixels: torch.Tensor,
        regions: Sequence[Region | None],
        *,
        alpha: float | None = None,
        sigma: float | None = None,
        layers: Sequence[int] | None = None,
        form: str | None = None,
        chunk_size: int | None = None,
        settings: FalipSettings | None = None,
    ) -> torch.Tensor:
        """FALIP features (B, D) of already-preprocessed inputs (B, 3, S, S), one region per input given
        in its own pixels (an `xywh` box or an (S, S) mask); None leaves that input unbiased (plain CLIP).
        For inputs made without an image file: point clouds' depth views."""
        if pixels.dim() != 4 or pixels.shape[1] != 3 or pixels.shape[2] != pixels.shape[3]:
            raise FalipError(f"prepared inputs must be (B, 3, S, S), got {tuple(pixels.shape)}")
        if len(regions) != len(pixels):
            raise FalipError(f"one region (or None) per input: got {len(regions)} for {len(pixels)} inputs")
        size = pixels.shape[-1]
        if size != self.preprocessing.size:
            raise FalipError(
                f"prepared inputs must be {self.preprocessing.size} px, the model's input; got {size}"
            )
        s = self.settings_for(settings, alpha=alpha, sigma=sigma, layers=layers, form=form)
        rows = self.prepared_rows(regions, settings=s)
        index = torch.arange(len(pixels))
        return self.encoder(
            pixels.to(self.device, self.dtype), rows, index, self.masked_layers(s.layers), s.form, chunk_size
        )

    def masked_layers(self, layers: Sequence[int] | None) -> list[int]:
        """0-based layer indices checked against the model (negative from the end); None: the last third."""
        try:
            return resolve_layers(checks.layer_list(layers), self.depth)
        except ValueError as exc:
            raise FalipError(str(exc)) from None

    def _with_copies(self, image: ImageInput, prompted: Sequence[ImageInput]):
        """The image, its pixels and its edited copies' pixels, on the model's device."""
        img = open_image(image)
        edited = self.pixels([open_image(p) for p in prompted]).to(self.device, self.dtype)
        return img, self.pixels(img).to(self.device, self.dtype), edited

    @torch.no_grad()
    def encode_two_stream(
        self,
        image: ImageInput,
        prompted: Sequence[ImageInput],
        regions: Sequence[Region],
        mode: str,
        *,
        alpha: float | None = None,
        sigma: float | None = None,
        layers: Sequence[int] | None = None,
        box_format: str = "xywh",
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Table 5's two-stream features (R, D): `prompted` holds one edited copy of `image` per region
        (its RedCircle image); `mode` is "replace-v" (Fig. 7b) or "replace-qk" (Fig. 7c, which also
        puts the region's foveal bias, `alpha` and `sigma`, on the [CLS] row).
        See `falip.engine.two_stream`."""
        self.needs_cls(mode)
        if mode not in TWO_STREAM_MODES:
            raise FalipError(f"unknown two-stream mode {mode!r}; choose one of {', '.join(TWO_STREAM_MODES)}")
        img = open_image(image)
        regions = check_regions(regions, img.size, box_format)
        if len(prompted) != len(regions):
            raise FalipError(
                f"one prompted image per region: got {len(prompted)} images for {len(regions)} regions"
            )
        img, pixels, edited = self._with_copies(img, prompted)
        rows = self.region_rows(img.size, regions, alpha=alpha, sigma=sigma)
        chunk = chunk_size or self.encoder.chunk_size
        return two_stream_features(
            self.backbone.visual, pixels, edited, self.masked_layers(layers), mode, rows, chunk
        )

    @torch.no_grad()
    def encode_pasta(
        self,
        image: ImageInput,
        regions: Sequence[Region],
        *,
        scale: float = PASTA_SCALE,
        layers: Sequence[int] | None = None,
        heads: Sequence[tuple[int, int]] | None = None,
        box_format: str = "xywh",
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """PASTA features (R, D): attention to keys outside each region's tokens scaled by `scale` in
        the steered heads (`heads` as (layer, head) pairs, or every head of `layers`).
        See `falip.engine.pasta`."""
        self.needs_cls("PASTA")
        img = open_image(image)
        regions = check_regions(regions, img.size, box_format)
        # The region's tokens are those FALIP's bias covers; alpha only scales the values, so take 1.
        inside = self.region_rows(img.size, regions, settings=self.settings.with_(alpha=1.0)) > 0
        vision = self.backbone.cfg.vision
        try:
            steered = select_heads(self.masked_layers(layers), heads, vision.layers, vision.heads)
            pixels = self.pixels(img).to(self.device, self.dtype)
            return pasta_features(
                self.backbone.visual, pixels, inside, steered, scale, chunk_size or self.encoder.chunk_size
            )
        except ValueError as exc:
            raise FalipError(str(exc)) from None

    @torch.no_grad()
    def encode_unleashed(
        self,
        image: ImageInput,
        prompted: Sequence[ImageInput],
        *,
        layers: Sequence[int] | None = None,
        heads: Sequence[tuple[int, int]] | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Unleashed features (R, D) of R prompted copies of `image` (the paper's Eq. 6): each prompted
        feature with the heads' change `G' - G` added once more in `layers` (default: the last third,
        the last 4 of 12), or only for the (layer, head) pairs in `heads`. See `falip.engine.unleash`."""
        self.needs_cls("unleash")
        if not len(prompted):
            raise FalipError("no prompted image given")
        _, pixels, edited = self._with_copies(image, prompted)
        try:
            return unleash_features(
                self.backbone.visual,
                pixels,
                edited,
                self.masked_layers(layers),
                heads,
                chunk_size or self.encoder.chunk_size,
            )
        except ValueError as exc:
            raise FalipError(str(exc)) from None

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """(N, context) token ids of texts, by the checkpoint's tokenizer.

        Raises:
            FalipError: the checkpoint has no tokenizer (saying why, when the loader knows: a missing
                package such as SigLIP's sentencepiece), or a text the door refuses."""
        if self.tokenizer is None:
            where = "--tokenizer" if spelled("tokenizer") == "--tokenizer" else "tokenizer=... to falip.load"
            why = self.tokenizer_note
            raise FalipError(
                f"{self.name or 'this checkpoint'} has no tokenizer: "
                + (
                    why
                    if why
                    else f"pass {where} (a Hugging Face id or directory, or OpenAI's "
                    "bpe_simple_vocab_16e6.txt.gz), or give token ids"
                )
            )
        return self.tokenizer(texts)

    @torch.no_grad()
    def encode_text(self, texts: TextInput) -> torch.Tensor:
        """Text features (T, D) of strings or of a (T, context) token-id tensor.

        Raises:
            FalipError: no text, a text that is not a string or has nothing visible in it (the one rule
                of `falip.inputs.texts`), or a checkpoint without a tokenizer."""
        ids = texts if isinstance(texts, torch.Tensor) else self.tokenize(check_texts(texts))
        if ids.dim() == 1:
            ids = ids[None]
        return self.backbone.text(ids.to(self.device))

    @torch.no_grad()
    def score(
        self, image: ImageInput, regions: Sequence[Region], texts: TextInput, **region_options
    ) -> torch.Tensor:
        """(R, T) logits: `exp(logit_scale)` x cosine of each region's FALIP feature with each text."""
        regions_f = torch.nn.functional.normalize(
            self.encode_regions(image, regions, **region_options).float(), dim=-1
        )
        texts_f = torch.nn.functional.normalize(self.encode_text(texts).float(), dim=-1)
        logits = self.backbone.logit_scale.float().exp() * regions_f @ texts_f.t()
        bias = getattr(self.backbone, "logit_bias", None)  # SigLIP's
        return logits if bias is None else logits + bias.float()


def load(
    name_or_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    dtype: str | torch.dtype | None = None,
    preprocess: str = "squash",
    tokenizer: str | None = None,
    box_rule: str = "authors",
    gaussian: str = "authors",
    chunk_size: int = DEFAULT_CHUNK,
    image_size: int | None = None,
) -> FalipModel:
    """Load a CLIP ViT for FALIP.

    `name_or_path`: a Hugging Face hub id (`openai/clip-vit-base-patch16`), a `save_pretrained`
    directory, an open_clip folder (`open_clip_config.json` + weights) or `hf-hub:org/name`, or an
    OpenAI-format `.pt` (TorchScript or state dict) / `.safetensors` file.
    None or "toy": the embedded model, a small CLIP trained on generated scenes (not OpenAI's).
    `preprocess`: "squash" (the authors'), "crop" (CLIP's resize + centre crop), "pad", or
    "checkpoint" (the checkpoint's own, where its config says; else "crop").
    `image_size`: run at another input size (e.g. 336 for a ViT-B/16 trained at 224): the position
    embeddings are interpolated bicubically to the new token grid (opt-in; boxes follow the grid).
    `tokenizer`: overrides the checkpoint's tokenizer (hub id, directory or OpenAI BPE file).
    `box_rule`: "authors" (their ceil rule, default) or "overlap" (every token the box overlaps).
    `gaussian`: "authors" (their float32 arithmetic, default) or "exact" (float64, peak = alpha).
    """
    FalipSettings(box_rule=box_rule, gaussian=gaussian)  # refused before a large checkpoint loads
    loaded = load_checkpoint("toy" if name_or_path is None else str(name_or_path), tokenizer)
    if image_size is not None:
        try:
            resize_positions(loaded.model.visual, checks.count("image_size", image_size))
        except ValueError as exc:
            raise FalipError(str(exc)) from None
    size = loaded.model.cfg.vision.image_size
    if preprocess == "checkpoint":
        preprocess = loaded.resize_mode or "crop"
    preprocessing = Preprocessing(size, preprocess, loaded.mean or OPENAI_MEAN, loaded.std or OPENAI_STD)
    model = FalipModel(
        loaded.model, preprocessing, loaded.tokenizer, loaded.name, box_rule, gaussian, chunk_size
    )
    model.tokenizer_note = None if tokenizer is not None else loaded.tokenizer_note
    return model.to(device, _dtype(dtype))
