"""The one pjit trainer every family runs under: the training loop around a ShardedModel
(harness/runtime/sharded_model.py), with checkpoints, TensorBoard events, the evaluators and
results.json in the workdir.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from clu import metric_writers

from harness.config.experiment import Experiment
from harness.errors import NonFiniteLossError
from harness.measure import routing_health
from harness.reporting import plots
from harness.run_dir import checkpoint_steps, events, run_record
from harness.runtime.checkpointing import Checkpointer
from harness.runtime.evaluator import EvalOutput, Evaluator, due
from harness.runtime.sharded_model import Evaluation, ShardedModel
from harness.runtime.steps import (
    MAX_METRICS,
    TrainState,
)
from harness.train import profiling
from harness.train.attempts import AttemptLog
from harness.train.preemption import Preempted, PreemptionGuard
from harness.train.progress import Progress
from harness.transfer import evaluators as transfer_evaluators


class Trainer(ShardedModel):
    """Trains a ShardedModel from its latest checkpoint to the end, evaluating, checkpointing
    and logging on the way."""

    def __init__(self, experiment: Experiment, workdir: str, mesh_shape: tuple[int, int, int]):
        super().__init__(experiment, workdir, mesh_shape)
        profiling.check_window(experiment.train.profile_steps, self.total_steps)

    def redone_on_resume(self, start_step: int) -> Callable[[Any], bool]:
        """Which TensorBoard events a run resuming from `start_step` will write again: all
        after it, everything if it never checkpointed (hparams included), and the final
        evaluation if training had finished."""
        finished = start_step == self.total_steps

        def orphaned(event) -> bool:
            if event.WhichOneof("what") == "file_version":
                return False
            if event.step > start_step or start_step == 0:
                return True
            tags = [value.tag for value in event.summary.value]
            return (
                finished
                and event.step == start_step
                and not any(tag.startswith("train/") for tag in tags)
            )

        return orphaned

    def restore_latest(self) -> tuple[int, TrainState | None]:
        """(step, state) of the workdir's latest checkpoint, or (0, None) when it has none.

        A damaged checkpoint raises UsageError here; launch.train calls this before it records
        anything in the workdir, so a refused resume leaves the run directory as it was.
        """
        steps = checkpoint_steps.saved_steps(self.workdir)
        if not steps:
            return 0, None
        checkpointer = Checkpointer(self.workdir, keep=self.experiment.train.keep_checkpoints)
        try:
            return steps[-1], checkpointer.restore(steps[-1], self.abstract_state())
        finally:
            checkpointer.close()

    def run(
        self,
        attempts: AttemptLog | None = None,
        evaluators: Sequence[Evaluator] | None = None,
        start: tuple[int, TrainState | None] | None = None,
    ) -> dict[str, Any]:
        """Trains from the latest checkpoint to the end and evaluates. `attempts` records this
        attempt's steps and time after every checkpoint (results then total all attempts);
        `evaluators` run when due and after the last step, and their last results join the
        outcome; None means the ones the experiment asks for (harness/transfer/evaluators.py).
        `start` is `restore_latest()`'s result when the caller has restored already."""
        train = self.experiment.train
        if evaluators is None:
            evaluators = transfer_evaluators.for_experiment(self)
        is_chief = jax.process_index() == 0
        start_step, state = start if start is not None else self.restore_latest()
        checkpointer = Checkpointer(self.workdir, keep=train.keep_checkpoints)
        attempts = attempts or AttemptLog(self.workdir, writes=False)
        attempts.begin(start_step)
        if state is not None:
            print(f"resuming from checkpoint at step {start_step} of {self.total_steps}")
        else:
            state = self.init_state()
        # TensorBoard events from the chief only; the console gets the progress line instead
        # of clu's per-scalar log lines.
        if is_chief:
            events.discard_events(self.workdir, self.redone_on_resume(start_step))
        writer = (
            metric_writers.SummaryWriter(self.workdir)
            if is_chief
            else metric_writers.MultiWriter([])
        )
        if not start_step:
            writer.write_hparams(run_record.hparams(self.experiment))
        progress = Progress(self.total_steps, start_step, self.experiment.data.batch_size)

        def record(step: int, outcome: str) -> None:
            attempts.update(step, progress.elapsed(), *progress.timed(step), outcome)

        evaluation: Evaluation | None = None
        last_eval_step = None
        evaluated: dict[int, tuple[int, EvalOutput]] = {}  # index -> its last (step, output)

        def run_evaluator(index: int, step: int, params: Any) -> None:
            with progress.paused():  # throughput and ETA count training only
                output = evaluators[index](self, params, step)
            if output.scalars:
                writer.write_scalars(step, output.scalars)
            evaluated[index] = (step, output)

        interval = MetricsInterval()
        health = routing_health.HealthTracker()
        profiler = profiling.StepProfiler(self.workdir, train.profile_steps, is_chief)
        with self.mesh, PreemptionGuard() as preemption, profiler:
            batches = self.train_batches(start_step)
            for step in range(start_step + 1, self.total_steps + 1):
                batch = self.global_batch(next(batches), self.batch_shardings)
                profiler.before_step(step)
                state, metrics = self.train_step(state, batch)
                profiler.after_step(step, state)
                interval.add(metrics)
                if step == start_step + 1:
                    jax.block_until_ready(metrics)
                    progress.start_clock(step)
                last = step == self.total_steps
                # Step 1 is logged too, so every curve starts from the untrained model.
                should_log = step % train.log_every_steps == 0 or step == 1 or last
                should_save = step % train.checkpoint_every_steps == 0 or last
                if should_save:
                    # Checked before every save, so a checkpoint never holds a diverged run.
                    check_finite(float(metrics["train/loss"]), step, checkpointer)
                if should_log:
                    scalars = interval.mean_and_reset()
                    check_finite(scalars["train/loss"], step, checkpointer)
                    if step > start_step + 1:
                        scalars["train/images_per_second"] = progress.images_per_second(step)
                    health_scalars, collapses = health.observe(step, scalars)
                    writer.write_scalars(step, {**scalars, **health_scalars})
                    progress.report(step, scalars)
                    for line in collapses:
                        print(line, flush=True)
                if train.eval_every_steps and step % train.eval_every_steps == 0:
                    with progress.paused():  # throughput and ETA count training only
                        evaluation, last_eval_step = self.evaluate(state.params), step
                        write_evaluation(writer, step, evaluation)
                    progress.report_eval(step, evaluation.metrics)
                for index, evaluator in enumerate(evaluators):
                    if evaluator.every_steps and due(evaluator, step, last):
                        run_evaluator(index, step, state.params)
                if should_save:
                    checkpointer.save(step, state)
                    record(step, "checkpointed")
                if not last and preemption.requested(step):
                    if not should_save:
                        check_finite(float(metrics["train/loss"]), step, checkpointer)
                        checkpointer.save(step, state)
                    record(step, "stopped")
                    writer.flush()
                    checkpointer.close()
                    raise Preempted(step, checkpointer.directory, preemption.signal_name)
        if preemption.signalled and start_step < self.total_steps:
            # Caught during the last step, whose checkpoint is saved: stop as asked rather
            # than evaluate and finish with exit 0; rerunning evaluates and finishes.
            record(self.total_steps, "stopped")
            writer.flush()
            checkpointer.close()
            raise Preempted(self.total_steps, checkpointer.directory, preemption.signal_name)
        timed = progress.timed(self.total_steps)  # before the final evaluation
        if evaluation is None or last_eval_step != self.total_steps:
            evaluation = self.evaluate(state.params)
            write_evaluation(writer, self.total_steps, evaluation)
            progress.report_eval(self.total_steps, evaluation.metrics)
        for index in range(len(evaluators)):
            if evaluated.get(index, (None,))[0] != self.total_steps:
                run_evaluator(index, self.total_steps, state.params)
        writer.flush()
        checkpointer.close()
        attempts.update(self.total_steps, progress.elapsed(), *timed, "finished")
        batch_size = self.experiment.data.batch_size
        summary = {
            "steps": self.total_steps,
            "batch_size": batch_size,
            "resumed_from_step": start_step,
            # Over every attempt at this run (RUN_DIR/attempts.json), not just this one.
            "wall_seconds": attempts.wall_seconds(),
            "images_per_second": attempts.images_per_second(batch_size),
            "attempts": len(attempts.all()),
        }
        outcome = {
            "train": summary,
            "eval": evaluation.metrics,
            "routing": routing_summary(evaluation),
        }
        for _, output in evaluated.values():
            outcome.update(output.results)
        health_summary = health.summary(
            routing_health.describe_router(self.experiment.model.moe, evaluation=False)
        )
        if health_summary:
            outcome["routing_health"] = health_summary
        return outcome


def routing_summary(evaluation: Evaluation) -> dict[str, Any]:
    """Expert-by-class counts of the first and last MoE block (for heatmaps) and every
    block's per-expert load, small enough for results.json at any model size."""
    counts = evaluation.expert_class_counts
    if not counts:
        return {}
    blocks = sorted(counts)
    return {
        "expert_class_counts": {
            b: counts[b].tolist() for b in dict.fromkeys([blocks[0], blocks[-1]])
        },
        "expert_load": {b: (counts[b].sum(0) / counts[b].sum()).tolist() for b in blocks},
    }


def write_evaluation(
    writer: metric_writers.MetricWriter, step: int, evaluation: Evaluation
) -> None:
    writer.write_scalars(step, evaluation.metrics)
    images = {
        f"routing/expert_by_class/{block}": plots.figure_to_array(
            plots.expert_class_heatmap(counts, f"{block}: expert choices by class")
        )[None]
        for block, counts in evaluation.expert_class_counts.items()
    }
    if images:
        writer.write_images(step, images)


class MetricsInterval:
    """Train metrics over the steps since the last log, so a logged loss is not one noisy
    batch. Values stay on the device until logged, keeping dispatch asynchronous. Most are
    averaged; the learning rate is the schedule's value at the logged step, and a maximum
    stays the maximum."""

    LAST = ("train/learning_rate",)
    MAXIMA = MAX_METRICS

    def __init__(self) -> None:
        self._steps: list[dict[str, jax.Array]] = []

    def add(self, metrics: dict[str, jax.Array]) -> None:
        self._steps.append(metrics)

    def mean_and_reset(self) -> dict[str, Any]:
        """Floats, except the per-expert load vectors (arrays, averaged over the steps)."""
        steps, self._steps = jax.device_get(self._steps), []

        def reduce(name: str) -> float | np.ndarray:
            values = np.asarray([s[name] for s in steps], np.float64)
            if name in self.LAST:
                value = values[-1]
            else:
                value = values.max(axis=0) if name in self.MAXIMA else values.mean(axis=0)
            return float(value) if value.ndim == 0 else value

        return {name: reduce(name) for name in steps[-1]}


def check_finite(loss: float, step: int, checkpointer: Checkpointer) -> None:
    if not np.isfinite(loss):
        latest = checkpointer.latest_step()
        kept = f"the last good checkpoint is step {latest}" if latest else "no checkpoint exists"
        raise NonFiniteLossError(
            f"loss became {loss} at step {step}; stopping ({kept}). Lower the learning rate "
            "or enable gradient clipping (OptimizerSpec.grad_clip_norm)"
        )
