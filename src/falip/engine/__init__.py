"""The foveal forward (Eq. 3-4) and its variants: FALIP's masked attention, the two-stream operations,
PASTA, unleash, the ablations, the [CLS] decomposition, and `FalipModel`.
"""
