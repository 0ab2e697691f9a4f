"""How every command starts: flags first, one-line usage errors (exit 2), quiet libraries."""

import os
import signal
import sys
from collections.abc import Callable

from absl import app, flags, logging

from harness import interrupts, native_stderr
from harness.errors import UsageError, WriteFailed, exit_with_usage_error, one_line

# Before TensorFlow or XLA is imported anywhere: their C++ logging after start-up would
# otherwise arrive around a one-line error (the lines TensorFlow writes while its libraries
# load ignore this; native_stderr keeps those off the terminal).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT

flags.DEFINE_bool(
    "verbose",
    False,
    "Also print what native libraries (TensorFlow) wrote to stderr while they loaded.",
)

HELP_FLAGS = ("--help", "-help", "--helpshort", "-helpshort", "--helpfull", "-helpfull", "-?")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with an unknown or malformed flag as one line and exit 2, like every
    other usage error (absl prints two lines and exits 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        exit_with_usage_error(UsageError(f"{error}; see --help for this command's flags"))
    except SystemExit as stop:
        # absl exits 1 after printing --help; asking for help is not a failure.
        if stop.code == 1 and any(a.split("=")[0] in HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise


def run(main: Callable[[list[str]], None]) -> None:
    """Parses flags and runs `main(positional_args)`; a UsageError becomes one line on stderr
    and exit code 2."""

    def wrapped(argv: list[str]) -> None:
        # praxis logs every parameter and orbax every file at INFO, and orbax deprecation
        # notices at WARNING; commands print their own progress and warnings instead.
        logging.set_verbosity(logging.ERROR)
        native_stderr.install()
        interrupts.install()
        try:
            main(argv[1:])
            interrupts.check()  # a Ctrl-C that a library caught and reported as "ignored"
        except UsageError as error:
            exit_with_usage_error(error)
        except (native_stderr.NativeImportError, WriteFailed) as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            # Ctrl-C outside a training loop (which saves and stops by itself): one line, and
            # the exit code a shell gives a command SIGINT killed.
            print("interrupted (SIGINT)", file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT_CODE)
        finally:
            if flags.FLAGS.verbose and native_stderr.captured():
                sys.stderr.write(native_stderr.captured())

    app.run(wrapped, flags_parser=_parse_flags)


def no_positional(args: list[str], example: str) -> None:
    if args:
        raise UsageError(
            f"unexpected argument {args[0]!r}; this command takes flags only, e.g. {example}"
        )
