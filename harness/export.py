"""Entry point of `python -m harness.export`; the command is harness/cli/export.py."""

from absl import flags

from harness.cli import app
from harness.cli import export as command

flags.adopt_module_key_flags(command)  # --help lists the command's flags as this module's
__doc__ = command.__doc__

if __name__ == "__main__":
    app.run(command.main)
