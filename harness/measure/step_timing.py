"""Training-step time of several configs, measured interleaved in one process.

Method (`METHOD`, printed next to every figure that uses it):
- Each config's Trainer is built from its gin file and bindings, its state initialised, and
  one real training batch put on the device; one untimed step compiles it.
- Then `rounds` rounds; in each, every config in turn runs `steps` train steps, each timed on
  its own: time.perf_counter() around the step plus jax.block_until_ready on its metrics.
- Step time is the median over all of a config's timed steps; images/s = batch / median.
  Each round's own median is kept too (`round_ms`), so a comparison can ask whether one
  config beat another in every round, not only in the pooled median.

Why interleaved: on a shared machine, load and clock speed drift over minutes. Runs trained
one after another each see a different stretch of that drift, so their own images/s can
differ by 25% for one architecture. Rounds spread the drift over every config alike.
"""

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import gin
import jax

from harness.config import gin_config
from harness.config.experiment import Experiment, validate

METHOD = (
    "train step of one real batch already on the device, {rounds} interleaved rounds x {steps} "
    "steps per config in one process after a compiling step, each step timed alone "
    "(perf_counter + block_until_ready); median step time, images/s = batch / median"
)


@dataclasses.dataclass(frozen=True)
class StepTime:
    step_ms: float  # median over every timed step
    images_per_s: float
    batch_size: int
    timed_steps: int
    round_ms: tuple[float, ...] = ()  # the median step of each round, in round order

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PreparedStep:
    """A config ready to time: its sharded model, a compiled state and one batch on the device."""

    run: Any  # harness.runtime.sharded_model.ShardedModel
    state: Any
    batch: Any
    batches: Iterator[Any]  # the run's own training input, for timing the real loop

    def step(self) -> float:
        """Seconds for one train step on `batch`, waited for; keeps the new state."""
        with self.run.mesh:
            start = time.perf_counter()
            # The step donates its input state: keep the new one for the next call.
            self.state, metrics = self.run.train_step(self.state, self.batch)
            jax.block_until_ready(metrics)
            return time.perf_counter() - start


def prepare(gin_file: str, bindings: Sequence[str], workdir: str) -> PreparedStep:
    """Build, initialise and compile one config's train step; gin is cleared afterwards."""
    from harness.runtime import sharded_model  # JAX state: only once absl has parsed flags

    gin_config.parse_gin([gin_file], [*bindings, "TrainSpec.num_epochs=None"])
    try:
        experiment = Experiment.from_gin()
        mesh_shape = validate(experiment, jax.device_count())
        run = sharded_model.ShardedModel(experiment, workdir, mesh_shape)
    finally:
        gin.clear_config()
    batches = run.train_batches(0)
    with run.mesh:
        state = run.init_state()
        batch = run.global_batch(next(batches), run.batch_shardings)
    prepared = PreparedStep(run, state, batch, batches)
    prepared.step()  # compiles
    return prepared


def time_train_steps(
    configs: Mapping[str, tuple[str, Sequence[str]]], rounds: int, steps: int
) -> dict[str, StepTime]:
    """Median train-step time of each named (gin file, bindings), measured round by round."""
    if rounds < 1 or steps < 1:
        raise ValueError(f"rounds={rounds} and steps={steps} must both be >= 1")
    with tempfile.TemporaryDirectory(prefix="step_timing_") as workdir:
        prepared = {
            name: prepare(gin_file, bindings, workdir)
            for name, (gin_file, bindings) in configs.items()
        }
        times: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(rounds):
            for name, config_step in prepared.items():
                times[name].extend(config_step.step() for _ in range(steps))
    result = {}
    for name, config_step in prepared.items():
        median = statistics.median(times[name])
        batch_size = config_step.run.experiment.data.batch_size
        per_round = tuple(
            1000 * statistics.median(times[name][r * steps : (r + 1) * steps])
            for r in range(rounds)
        )
        result[name] = StepTime(
            1000 * median, batch_size / median, batch_size, len(times[name]), per_round
        )
    return result
