"""Benchmarks: a generated dataset and timed requests against a real `kartoteka run`."""
