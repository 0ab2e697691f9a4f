"""Reads gin files and bindings, after registering every configurable the project defines.

Every configurable is a spec dataclass in a module that imports no JAX, praxis or TensorFlow,
so parsing (and reporting a bad binding) takes a fraction of a second.
"""

import contextlib
import os
from collections.abc import Iterator, Sequence

import gin
from absl import logging as absl_logging

from harness.errors import UsageError, one_line
from harness.project import REPO_ROOT

GIN_ERRORS = (ValueError, KeyError, SyntaxError, TypeError, ImportError, OSError)


def register_configurables() -> None:
    """Imports the modules that declare gin configurables, so any gin file parses anywhere."""
    import harness.config.suite_spec
    import harness.config.train_spec
    import harness.data.fewshot_datasets
    import harness.data.spec  # noqa: F401
    import models.specs  # noqa: F401


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
    with _usage_errors("bad gin config"), _quiet_include_probes():
        gin.parse_config_files_and_bindings(files, None, finalize_config=False)
    # One binding at a time, so an error names the binding the user typed.
    for binding in gin_params:
        with _usage_errors(f"--gin_param={binding} is invalid"), _quiet_include_probes():
            gin.parse_config(binding)
    gin.finalize()
    return gin.config_str()


@contextlib.contextmanager
def _quiet_include_probes() -> Iterator[None]:
    """gin looks for an include relative to the working directory before its search paths,
    logging a "Path not found" ERROR for each miss, though the repository root (a search path)
    then has it. An include found nowhere still raises, and becomes one line."""
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.FATAL)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


@contextlib.contextmanager
def _usage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except RecursionError as error:  # gin files that include each other, directly or not
        raise UsageError(
            f"{what}: the gin files include each other in a loop; remove the recursive include"
        ) from error
    except GIN_ERRORS as error:
        raise UsageError(
            f"{what} ({one_line(error)}); check the names against the configurables in "
            "models/specs.py and harness/*/spec*.py, and the value's syntax"
        ) from error
