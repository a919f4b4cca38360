"""Tasks built on the foveal encoder: visual-prompt baselines (more to come: REC, classification)."""
