"""Benchmarks of the project, outside the library (run from the repository root).

``python -m benchmarks.graph_core``: the graph core's build, encode and GMN forward cost
against model size (the numbers in the README's "Benchmarks" section).
"""
