"""The progress line a long run prints, with throughput and ETA."""

import contextlib
import sys
import time
from collections.abc import Iterator


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _rate(images_per_second: float | None) -> str:
    return "?" if images_per_second is None else f"{images_per_second:.0f}"


class Progress:
    """Throughput excludes compilation: the clock starts once the first step has finished."""

    def __init__(self, total_steps: int, start_step: int, batch_size: int) -> None:
        self.total_steps = total_steps
        self.batch_size = batch_size
        self._created = time.perf_counter()
        self._first_step: int | None = None
        self._first_time = 0.0
        self._window = (start_step, self._created)

    def start_clock(self, step: int) -> None:
        """Call once the first step's result is ready (compilation done)."""
        self._first_step, self._first_time = step, time.perf_counter()
        self._window = (step, self._first_time)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Work inside (evaluation) counts for neither throughput nor the ETA."""
        start = time.perf_counter()
        try:
            yield
        finally:
            gap = time.perf_counter() - start
            self._first_time += gap
            window_step, window_time = self._window
            self._window = (window_step, window_time + gap)

    def elapsed(self) -> float:
        return time.perf_counter() - self._created

    def images_per_second(self, step: int) -> float:
        """Throughput since the previous call (the logging window)."""
        now = time.perf_counter()
        window_step, window_time = self._window
        self._window = (step, now)
        if step <= window_step or now <= window_time:
            return 0.0
        return (step - window_step) * self.batch_size / (now - window_time)

    def overall_images_per_second(self, step: int) -> float:
        if self._first_step is None or step <= self._first_step:
            return 0.0
        return (
            (step - self._first_step) * self.batch_size / (time.perf_counter() - self._first_time)
        )

    def timed(self, step: int) -> tuple[int, float]:
        """(steps since the clock started, their seconds): the throughput's numerator and
        denominator, so throughput can be summed over attempts."""
        if self._first_step is None or step <= self._first_step:
            return 0, 0.0
        return step - self._first_step, time.perf_counter() - self._first_time

    def eta_seconds(self, step: int) -> float | None:
        if self._first_step is None or step <= self._first_step:
            return None
        per_step = (time.perf_counter() - self._first_time) / (step - self._first_step)
        return per_step * (self.total_steps - step)

    def report(self, step: int, scalars: dict[str, float]) -> None:
        eta = self.eta_seconds(step)
        line = (
            f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%)"
            f" | loss {scalars['train/loss']:.4f} | acc {scalars['train/accuracy']:.3f}"
            f" | {_rate(scalars.get('train/images_per_second'))} img/s"
            f" | elapsed {_clock(self.elapsed())}"
            f" | ETA {_clock(eta) if eta is not None else '?'}"
        )
        print(line, file=sys.stdout, flush=True)

    def report_eval(self, step: int, metrics: dict[str, float]) -> None:
        print(
            f"eval at step {step}: top-1 {metrics['eval/top1']:.4f}, loss "
            f"{metrics['eval/loss']:.4f} on {int(metrics['eval/num_examples'])} examples",
            flush=True,
        )
