"""Pre-emption: SIGTERM (or Ctrl-C, SIGINT) asks the trainer to save a checkpoint and stop at
the next step.

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
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Raised once the checkpoint of `step` is on disk."""

    def __init__(self, step: int, checkpoint_dir: str, signal_name: str = "SIGTERM") -> None:
        super().__init__(
            f"stopped by {signal_name} after step {step}; checkpoint saved in {checkpoint_dir}; "
            "run the same command again to resume"
        )
        self.step = step
        # What a shell reports for a command the signal killed: 143 (SIGTERM), 130 (SIGINT).
        self.exit_code = 128 + signal.Signals[signal_name].value


class PreemptionGuard:
    """Context manager: while inside, SIGTERM and SIGINT no longer kill the process outright;
    a Ctrl-C costs no more than a pre-emption (the steps since the last checkpoint are saved)."""

    def __init__(self) -> None:
        self._requested = False
        self.signal_name = "SIGTERM"
        self._previous: dict[int, object] = {}
        self._multi_process = jax.process_count() > 1

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "PreemptionGuard":
        in_main_thread = threading.current_thread() is threading.main_thread()
        # Several processes: JAX's pre-emption service owns SIGTERM (see the module doc), and
        # one process stopping alone on a Ctrl-C would leave the others waiting forever.
        if not self._multi_process and in_main_thread:
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    @property
    def signalled(self) -> bool:
        """Whether this process caught SIGTERM or SIGINT (single process; no sync point)."""
        return self._requested

    def requested(self, step: int) -> bool:
        if self._multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested
