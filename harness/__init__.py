"""Sparse-vs-dense vision transformer harness: training, measurement and reports."""
