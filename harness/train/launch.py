"""Train one experiment from gin into a workdir: validate everything, then train (or resume),
then record results.json. The library behind `python -m harness.run` and the suite."""

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import gin
import jax

from harness import files, interrupts, storage
from harness.config import experiment_file
from harness.config.experiment import Experiment, check_data, check_layout, parse_experiment
from harness.config.experiment_file import CONFIG_FILE
from harness.errors import UsageError, one_line
from harness.run_dir import checkpoint_steps, run_record
from harness.run_dir import lock as workdir_lock
from harness.train import resume
from harness.train.attempts import AttemptLog
from models.specs import MESH_AXES

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
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    except (ValueError, RuntimeError) as error:
        # e.g. --distributed where jax detects no cluster (no TPU pod, SLURM or MPI), or a
        # coordinator that never answered: JAX's message, first line.
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise UsageError(
            f"jax.distributed.initialize failed ({one_line(first)}); pass --coordinator_address, "
            "--num_processes and --process_id, or run --distributed on a TPU pod"
        ) from error


def make_workdir(workdir: str) -> None:
    """Creates the workdir, local or a URL (gs://...: every file then goes through
    tf.io.gfile, harness/storage.py); refuses a location that cannot be created."""
    if storage.is_url(workdir):
        import tensorflow as tf  # only URLs need it

        try:
            storage.makedirs(workdir)
        except (tf.errors.OpError, OSError) as error:
            # e.g. an unknown scheme, a missing bucket or no credentials; gfile's messages are
            # long, so the first line.
            message = one_line(getattr(error, "message", str(error)).splitlines()[0])
            raise UsageError(
                f"--workdir={workdir} cannot be created ({message}); check the bucket and "
                "your credentials, or choose a local path"
            ) from error
        return  # an object store's permissions show at the first write, not before
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"--workdir={workdir} cannot be created ({one_line(error)}); choose a writable path"
        ) from error
    if not os.access(workdir, os.W_OK):
        raise UsageError(f"--workdir={workdir} is not writable; choose a writable path")


def record_config(workdir: str, config_text: str, experiment: Experiment) -> None:
    """config.gin (the config the run started with; kept on resume) and experiment.json (the
    resolved specs, what readers of the run directory rebuild it from)."""
    if jax.process_index() != 0:
        return
    path = storage.join(workdir, CONFIG_FILE)
    if not storage.exists(path):
        files.write_text_atomically(path, config_text)
    experiment_file.write_experiment(workdir, experiment)


def prepare_workdir(workdir: str, config_text: str, experiment: Experiment | None = None) -> None:
    """Creates the workdir and records the config (the gin config parsed now, by default)."""
    make_workdir(workdir)
    record_config(workdir, config_text, experiment or Experiment.from_gin())


def build(workdir: str) -> tuple[Experiment, tuple[int, int, int], Any, list[Any]]:
    """The parsed gin's experiment, its mesh shape, its trainer and its evaluators; every
    check that needs no training runs here, before anything is written. Raises UsageError
    (one line)."""
    try:
        experiment = Experiment.from_gin()
        mesh_shape = check_layout(experiment, jax.device_count())
        check_data(experiment)  # TFDS metadata (a DatasetNotFoundError is a UsageError)
    except ValueError as error:
        # gin appends "In call to configurable ..." lines; the first line is the message.
        raise UsageError(one_line(str(error).splitlines()[0])) from error
    # Imported here, not at the top: they load TensorFlow and praxis (seconds), which a
    # refused config or a workdir in use never needs. After init_distributed: JAX state.
    from harness.train import trainer
    from harness.transfer import evaluators, fewshot_eval

    try:
        fewshot_eval.check_datasets(experiment)  # before the model: metadata only
        run = trainer.Trainer(experiment, workdir, mesh_shape)
        # Each factory checks that its evaluation can run (datasets prepared, the model
        # fits them), before any training.
        return experiment, mesh_shape, run, evaluators.for_experiment(run)
    except ValueError as error:  # one-line validation messages from specs and layers
        raise UsageError(one_line(str(error).splitlines()[0])) from error


@contextlib.contextmanager
def held_workdir(workdir: str) -> Iterator[None]:
    """Creates the workdir and holds its lock (the chief's) while inside, so a second
    harness.run on a workdir in use is refused before it builds anything. A workdir this call
    created is removed again when the body fails before writing into it: a refused config
    leaves nothing behind."""
    created = not storage.is_url(workdir) and not os.path.exists(workdir)
    make_workdir(workdir)
    lock = workdir_lock.locked(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    try:
        with lock:
            yield
    except BaseException:
        if created:
            workdir_lock.remove_if_only_lock(workdir)
        raise


def train(gin_files: list[str], gin_params: list[str], workdir: str) -> dict[str, Any]:
    """Parses gin, validates everything, trains (or resumes) in `workdir` and records
    results.json; returns its payload. Raises UsageError before writing anything on bad input,
    and when another process trains in `workdir` or its run is of another experiment. A run
    that has finished is left as it is (its results are returned)."""
    config_text, _ = parse_experiment(gin_files, gin_params)  # a bad config: before the lock
    with held_workdir(workdir):
        experiment, mesh_shape, run, run_evaluators = build(workdir)
        from harness.runtime import init_from  # JAX and praxis, like build's imports

        if experiment.train.init_from is not None and not checkpoint_steps.saved_steps(workdir):
            # Fresh start: read the pretrained weights now, so a misfit stops before any write.
            run.pretrained = init_from.load_for(run)
        return _train_locked(
            gin_files, gin_params, workdir, config_text, run, mesh_shape, run_evaluators
        )


def _train_locked(
    gin_files: list[str],
    gin_params: list[str],
    workdir: str,
    config_text: str,
    run: Any,
    mesh_shape: tuple[int, int, int],
    run_evaluators: list[Any],
) -> dict[str, Any]:
    from harness.runtime import init_from

    experiment = run.experiment
    resume.check_resumable(workdir, experiment, config_text)
    finished = resume.finished_results(workdir, run.total_steps)
    if finished is not None:
        if experiment_file.read_experiment_data(workdir) is None and jax.process_index() == 0:
            # A run from before experiment.json, its config just matched: record it, so
            # sweep and report can read the run as data.
            experiment_file.write_experiment(workdir, experiment)
        print(
            f"{workdir} has finished training ({run.total_steps} steps); nothing to do. "
            "Pass another --workdir (or more TrainSpec.num_steps) to train again"
        )
        return finished
    # Restored before anything is recorded: a damaged checkpoint is refused with the run
    # directory as it was.
    start = run.restore_latest()
    record_config(workdir, config_text, experiment)
    if run.pretrained is not None and jax.process_index() == 0:
        init_from.write_record(workdir, run.pretrained)
    log = AttemptLog(workdir, writes=jax.process_index() == 0)
    from harness.measure import energy_tracker

    energy = None  # Ctrl-C while the tracker starts leaves nothing to record
    interrupts.check()  # a Ctrl-C swallowed while starting up: stop before training
    try:
        with energy_tracker.track_attempt(enabled=jax.process_index() == 0) as energy:
            outcome = run.run(log, run_evaluators, start=start)
    finally:  # a pre-empted or failed attempt keeps the energy it used too
        if energy is not None:
            log.record_energy(energy.section)
    payload = describe_run(gin_files, gin_params, workdir, config_text, run, mesh_shape)
    payload.update(outcome)
    payload["run"]["started"] = log.all()[0]["started"]
    if experiment.train.init_from is not None:
        payload["run"]["init_from"] = init_from.read_record(workdir)
    payload["attempts"] = log.all()
    payload["energy"] = energy_tracker.results_section(
        log.all(), payload["run"]["devices"], payload["train"]["wall_seconds"]
    )
    # A Ctrl-C swallowed during the final evaluation: the last step's checkpoint is saved,
    # so rerunning finishes the run; no results.json claims it finished.
    interrupts.check()
    if jax.process_index() == 0:
        files.write_json_atomically(storage.join(workdir, run_record.RESULTS_FILE), payload)
        files.write_text_atomically(
            storage.join(workdir, OPERATIVE_CONFIG_FILE), gin.operative_config_str()
        )
    return payload


def describe_run(
    gin_files: list[str],
    gin_params: list[str],
    workdir: str,
    config_text: str,
    run: Any,
    mesh_shape: tuple[int, int, int],
) -> dict[str, Any]:
    """results.json's description of the run and model (the caller adds the outcome); shared
    by training and by the evaluation of imported weights."""
    from harness.measure import params_flops

    experiment = run.experiment
    counts = params_flops.count_params(
        params_flops.abstract_variables(run.model_config, experiment.model), experiment.model
    )
    return {
        "run": {
            "workdir": storage.absolute(workdir),
            "gin_files": list(gin_files),
            "gin_params": list(gin_params),
            "config": config_text,
            "family": experiment.model.family,
            "mesh": dict(zip(MESH_AXES, mesh_shape, strict=True)),
            "devices": run_record.devices(),
            "versions": run_record.versions(),
            "finished": run_record.timestamp(),
        },
        "model": {
            "params_total": counts.total,
            "params_body": counts.body,
            "params_active": counts.active,
            "gflops_per_image": params_flops.analytic_gflops_per_image(experiment.model),
        },
    }
