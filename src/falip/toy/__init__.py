"""The embedded toy CLIP (a model organism, not OpenAI's CLIP): its training on generated scenes, its
evaluation and report, its weights (`weights/`).
"""
