"""Reads gin files and bindings, after registering every configurable the project defines."""

import os
from collections.abc import Sequence

import gin

from harness.errors import UsageError, one_line

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def register_configurables() -> None:
    """Imports the modules that declare gin configurables, so any gin file parses anywhere."""
    import harness.trainer  # noqa: F401  (TrainSpec; imports data, mesh and optimizer specs)
    import models.builders  # noqa: F401


def parse_gin(gin_files: Sequence[str], gin_params: Sequence[str]) -> str:
    """Parses gin files then bindings; returns the operative-to-be config text.

    Raises UsageError naming the file or binding, and how to fix it.
    """
    register_configurables()
    gin.clear_config()
    # Includes such as 'gin/data/imagenet2012.gin' resolve from the repository root too.
    gin.add_config_file_search_path(REPO_ROOT)
    for path in gin_files:
        if not os.path.isfile(path) and not os.path.isfile(os.path.join(REPO_ROOT, path)):
            raise UsageError(f"--gin_file={path} does not exist; pass a path like gin/vit_b16.gin")
    files = [p if os.path.isfile(p) else os.path.join(REPO_ROOT, p) for p in gin_files]
    try:
        gin.parse_config_files_and_bindings(files, gin_params)
    except (ValueError, KeyError, SyntaxError, TypeError, ImportError, OSError) as error:
        raise UsageError(
            f"bad gin config ({one_line(error)}); check the binding names against the "
            "configurables in models/builders.py and harness/"
        ) from error
    return gin.config_str()
