"""TFDS builders that the project ships (importing this module registers nothing with TFDS)."""
