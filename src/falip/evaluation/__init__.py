"""Runs over data sets: resumable results, sharding, summaries, intervals, head ranking, point-cloud
evaluation, benchmarks.
"""
