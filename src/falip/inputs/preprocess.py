"""Image preprocessing: one mode per model, applied identically to pixels and to region masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import FalipError
from .geometry import PREPROCESS_MODES, Geometry, geometry_for
from .images import ImageInput, open_image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocessing:
    """Resize/crop/pad to `size` with bicubic resampling, scale to [0, 1], normalise per channel."""

    size: int
    mode: str = "squash"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    def __post_init__(self) -> None:
        """Refuse an unknown `mode` with a FalipError naming `PREPROCESS_MODES`."""
        if self.mode not in PREPROCESS_MODES:
            raise FalipError(
                f"unknown preprocessing {self.mode!r}; choose one of {', '.join(PREPROCESS_MODES)}"
            )

    def geometry(self, width: int, height: int) -> Geometry:
        """The `Geometry` of this preprocessing for a `width` x `height`-pixel image (ValueError if a
        side is not positive)."""
        return geometry_for(self.mode, width, height, self.size)

    def _warp(self, img: Image.Image, resample: int, fill) -> Image.Image:
        geo = self.geometry(*img.size)
        if self.mode == "squash":
            return img.resize((self.size, self.size), resample)
        if self.mode == "crop":
            img = img.resize((geo.resized_width, geo.resized_height), resample)
            left, top = int(-geo.offset_x), int(-geo.offset_y)
            return img.crop((left, top, left + self.size, top + self.size))
        side = geo.resized_width
        canvas = Image.new(img.mode, (side, side), fill)
        canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        return canvas.resize((self.size, self.size), resample)

    def view(self, image: ImageInput) -> Image.Image:
        """What the model sees: the image resized, cropped or padded to `size` x `size` pixels (RGB, not
        normalised; `pad` fills with the mean colour). `image` goes through `open_image` (EXIF orientation
        applied to files and bytes), which raises FalipError for what it cannot read."""
        fill = tuple(int(round(255 * m)) for m in self.mean)
        return self._warp(open_image(image), Image.BICUBIC, fill)

    def pixels(self, image: ImageInput) -> torch.Tensor:
        """The (3, size, size) float32 input tensor of one image: `view`, scaled to [0, 1], minus `mean`,
        over `std`. FalipError as `view`."""
        arr = np.asarray(self.view(image), dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def token_coverage(self, mask: np.ndarray, patch: int) -> np.ndarray:
        """(grid, grid) fraction of each token's input pixels inside a binary (H, W) mask of the original
        image, the mask warped exactly as the pixels are (box-filtered); grid = size // patch."""
        mask = np.asarray(mask)
        as_float = Image.fromarray((mask > 0).astype(np.float32), mode="F")
        warped = np.asarray(self._warp(as_float, Image.BOX, 0.0), dtype=np.float32)
        grid = self.size // patch
        return warped.reshape(grid, patch, grid, patch).mean(axis=(1, 3))
