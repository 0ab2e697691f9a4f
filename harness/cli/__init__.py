"""The commands: flag parsing and main() only, one module per command.

Each module defines its own flags with absl alone and imports the libraries it drives (JAX,
praxis, TensorFlow) inside main(), after the flags parse, so `--help` and usage errors are
immediate. A command imports libraries, never another command. `python -m harness.NAME` runs
harness/cli/NAME.py through the thin harness/NAME.py entry point.
"""
