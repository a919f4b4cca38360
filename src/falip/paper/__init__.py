"""The paper itself as data and as runs: its tables, `falip reproduce`, and the check against the authors'
reference vectors.
"""
