"""TrainSpec.profile_steps: a jax.profiler trace of a few training steps, for TensorBoard.

The trace goes to WORKDIR/plugins/profile/<timestamp>/<host>.xplane.pb, where TensorBoard's
profile tab (the tensorboard-plugin-profile package) finds it. It starts before the window's
first step and stops after its last step has finished on the device, so the trace holds the
whole window: clu's periodic Profile action stops at its next call instead, which can cut off
steps still running asynchronously. Only the chief process traces, so processes sharing a
host never write the same file.

jax's profiler writes through its own copy of TensorFlow's file system code, which knows local
paths only, so for a workdir on a URL (gs://...) the trace goes to a local temporary folder and
is copied to WORKDIR/plugins/profile through tf.io.gfile when it stops.
"""

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import jax
from clu import profiler

from harness import storage

# jaxlib 0.4.26's Python tracer sets this module's `enabled` to a bool when a trace starts and
# stops; TensorFlow 2.21 calls `enabled()`, so every later tf.summary write (TensorBoard events)
# would raise "'bool' object is not callable".
_TF_TRACE_MODULE = "tensorflow.python.profiler.trace"


@contextlib.contextmanager
def _tensorflow_trace_kept() -> Iterator[None]:
    """Restores TensorFlow's `trace.enabled` function after the block, if jax replaced it."""
    module = sys.modules.get(_TF_TRACE_MODULE)
    original = getattr(module, "enabled", None)
    try:
        yield
    finally:
        if callable(original) and not callable(getattr(module, "enabled", None)):
            module.enabled = original  # type: ignore[union-attr]


def check_window(profile_steps: tuple[int, int] | None, total_steps: int) -> None:
    """Refuses (ValueError, one line) a window that starts after the run's last step."""
    if profile_steps is not None and profile_steps[0] > total_steps:
        raise ValueError(
            f"TrainSpec.profile_steps={profile_steps!r} starts after the run's last step "
            f"({total_steps}); start the window at a step <= {total_steps}"
        )


class StepProfiler:
    """Traces steps first .. first + count - 1 of `profile_steps` (those this attempt trains)."""

    def __init__(self, workdir: str, profile_steps: tuple[int, int] | None, enabled: bool):
        self.workdir = workdir
        self.window = profile_steps if enabled else None
        self.running = False
        self.staging: str | None = None  # the local trace folder of a URL workdir

    def __enter__(self) -> "StepProfiler":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def before_step(self, step: int) -> None:
        if self.window is None or self.running:
            return
        first, count = self.window
        # A resumed attempt that starts inside the window traces the rest of it.
        if first <= step < first + count:
            logdir = self.workdir
            if storage.is_url(self.workdir):
                logdir = self.staging = tempfile.mkdtemp(prefix="harness-profile-")
            with _tensorflow_trace_kept():
                profiler.start(logdir=logdir)
            self.running = True

    def after_step(self, step: int, outputs: Any) -> None:
        if self.running and step >= sum(self.window) - 1:
            jax.block_until_ready(outputs)
            self.stop()

    def stop(self) -> None:
        """Ends a trace still running (the run ended or stopped inside the window)."""
        if self.running:
            with _tensorflow_trace_kept():
                profiler.stop()
            self.running = False
            self.window = None  # one trace per attempt
            if self.staging is not None:
                storage.copy_tree(self.staging, self.workdir)
                shutil.rmtree(self.staging, ignore_errors=True)
                self.staging = None
