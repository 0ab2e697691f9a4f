"""User-facing errors: bad input becomes one line naming the value and the fix, exit code 2."""

import sys
from typing import NoReturn

USAGE_EXIT_CODE = 2


class UsageError(Exception):
    """Bad input from the user (flags, gin, data). Its message is the one line they see."""


class NonFiniteLossError(RuntimeError):
    """Training diverged (NaN or infinite loss); its message is one line naming the step and
    the last good checkpoint. Not a usage error: the command exits 1."""


class WriteFailed(RuntimeError):
    """A file could not be written (disk full, quota, read-only file system); the previous
    file is kept. Its message is one line naming the file; the command exits 1."""


def one_line(error: BaseException) -> str:
    """Collapses an exception message (gin's span several lines) into one line."""
    return " ".join(str(error).split())


def exit_with_usage_error(error: BaseException) -> NoReturn:
    print(f"error: {one_line(error)}", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)
