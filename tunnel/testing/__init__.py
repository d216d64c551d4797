"""Test and simulation support importable by tests, benchmarks and scripts.

Nothing here is used by a production node.
"""
