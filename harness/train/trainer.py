"""The one pjit trainer every family runs under.

gin -> ModelSpec/TrainSpec/MeshSpec/OptimizerSpec/DataSpec -> a praxis model on a
('data', 'expert', 'model') mesh -> jit-compiled steps with explicit in/out shardings and a
donated state -> checkpoints, TensorBoard events and results.json in the workdir.
"""

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metric_writers
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec
from praxis import base_layer

from harness.data import metadata, pipeline, synthetic
from harness.data.synthetic_spec import SYNTHETIC
from harness.errors import NonFiniteLossError
from harness.reporting import events, plots
from harness.train import (
    batch_layout,
    checkpoint_steps,
    fsdp,
    init_from,
    optimizer,
    profiling,
    run_record,
)
from harness.train.attempts import AttemptLog
from harness.train.checkpointing import Checkpointer, abstract_like
from harness.train.experiment import Experiment
from harness.train.mesh import batch_spec, make_mesh
from harness.train.preemption import Preempted, PreemptionGuard
from harness.train.progress import Progress
from harness.train.steps import (
    EXPERT_CLASS_PREFIX,
    MAX_METRICS,
    PER_IMAGE_BINS,
    PER_IMAGE_PREFIX,
    TrainState,
    make_eval_step,
    make_train_step,
)
from harness.transfer import ood_eval
from models import builders, scan_layout, specs


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Metrics of one pass over the eval split."""

    metrics: dict[str, float]  # 'eval/top1', 'eval/loss', 'eval/routing/...'
    expert_class_counts: dict[str, np.ndarray]  # 'block_NN' -> [classes, experts]
    # Sparse models: the per-image processed fraction's mean, std and histogram over images.
    per_image_processed: dict[str, Any] | None = None

    @classmethod
    def from_sums(cls, totals: dict[str, np.ndarray]) -> "Evaluation":
        count = float(totals.pop("count"))
        metrics = {
            "eval/top1": float(totals.pop("correct")) / count,
            "eval/loss": float(totals.pop("loss")) / count,
            "eval/num_examples": count,
        }
        per_image = _per_image_summary(totals, count)
        prefix = f"{EXPERT_CLASS_PREFIX}/"
        counts = {k[len(prefix) :]: v for k, v in totals.items() if k.startswith(prefix)}
        metrics.update(
            {f"eval/{k}": float(v) / count for k, v in totals.items() if not k.startswith(prefix)}
        )
        return cls(metrics=metrics, expert_class_counts=counts, per_image_processed=per_image)


def _per_image_summary(totals: dict[str, np.ndarray], count: float) -> dict[str, Any] | None:
    """Pops the per-image sums out of `totals`: mean, std over images, and the histogram."""
    keys = [k for k in totals if k.startswith(f"{PER_IMAGE_PREFIX}/")]
    if not keys:
        return None
    sums = {k.split("/", 1)[1]: totals.pop(k) for k in keys}
    mean = float(sums["sum"]) / count
    variance = max(float(sums["squares"]) / count - mean**2, 0.0)
    return {
        "mean": mean,
        "std": variance**0.5,
        "histogram": [round(float(c)) for c in sums["histogram"]],
        "bin_edges": np.linspace(0.0, 1.0, PER_IMAGE_BINS + 1).tolist(),
    }


class StepEvaluator(Protocol):
    """An extra evaluation run every `every_steps` steps and at the last step (the few-shot
    probes of harness/train/fewshot_eval.py); its last payload goes into the run's results."""

    every_steps: int

    def __call__(
        self, step: int, params: Any, writer: metric_writers.MetricWriter
    ) -> dict[str, Any]: ...


class Trainer:
    """Builds the sharded model, then trains, evaluates, checkpoints and logs."""

    def __init__(self, experiment: Experiment, workdir: str, mesh_shape: tuple[int, int, int]):
        self.experiment = experiment
        self.workdir = workdir
        self.mesh = make_mesh(mesh_shape)
        spec, train = experiment.model, experiment.train
        self.model_config = builders.build_model(
            spec, mesh_shape=mesh_shape, compute_dtype=train.compute_dtype
        )
        self.model = base_layer.instantiate(self.model_config)
        info = metadata.dataset_info(experiment.data)
        self.image_shape, self.num_train_examples = tuple(info.image_shape), info.num_train_examples
        self.total_steps = train.total_steps(experiment.data.batch_size, self.num_train_examples)
        profiling.check_window(train.profile_steps, self.total_steps)
        self.schedule = optimizer.make_schedule(experiment.optimizer, self.total_steps)
        self.tx = optimizer.make_optimizer(experiment.optimizer, self.total_steps)
        self.init_rng, step_rng = jax.random.split(jax.random.PRNGKey(train.seed))
        self._build_shardings()
        # The input shard this process reads: from the mesh, not the process count, since
        # processes along 'model' hold the same batch rows.
        self.input_shard = batch_layout.input_shard(self.batch_shardings["label"])
        self.train_step = jax.jit(
            make_train_step(
                self.model,
                self.tx,
                self.schedule,
                train.loss,
                train.label_smoothing,
                step_rng,
                train.microbatches,
            ),
            in_shardings=(self.state_shardings, self.batch_shardings),
            out_shardings=(self.state_shardings, None),
            donate_argnums=(0,),
        )
        self.evaluate = self.make_evaluator()
        # TrainSpec.init_from's weights, when read ahead of the fresh start (launch.train).
        self.pretrained: init_from.Pretrained | None = None

    def _build_shardings(self) -> None:
        images = jax.ShapeDtypeStruct(
            (self.experiment.model.min_batch, *self.image_shape), jnp.float32
        )
        weight_specs = self.model.abstract_init_with_metadata(images)[base_layer.PARAMS]
        partition = base_layer.var_partition_specs(
            weight_specs, self.mesh.devices.shape, specs.MESH_AXES
        )
        abstract_params = jax.eval_shape(self._init_params, self.init_rng)
        if self.experiment.mesh.shard_params_over_data:
            data_size = self.mesh.shape[fsdp.DATA_AXIS]
            partition = fsdp.shard_tree_over_data(abstract_params, partition, data_size)
        param_shardings = jax.tree_util.tree_map(
            lambda spec: NamedSharding(self.mesh, spec), partition
        )
        replicated = NamedSharding(self.mesh, PartitionSpec())
        opt_shardings = optax_state_shardings(self.tx, abstract_params, param_shardings, replicated)
        self.state_shardings = TrainState(
            step=replicated, params=param_shardings, opt_state=opt_shardings
        )
        self.batch_shardings = {
            "image": NamedSharding(self.mesh, batch_spec(4)),
            "label": NamedSharding(self.mesh, batch_spec(1)),
        }
        self.eval_batch_shardings = {
            **self.batch_shardings,
            "mask": NamedSharding(self.mesh, batch_spec(1)),
        }

    def _init_params(self, rng: jax.Array) -> Any:
        images = jnp.zeros((self.experiment.model.min_batch, *self.image_shape), jnp.float32)
        params_rng, noise_rng = jax.random.split(rng)
        variables = self.model.init(
            {base_layer.PARAMS: params_rng, base_layer.RANDOM: noise_rng}, images
        )
        return variables[base_layer.PARAMS]

    def fresh_params(self, paths: Sequence[str]) -> dict[str, np.ndarray]:
        """The from-scratch initial values of some params ('/'-joined paths) on the host:
        exactly what `init_state` would give them for TrainSpec.seed (same rng, same
        partitionable threefry). Upcycling takes its routers from here; jit drops the rest
        of the init as dead code."""

        def chosen(rng: jax.Array) -> dict[str, jax.Array]:
            # Per block, as upcycling names them (models/scan_layout.py).
            params = traverse_util.flatten_dict(self._init_params(rng), sep="/")
            flat = scan_layout.to_blocks(params)
            return {path: flat[path] for path in paths}

        with self.mesh, jax.threefry_partitionable(True):
            return jax.device_get(jax.jit(chosen)(self.init_rng))

    def _init_state(self, rng: jax.Array) -> TrainState:
        params = self._init_params(rng)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params)
        )

    def init_state(self) -> TrainState:
        if self.experiment.train.init_from:  # fine-tuning: pretrained body, zero head
            pretrained = self.pretrained or init_from.load_for(self)
            self.pretrained = None  # placed on the mesh now; no need to keep the host copy
            return init_from.initial_state(self, pretrained)
        # Each device draws only its own shard of the weights. jax 0.4.26's default threefry
        # then gives different weights for the same seed on different meshes (MoE experts and
        # 'model'-split matrices differed); the partitionable variant draws the same bits
        # whatever the sharding, so a seed means one initial model on every mesh.
        with self.mesh, jax.threefry_partitionable(True):
            return jax.jit(self._init_state, out_shardings=self.state_shardings)(self.init_rng)

    def abstract_state(self) -> TrainState:
        """Shapes and shardings of the state, the layout checkpoints are restored into."""
        return abstract_like(jax.eval_shape(self._init_state, self.init_rng), self.state_shardings)

    def global_batch(self, local: dict[str, np.ndarray], shardings) -> dict[str, jax.Array]:
        if all(isinstance(value, jax.Array) for value in local.values()):
            return local  # Synthetic batches are made on the devices, already global.
        return batch_layout.global_arrays(local, shardings, self.input_shard)

    def model_for(self, model_spec: specs.ModelSpec | None = None) -> base_layer.BaseLayer:
        """The trained model, or a variant of it (other inference routing) for the same weights."""
        if model_spec is None:
            return self.model
        config = builders.build_model(
            model_spec,
            mesh_shape=self.mesh.devices.shape,
            compute_dtype=self.experiment.train.compute_dtype,
        )
        return base_layer.instantiate(config)

    def make_evaluator(
        self, model_spec: specs.ModelSpec | None = None
    ) -> Callable[[Any], Evaluation]:
        """One pass over the eval split with the trained weights; `model_spec` may change the
        inference-time routing (k, C, BPR) of the same weights."""
        step = jax.jit(
            make_eval_step(self.model_for(model_spec), self.experiment.train.loss),
            in_shardings=(self.state_shardings.params, self.eval_batch_shardings),
        )

        def evaluate(params: Any) -> Evaluation:
            totals: dict[str, np.ndarray] = {}
            with self.mesh:
                for local in self.eval_batches():
                    batch = self.global_batch(local, self.eval_batch_shardings)
                    for key, value in jax.device_get(step(params, batch)).items():
                        totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64)
            return Evaluation.from_sums(totals)

        return evaluate

    def eval_batches(self) -> Iterator[dict[str, Any]]:
        if self.experiment.data.dataset == SYNTHETIC:
            return synthetic.eval_batches(self.experiment.data, self.eval_batch_shardings)
        shard = self.input_shard
        return pipeline.eval_batches(self.experiment.data, shard.index, shard.count)

    def train_batches(self, start_step: int) -> Iterator[dict[str, Any]]:
        data, seed = self.experiment.data, self.experiment.train.seed
        if data.dataset == SYNTHETIC:
            return synthetic.train_batches(data, self.batch_shardings, seed, start_step)
        batches = pipeline.train_batches(
            data, self.input_shard.index, self.input_shard.count, seed=seed
        )
        # The pipeline is deterministic, so skipping what earlier attempts consumed gives a
        # resumed run the very batches an uninterrupted one would have seen.
        return itertools.islice(batches, start_step, None)

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
        fewshot: StepEvaluator | None = None,
        start: tuple[int, TrainState | None] | None = None,
    ) -> dict[str, Any]:
        """Trains from the latest checkpoint to the end and evaluates. `attempts` records this
        attempt's steps and time after every checkpoint (results then total all attempts);
        `fewshot`, when given, also evaluates periodically, and its last payload is the
        results' "fewshot". `start` is `restore_latest()`'s result when the caller has
        restored already."""
        train = self.experiment.train
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
        fewshot_payload, last_fewshot_step = None, None
        interval = MetricsInterval()
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
                    writer.write_scalars(step, scalars)
                    progress.report(step, scalars)
                if train.eval_every_steps and step % train.eval_every_steps == 0:
                    with progress.paused():  # throughput and ETA count training only
                        evaluation, last_eval_step = self.evaluate(state.params), step
                        write_evaluation(writer, step, evaluation)
                    progress.report_eval(step, evaluation.metrics)
                if fewshot is not None and (last or step % fewshot.every_steps == 0):
                    with progress.paused():
                        fewshot_payload = fewshot(step, state.params, writer)
                    last_fewshot_step = step
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
        timed = progress.timed(self.total_steps)  # before the final evaluation
        if evaluation is None or last_eval_step != self.total_steps:
            evaluation = self.evaluate(state.params)
            write_evaluation(writer, self.total_steps, evaluation)
            progress.report_eval(self.total_steps, evaluation.metrics)
        if fewshot is not None and last_fewshot_step != self.total_steps:
            fewshot_payload = fewshot(self.total_steps, state.params, writer)
        # OOD sets and shape bias (TrainSpec.eval_datasets; checked in launch.build).
        transfer = ood_eval.evaluate(self, state.params, train.eval_datasets)
        if transfer:
            writer.write_scalars(self.total_steps, ood_eval.scalars(transfer))
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
            **transfer,
        }
        if fewshot_payload is not None:
            outcome["fewshot"] = fewshot_payload
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


def optax_state_shardings(tx, abstract_params, param_shardings, replicated):
    """Optimiser moments follow their parameter's sharding; step counters are replicated."""
    abstract_opt_state = jax.eval_shape(tx.init, abstract_params)
    return optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        abstract_opt_state,
        param_shardings,
        transform_non_params=lambda _: replicated,
    )


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

    def mean_and_reset(self) -> dict[str, float]:
        steps, self._steps = jax.device_get(self._steps), []

        def reduce(name: str) -> float:
            values = np.asarray([s[name] for s in steps], np.float64)
            if name in self.LAST:
                return float(values[-1])
            return float(values.max() if name in self.MAXIMA else values.mean())

        return {name: reduce(name) for name in steps[-1]}


def check_finite(loss: float, step: int, checkpointer: Checkpointer) -> None:
    if not np.isfinite(loss):
        latest = checkpointer.latest_step()
        kept = f"the last good checkpoint is step {latest}" if latest else "no checkpoint exists"
        raise NonFiniteLossError(
            f"loss became {loss} at step {step}; stopping ({kept}). Lower the learning rate "
            "or enable gradient clipping (OptimizerSpec.grad_clip_norm)"
        )
