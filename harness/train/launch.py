"""Train one experiment from gin into a workdir: validate everything, then train (or resume),
then record results.json. The library behind `python -m harness.run` and the suite."""

import os
import sys
from typing import Any

import gin
import jax

from harness import files, gin_config
from harness.data import pipeline
from harness.errors import UsageError, one_line
from harness.measure import params_flops
from harness.train import run_record
from harness.train.experiment import Experiment, validate
from models.specs import MESH_AXES

CONFIG_FILE = "config.gin"
OPERATIVE_CONFIG_FILE = "operative_config.gin"


def init_distributed(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    auto: bool = False,
) -> None:
    """Joins the processes of a multi-host run (`auto`: let jax.distributed find them, as on
    TPU pods); a no-op for a single process."""
    if not (auto or coordinator_address):
        return
    if jax.config.jax_platforms in (None, "", "cpu") and coordinator_address:
        # CPU processes talk through gloo; it must be chosen before the backend starts.
        jax.config.update("jax_cpu_enable_gloo_collectives", True)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
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
        files.write_text_atomically(path, config_text)


def train(gin_files: list[str], gin_params: list[str], workdir: str) -> dict[str, Any]:
    """Parses gin, validates everything, trains (or resumes) in `workdir` and records
    results.json; returns its payload. Raises UsageError before writing anything on bad input."""
    from harness.train import trainer  # after init_distributed: it imports JAX state

    config_text = gin_config.parse_gin(gin_files, gin_params)
    try:
        experiment = Experiment.from_gin()
        mesh_shape = validate(experiment, jax.device_count())
        run = trainer.Trainer(experiment, workdir, mesh_shape)
    except pipeline.DatasetNotFoundError as error:
        raise UsageError(str(error)) from error
    except ValueError as error:  # one-line validation messages from specs and layers
        # gin appends "In call to configurable ..." lines; the first line is the message.
        raise UsageError(one_line(str(error).splitlines()[0])) from error
    prepare_workdir(workdir, config_text)
    started = run_record.timestamp()
    outcome = run.run()
    counts = params_flops.count_params(
        params_flops.abstract_variables(run.model_config, experiment.model), experiment.model
    )
    payload = {
        "run": {
            "workdir": os.path.abspath(workdir),
            "gin_files": list(gin_files),
            "gin_params": list(gin_params),
            "config": config_text,
            "family": experiment.model.family,
            "mesh": dict(zip(MESH_AXES, mesh_shape, strict=True)),
            "devices": run_record.devices(),
            "versions": run_record.versions(),
            "started": started,
            "finished": run_record.timestamp(),
        },
        "model": {
            "params_total": counts.total,
            "params_body": counts.body,
            "params_active": counts.active,
            "gflops_per_image": params_flops.analytic_gflops_per_image(experiment.model),
        },
        **outcome,
    }
    if jax.process_index() == 0:
        files.write_json_atomically(os.path.join(workdir, run_record.RESULTS_FILE), payload)
        files.write_text_atomically(
            os.path.join(workdir, OPERATIVE_CONFIG_FILE), gin.operative_config_str()
        )
    return payload
