"""Upper bounds on numeric flags whose size this machine pays for before anything can check it
(issue 26: a timing batch of 10**8 images was a MemoryError, --seeds=10**9 was OOM-killed at
22 GB). Each is far above any value the paper or the README uses; a larger one is one line."""

from harness.errors import UsageError

# Inference timing (sweep, report) allocates a batch of images and its activations at once;
# the defaults are 1, 64 and 256 images.
MAX_TIMING_BATCH = 4096
# Few-shot seeds each refit every probe; big_vision and V-MoE use 3 (or 5).
MAX_SEEDS = 100


def check_at_most(flag: str, value: int, limit: int, why: str) -> None:
    """Refuses `--flag=value` over `limit` with one line saying `why` the limit exists."""
    if value > limit:
        raise UsageError(f"--{flag}={value} is over {limit}, the most {why}; use a smaller value")
