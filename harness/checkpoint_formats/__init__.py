"""Checkpoint formats: readers of trained weights into our param trees, for our own runs,
vision_transformer and big_vision .npz files, V-MoE reference checkpoints and the timm
safetensors files that harness.export writes. registry.py lists them; importer.py's
`import_params` is the entry point. Nothing is imported here, so that parsing gin (which checks
format names against the registry) loads no reader."""
