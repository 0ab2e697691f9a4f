"""Exporters of our runs' weights to other code bases' formats (vision_transformer .npz,
V-MoE checkpoints, timm safetensors); `export.export_run` is the entry point."""
