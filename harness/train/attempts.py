"""RUN_DIR/attempts.json: every attempt at a run (first start, resumes), so a run's training
time is the sum over all of them, not the last attempt's.

An attempt's entry is rewritten after each checkpoint, so an attempt that is killed still
counts up to its last checkpoint (the steps after it are trained again by the next attempt
and counted there).
"""

import json
from typing import Any

from harness import files, storage
from harness.run_dir import names, run_record

ATTEMPTS_FILE = names.ATTEMPTS_FILE


class AttemptLog:
    """The earlier attempts of a workdir and this one."""

    def __init__(self, workdir: str, writes: bool = True) -> None:
        self.path = storage.join(workdir, ATTEMPTS_FILE)
        self.writes = writes
        self.earlier = read_attempts(workdir)
        self.begin(0)

    def begin(self, from_step: int) -> None:
        """This attempt starts (or resumes) at `from_step`."""
        self.current: dict[str, Any] = {
            "started": run_record.timestamp(),
            "from_step": from_step,
            "to_step": from_step,
            "wall_seconds": 0.0,
            # Steps timed for throughput (after the first, compiling one) and their seconds,
            # evaluation excluded.
            "timed_steps": 0,
            "train_seconds": 0.0,
            "outcome": "running",
        }

    def update(
        self,
        to_step: int,
        wall_seconds: float,
        timed_steps: int,
        train_seconds: float,
        outcome: str,
    ) -> None:
        self.current.update(
            to_step=to_step,
            wall_seconds=wall_seconds,
            timed_steps=timed_steps,
            train_seconds=train_seconds,
            outcome=outcome,
            updated=run_record.timestamp(),
        )
        if self.writes:
            files.write_json_atomically(self.path, {"attempts": self.all()})

    def record_energy(self, section: dict[str, Any]) -> None:
        """This attempt's codecarbon reading (harness.measure.energy_tracker), kept with it so
        a resumed run's energy sums every attempt that was metered."""
        self.current["energy"] = section
        if self.writes:
            files.write_json_atomically(self.path, {"attempts": self.all()})

    def all(self) -> list[dict[str, Any]]:
        return [*self.earlier, self.current]

    def wall_seconds(self) -> float:
        return sum(float(a["wall_seconds"]) for a in self.all())

    def images_per_second(self, batch_size: int) -> float:
        seconds = sum(float(a["train_seconds"]) for a in self.all())
        steps = sum(int(a["timed_steps"]) for a in self.all())
        return steps * batch_size / seconds if seconds > 0 else 0.0


def read_attempts(workdir: str) -> list[dict[str, Any]]:
    """The recorded attempts; an unreadable file (a crash cannot leave one: it is replaced
    atomically) counts as none rather than stopping a resume."""
    try:
        attempts = json.loads(storage.read_text(storage.join(workdir, ATTEMPTS_FILE)))["attempts"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return attempts if isinstance(attempts, list) else []
