r"""Train one gin-configured model.

  python -m harness.run --gin_file=gin/cpu/vmoe.gin [--gin_param=B ...] --workdir=runs/vmoe

Running again on the same workdir resumes from its latest checkpoint. Multi-host: pass
--coordinator_address, --num_processes and --process_id to every process (or --distributed
alone on a TPU pod, where jax.distributed finds them itself).
"""

import os
import sys

from absl import flags

from harness.cli import app, preflight
from harness.cli import flags as cli_flags
from harness.config import experiment
from harness.errors import NonFiniteLossError, UsageError
from harness.run_dir import checkpoint_steps
from harness.train import multihost

FLAGS = flags.FLAGS
cli_flags.define_gin_flags()
cli_flags.define_workdir_flag("Run directory to create or resume: checkpoints, events, results.")
flags.adopt_module_key_flags(cli_flags)
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")


def main(args: list[str]) -> None:
    app.no_positional(args, "--gin_file=gin/cpu/vit.gin --workdir=runs/vit")
    if not FLAGS.workdir:
        raise UsageError("--workdir is required; e.g. --workdir=runs/vit")
    if not cli_flags.gin_files():
        raise UsageError("--gin_file is required; e.g. --gin_file=gin/cpu/vit.gin")
    multihost.check_flags(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed
    )
    # A bad binding, value or path is one line before JAX, TensorFlow or the model code loads.
    _, spec = experiment.parse_experiment(cli_flags.gin_files(), cli_flags.gin_params())
    init_from = spec.train.init_from
    if init_from is not None and not checkpoint_steps.saved_steps(FLAGS.workdir):
        # Read on a fresh start only: a resumed run no longer needs it.
        preflight.existing_checkpoint(init_from, "TrainSpec.init_from", spec.train.init_from_format)
    import jax

    from harness.run_dir import run_record
    from harness.train import launch, preemption

    launch.init_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed
    )
    try:
        launch.train(cli_flags.gin_files(), cli_flags.gin_params(), FLAGS.workdir)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except preemption.Preempted as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(stopped.exit_code)
    if jax.process_index() == 0:
        print(f"results: {os.path.join(FLAGS.workdir, run_record.RESULTS_FILE)}")


if __name__ == "__main__":
    app.run(main)
