"""Cheap checks of the paths a command is given, made before its libraries load (JAX,
TensorFlow and praxis take seconds), so a mistyped path is one line at once."""

import glob
import zipfile

from harness import storage
from harness.config.experiment_file import EXPERIMENT_FILE, load_experiment
from harness.errors import UsageError
from harness.run_dir import checkpoint_steps, data_sources
from harness.run_dir.run_record import RESULTS_FILE


def trained_run_dir(run_dir: str, data_dir: str | None = None) -> None:
    """A run directory of harness.run whose experiment.json is valid, names data this command
    may read (data_sources.for_reading, with the user's --data_dir) and that saved a
    checkpoint (what sweep and fewshot read); load_experiment also refuses a config.gin that
    would import code."""
    experiment = load_experiment(run_dir)
    where = storage.join(run_dir, EXPERIMENT_FILE)
    data_sources.for_reading(experiment.data, where, data_dir)
    if not checkpoint_steps.saved_steps(run_dir):
        raise UsageError(f"{run_dir} has no checkpoint; train it with python -m harness.run first")


def existing_checkpoint(
    path: str, name: str = "--checkpoint", format_name: str | None = None
) -> None:
    """A file, a run directory with a checkpoint, or the prefix of a checkpoint in several
    files (V-MoE's PREFIX.index and PREFIX.data-*), in a format told by its path when
    `format_name` (the format the user named) is None. `name` is the flag or binding that gave
    the path."""
    siblings = path + ".*" if storage.is_url(path) else glob.escape(path) + ".*"
    if not (storage.exists(path) or storage.glob(siblings)):
        raise UsageError(f"{name}={path} does not exist; check the path")
    if storage.isdir(path) and not checkpoint_steps.saved_steps(path):
        raise UsageError(
            f"{name}={path} is a directory without a checkpoint; give a run directory of "
            "harness.run that saved one, a .npz file, or a V-MoE checkpoint prefix"
        )
    if path.endswith(".npz") and not storage.is_url(path) and not zipfile.is_zipfile(path):
        # np.load would read it only once the model is built, and call it "pickled data".
        raise UsageError(f"{name}={path} is not a .npz archive (not a zip file); check the path")
    if format_name is None:
        from harness.checkpoint_formats import detect  # JAX (a second), still before TensorFlow

        detect.path_format(path)


def some_finished_run(run_dirs: list[str]) -> None:
    """At least one of the run directories holds a results.json (the report skips the others
    with a warning); when none does, one line says why for each."""
    reasons = []
    for run_dir in run_dirs:
        if storage.isfile(storage.join(run_dir, RESULTS_FILE)):
            return
        reasons.append(
            f"{run_dir} has no {RESULTS_FILE}"
            if storage.isdir(run_dir)
            else f"{run_dir} is not a directory"
        )
    raise UsageError(
        f"nothing to report: {'; '.join(reasons)}; pass run directories of finished runs"
    )
