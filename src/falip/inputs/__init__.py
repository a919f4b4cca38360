"""The door: what users give (images, boxes, masks, texts, settings) checked once into typed values, and
the pixel-to-token geometry that turns regions into bias rows.
"""
