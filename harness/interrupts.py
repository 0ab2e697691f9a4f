"""Ctrl-C (SIGINT) outside the training loop, made impossible to lose.

Python's default handler raises KeyboardInterrupt wherever the main thread is; when that is a
finalizer or a callback from C (a tf.data iterator's __del__, say), Python prints "Exception
ignored" and carries on, and the command finished with exit 0 (issue 26: at start-up, during
the final evaluation, and a single Ctrl-C in harness.evaluate). This handler also latches the
interrupt, and the commands check the latch at the points where work would be committed
(before training, per evaluation batch, before results.json, and when main returns), so a
swallowed Ctrl-C still stops the command with exit 130. The training loop's PreemptionGuard
replaces this handler while it runs (a checkpoint, then exit 130) and puts it back after.
"""

import signal
import threading
from types import FrameType

_latched = False


def _handle(signum: int, frame: FrameType | None) -> None:
    global _latched
    _latched = True
    raise KeyboardInterrupt


def install() -> None:
    """Makes SIGINT latch as well as raise (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handle)


def latched() -> bool:
    """Whether a SIGINT arrived since install() (or reset())."""
    return _latched


def check() -> None:
    """Raises KeyboardInterrupt if a SIGINT arrived, even one some library swallowed."""
    if _latched:
        raise KeyboardInterrupt


def reset() -> None:
    global _latched
    _latched = False
