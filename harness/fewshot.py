"""Entry point of `python -m harness.fewshot`; the command is harness/cli/fewshot.py."""

from absl import flags

from harness.cli import app
from harness.cli import fewshot as command

flags.adopt_module_key_flags(command)  # --help lists the command's flags as this module's
__doc__ = command.__doc__

if __name__ == "__main__":
    app.run(command.main)
