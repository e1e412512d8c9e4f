"""Benchmarks of the similarity pipeline (not part of the tests): ``python -m bench --help``."""
