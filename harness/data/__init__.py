"""Stage 1, data: the gin data spec and the TFDS input pipeline (with the embedded dataset)."""
