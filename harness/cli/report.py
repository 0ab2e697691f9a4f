r"""Turns run directories into one markdown report with PNG plots beside it.

  python -m harness.report RUN_DIR... --output=reports/NAME.md [--batch_sizes=1,64,256]
      [--notiming]

Per run: family, parameters (total, active), GFLOPs per image, test top-1, inference
throughput and latency (all runs timed in this one process, on this process's devices),
training time, energy (codecarbon's, where the run recorded it, beside the table estimate:
measured wall time x the device's table power) and carbon, routing
sweeps and expert-by-class heatmaps where the run has them, and few-shot accuracy per
dataset and shots (RUN_DIR/fewshot.json, else results.json's), out-of-distribution top-1 and
shape bias where the runs have them. Every figure says how it was measured, and the
commands that regenerate the runs and the report are printed with it.
A missing or corrupt run directory is skipped with a warning; the report is still written.
"""

from absl import flags

from harness import limits
from harness.cli import app, preflight
from harness.cli import flags as cli_flags
from harness.errors import UsageError

FLAGS = flags.FLAGS
cli_flags.define_output_flag("Markdown file to write, e.g. reports/compare.md (plots beside it).")
cli_flags.define_data_dir_flag()
flags.adopt_module_key_flags(cli_flags)
flags.DEFINE_list("batch_sizes", ["1", "64", "256"], "Inference batch sizes to time.")
flags.DEFINE_bool("timing", True, "Time inference of every run (restores each checkpoint).")
flags.DEFINE_integer("timing_repeats", 20, "Timed calls per model and batch size.", lower_bound=1)


def parse_batch_sizes(values: list[str]) -> list[int]:
    try:
        sizes = [int(b) for b in values]
    except ValueError as error:
        raise UsageError(f"--batch_sizes={','.join(values)} must be integers") from error
    if any(b < 1 for b in sizes):
        raise UsageError(f"--batch_sizes={','.join(values)} must all be >= 1")
    limits.check_at_most(
        "batch_sizes",
        max(sizes, default=1),
        limits.MAX_TIMING_BATCH,
        "images one timed inference call may allocate",
    )
    return sizes


def main(args: list[str]) -> None:
    if not FLAGS.output:
        raise UsageError("--output (-o) is required, e.g. -o reports/compare.md")
    if not args:
        raise UsageError(
            "pass one or more RUN_DIRs, e.g. python -m harness.report runs/a runs/b -o r.md"
        )
    batch_sizes = parse_batch_sizes(FLAGS.batch_sizes)
    from harness.reporting import report

    report.check_output(FLAGS.output)
    preflight.some_finished_run(args)

    command = "python -m harness.report " + " ".join(args) + f" -o {FLAGS.output}"
    report.write_report(
        args,
        FLAGS.output,
        command,
        batch_sizes if FLAGS.timing else [],
        FLAGS.timing_repeats,
        FLAGS.data_dir,
    )
    print(f"report: {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
