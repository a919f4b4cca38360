"""FALIP: foveal attention that makes a CLIP ViT look at a region without editing a pixel.

import falip
model = falip.load("openai/clip-vit-base-patch16")
scores = model.score("cat.jpg", [[10, 20, 100, 80]], ["a photo of a cat"])
"""

from .engine.model import FalipModel, load
from .errors import FalipError

__version__ = "0.1.0"
__all__ = ["FalipError", "FalipModel", "load", "__version__"]
