"""Every file name of a run directory, in one place (no imports: any command may read these
before its heavy imports)."""

# Written by training (harness/train/), evaluate and the measuring commands.
RESULTS_FILE = "results.json"  # the finished run's numbers; its presence means "finished"
SWEEP_FILE = "sweep.json"  # harness.sweep's routing sweep
FEWSHOT_FILE = "fewshot.json"  # harness.fewshot's linear probes
EXPERIMENT_FILE = "experiment.json"  # the resolved specs, what readers rebuild the run from
CONFIG_FILE = "config.gin"  # the gin config the run started with (never parsed by readers)
OPERATIVE_CONFIG_FILE = "operative_config.gin"
ATTEMPTS_FILE = "attempts.json"  # one record per training attempt (wall time, energy)
INIT_FROM_FILE = "init_from.json"  # what a fine-tuning run started from
LOCK_FILE = ".harness.lock"  # flock'ed by the one process writing the run directory

# Checkpoints: CHECKPOINT_DIR/<step>/ (orbax), with our checksums beside orbax's files.
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_ITEM_DIR = "default"  # orbax's name for the one item of a StandardSave
CHECKSUM_FILE = "checksums.sha256.json"
# orbax.checkpoint.utils._COMMIT_SUCCESS_FILE, spelled out so readers need not import orbax.
COMMIT_FILE = "commit_success.txt"

# The suite's per-run files (harness/suites/).
DIVERGED_FILE = "diverged.json"
STEP_TIMES_FILE = "step_times.json"
