"""Sparse Mixture-of-Experts: `routing` (pure routing math) and `layers` (praxis layers)."""
