"""Which steps of a run directory hold a finished checkpoint, on local disk or on a URL.

Locally orbax saves into `<step>.orbax-checkpoint-tmp-<time>` and renames it to `<step>` when
complete, so a numeric name is a finished checkpoint. An object store has no atomic rename,
so on gs:// orbax writes straight into `<step>` and marks it finished with COMMIT_FILE last;
harness/runtime/staged_checkpoints.py does the same for other schemes. On a URL a numeric folder
therefore counts only with that marker, or with the checksum file the harness writes after
every complete save (a local run copied to a bucket has checksums but no marker).
"""

from harness import storage
from harness.run_dir import names
from harness.run_dir.checksums import CHECKSUM_FILE

CHECKPOINT_DIR = names.CHECKPOINT_DIR
COMMIT_FILE = names.COMMIT_FILE


def is_finished(step_dir: str) -> bool:
    """Whether a numeric step folder holds a complete checkpoint (see the module docstring)."""
    if not storage.is_url(step_dir):
        return True
    return storage.exists(storage.join(step_dir, COMMIT_FILE)) or storage.exists(
        storage.join(step_dir, CHECKSUM_FILE)
    )


def saved_steps(run_dir: str) -> list[int]:
    """Steps with a finished checkpoint under RUN_DIR/checkpoints, oldest first."""
    return steps_in(storage.join(run_dir, CHECKPOINT_DIR))


def steps_in(directory: str) -> list[int]:
    """Steps with a finished checkpoint in a checkpoint directory, oldest first."""
    if not storage.isdir(directory):
        return []
    numeric = sorted(int(name) for name in storage.listdir(directory) if name.isdigit())
    return [step for step in numeric if is_finished(storage.join(directory, str(step)))]


def mark_copied(directory: str) -> None:
    """Writes COMMIT_FILE into the checkpoints of a checkpoint directory on gs:// that have
    checksums but no marker: complete saves copied from a local run. orbax would take them for
    unfinished saves of its own and delete them when a run resumes there."""
    if not storage.is_url(directory) or not storage.isdir(directory):
        return
    for name in storage.listdir(directory):
        step_dir = storage.join(directory, name)
        if (
            name.isdigit()
            and storage.exists(storage.join(step_dir, CHECKSUM_FILE))
            and not storage.exists(storage.join(step_dir, COMMIT_FILE))
        ):
            storage.write_url(storage.join(step_dir, COMMIT_FILE), "copied from a local run\n")
