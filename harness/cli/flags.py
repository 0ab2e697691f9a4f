"""Flags several commands share, with one meaning everywhere.

The naming scheme (README, "Commands"): a gin experiment comes in as --gin_file/--gin_param;
a command that creates a run directory names it --workdir; run directories a command reads
are positional RUN_DIR arguments; a command that writes one file names it --output (-o).

Each define_* is idempotent, so tests can import several commands into one process. A command
calls the ones it uses, then `flags.adopt_module_key_flags(harness.cli.flags)` so that its
`--help` lists them with its own.
"""

from absl import flags

FLAGS = flags.FLAGS


def _define(name: str, define: object, *args: object, **kwargs: object) -> None:
    if name not in FLAGS:
        define(name, *args, **kwargs)  # type: ignore[operator]


def define_gin_flags() -> None:
    _define(
        "gin_file",
        flags.DEFINE_multi_string,
        [],
        "Gin config file(s), code trusted like a Python script; repeatable, later files win.",
    )
    _define(
        "gin_param",
        flags.DEFINE_multi_string,
        [],
        "Extra gin bindings, e.g. TrainSpec.num_steps=100; repeatable, applied after the files.",
    )


def define_workdir_flag(help_text: str) -> None:
    _define("workdir", flags.DEFINE_string, None, help_text)


def define_output_flag(help_text: str) -> None:
    _define("output", flags.DEFINE_string, None, help_text, short_name="o")


def define_data_dir_flag() -> None:
    _define(
        "data_dir",
        flags.DEFINE_string,
        None,
        "TFDS data_dir the run directory's data is read from; default: TFDS's. A run "
        "directory's own DataSpec.data_dir is used only when you pass it here.",
    )


def gin_files() -> list[str]:
    return list(FLAGS.gin_file)


def gin_params() -> list[str]:
    return list(FLAGS.gin_param)
