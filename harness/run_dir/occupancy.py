"""Whether a directory may become a new run directory: one that already holds another run's
results or checkpoints may not. Writing there would replace its results.json, and orbax's
`keep` prunes the checkpoints of every step but the newest, which deleted a pre-empted run's
steps (issue 26)."""

from harness import storage
from harness.errors import UsageError
from harness.run_dir.names import CHECKPOINT_DIR, RESULTS_FILE

STEPS_SHOWN = 5


def refuse_occupied(workdir: str) -> None:
    """Raises UsageError (one line) when `workdir` holds a results.json or anything under
    checkpoints/ (finished steps, or a save a killed run left unfinished)."""
    workdir = storage.local_form(workdir)
    if storage.exists(storage.join(workdir, RESULTS_FILE)):
        raise UsageError(
            f"--workdir={workdir} already holds a finished run ({RESULTS_FILE}); choose "
            "another workdir"
        )
    checkpoints = storage.join(workdir, CHECKPOINT_DIR)
    if storage.isdir(checkpoints) and (entries := sorted(storage.listdir(checkpoints))):
        shown = ", ".join(entries[:STEPS_SHOWN]) + (", ..." if len(entries) > STEPS_SHOWN else "")
        raise UsageError(
            f"--workdir={workdir} holds checkpoints of another run ({CHECKPOINT_DIR}/{shown}), "
            "which writing there would delete; choose another workdir"
        )
