r"""Train one gin-configured model.

  python -m harness.run --gin_file=gin/cpu/vmoe.gin [--gin_param=B ...] --workdir=/tmp/run

Running again on the same workdir resumes from its latest checkpoint. Multi-host: pass
--coordinator_address, --num_processes and --process_id to every process (or nothing on a
TPU pod, where jax.distributed finds them itself with --distributed).
"""

import os
import sys

import gin
import jax
from absl import app, flags, logging

from harness import config, data, gin_flags, measure, preemption, results
from harness.errors import UsageError, one_line, run_cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard events, results.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")

CONFIG_FILE = "config.gin"
OPERATIVE_CONFIG_FILE = "operative_config.gin"


def init_distributed() -> None:
    if not (FLAGS.distributed or FLAGS.coordinator_address):
        return
    if jax.config.jax_platforms in (None, "", "cpu") and FLAGS.coordinator_address:
        # CPU processes talk through gloo; it must be chosen before the backend starts.
        jax.config.update("jax_cpu_enable_gloo_collectives", True)
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )


def prepare_workdir(workdir: str, config_text: str) -> None:
    """Creates the workdir and records the config; refuses an unwritable location."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"--workdir={workdir} cannot be created ({one_line(error)}); choose a writable path"
        ) from error
    if not os.access(workdir, os.W_OK):
        raise UsageError(f"--workdir={workdir} is not writable; choose a writable path")
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() != config_text:
                print(
                    f"warning: the gin config differs from the one this workdir started with "
                    f"({path}); resuming with the new one",
                    file=sys.stderr,
                )
                return
    if jax.process_index() == 0:
        with open(path, "w") as f:
            f.write(config_text)


def train(gin_files: list[str], gin_params: list[str], workdir: str) -> dict:
    """Parses gin, validates everything, trains (or resumes) in `workdir` and records
    results.json; returns its payload. Raises UsageError before writing anything on bad input."""
    from harness import trainer  # after init_distributed: it imports JAX state

    config_text = config.parse_gin(gin_files, gin_params)
    try:
        experiment = trainer.Experiment.from_gin()
        mesh_shape = trainer.validate(experiment, jax.device_count())
        run = trainer.Trainer(experiment, workdir, mesh_shape)
    except data.DatasetNotFoundError as error:
        raise UsageError(str(error)) from error
    except ValueError as error:  # one-line validation messages from specs and layers
        # gin appends "In call to configurable ..." lines; the first line is the message.
        raise UsageError(one_line(str(error).splitlines()[0])) from error
    prepare_workdir(workdir, config_text)
    started = results.timestamp()
    outcome = run.run()
    counts = measure.count_params(
        measure.abstract_variables(run.model_config, experiment.model), experiment.model
    )
    payload = {
        "run": {
            "workdir": os.path.abspath(workdir),
            "gin_files": list(gin_files),
            "gin_params": list(gin_params),
            "config": config_text,
            "family": experiment.model.family,
            "mesh": dict(zip(("data", "expert", "model"), mesh_shape, strict=True)),
            "devices": results.devices(),
            "versions": results.versions(),
            "started": started,
            "finished": results.timestamp(),
        },
        "model": {
            "params_total": counts.total,
            "params_body": counts.body,
            "params_active": counts.active,
            "gflops_per_image": measure.analytic_gflops_per_image(experiment.model),
        },
        **outcome,
    }
    if jax.process_index() == 0:
        results.write_json_atomically(os.path.join(workdir, results.RESULTS_FILE), payload)
        with open(os.path.join(workdir, OPERATIVE_CONFIG_FILE), "w") as f:
            f.write(gin.operative_config_str())
    return payload


def main() -> None:
    from harness import trainer

    # praxis and orbax log every parameter and file at INFO; progress has its own line.
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.workdir:
        raise UsageError("--workdir is required; e.g. --workdir=/tmp/run")
    if not gin_flags.GIN_FILES.value:
        raise UsageError("--gin_file is required; e.g. --gin_file=gin/cpu/vit.gin")
    init_distributed()
    try:
        train(gin_flags.GIN_FILES.value, gin_flags.GIN_PARAMS.value, FLAGS.workdir)
    except trainer.NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except preemption.Preempted as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(preemption.PREEMPTED_EXIT_CODE)
    if jax.process_index() == 0:
        print(f"results: {os.path.join(FLAGS.workdir, results.RESULTS_FILE)}")


if __name__ == "__main__":
    app.run(lambda argv: run_cli(main))
