"""Pre-emption: SIGTERM asks the trainer to save a checkpoint and stop at the next step.

Clusters send SIGTERM some seconds before they take a machine back. One process flags it
and the trainer checks the flag after each step. With several processes, JAX's own
pre-emption service (started by jax.distributed.initialize) catches the signal and makes
every process agree on the step to stop at, so we leave the handler to it.
"""

import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM'd command


class Preempted(Exception):
    """Raised once the checkpoint of `step` is on disk."""

    def __init__(self, step: int, checkpoint_dir: str) -> None:
        super().__init__(
            f"stopped by SIGTERM after step {step}; checkpoint saved in {checkpoint_dir}; "
            "run the same command again to resume"
        )
        self.step = step


class PreemptionGuard:
    """Context manager: while inside, SIGTERM no longer kills the process outright."""

    def __init__(self) -> None:
        self._requested = False
        self._previous = None
        self._multi_process = jax.process_count() > 1

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._requested = True

    def __enter__(self) -> "PreemptionGuard":
        in_main_thread = threading.current_thread() is threading.main_thread()
        if not self._multi_process and in_main_thread:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def requested(self, step: int) -> bool:
        if self._multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested
