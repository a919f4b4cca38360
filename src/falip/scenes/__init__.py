"""Generated scenes for training, testing and demonstrating FALIP offline (see `world.py`)."""

from .world import (
    ATTRIBUTES,
    COLOURS,
    SHAPES,
    SIZES,
    SPLITS,
    TEXTURES,
    Scene,
    SceneObject,
    class_names,
    make_scene,
    render,
)

__all__ = [
    "ATTRIBUTES", "COLOURS", "SHAPES", "SIZES", "SPLITS", "TEXTURES",
    "Scene", "SceneObject", "class_names", "make_scene", "render",
]
