"""Praxis layers and gin builders for dense ViT, V-MoE, WideNet and ViT-22B-style models."""
