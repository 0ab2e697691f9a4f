"""An experiment's model placed on its device mesh: what training, restoring, timing and
evaluation share.

gin -> ModelSpec/TrainSpec/MeshSpec/OptimizerSpec/DataSpec -> a praxis model on a
('data', 'expert', 'model') mesh -> jit-compiled train and eval steps with explicit in/out
shardings and a donated state. The training loop around it is harness/train/trainer.py.
"""

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec
from praxis import base_layer

from harness import interrupts
from harness.config.experiment import Experiment
from harness.data import metadata, pipeline, synthetic
from harness.data.synthetic_spec import SYNTHETIC
from harness.runtime import batch_layout, fsdp, init_from, optimizer
from harness.runtime.checkpointing import abstract_like
from harness.runtime.mesh import batch_spec, make_mesh
from harness.runtime.steps import (
    EXPERT_CLASS_PREFIX,
    PER_IMAGE_BINS,
    PER_IMAGE_PREFIX,
    TrainState,
    make_eval_step,
    make_train_step,
)
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


class ShardedModel:
    """An experiment's model on its mesh: shardings, initial or abstract state, the jitted
    train and eval steps, and its batches. The trainer trains it; restoring a run, timing,
    transfer and evaluation use it without the training loop."""

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
                    interrupts.check()  # a Ctrl-C that tf.data swallowed stops here
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
