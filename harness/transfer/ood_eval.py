"""OOD test sets and shape bias of a run's model: the logits come from the run, the scoring
from harness/transfer/ood.py and shape_bias.py.

Each set is read from TFDS through `harness.data.pipeline.eval_batches` with the run's DataSpec
pointed at the set's dataset and split, so its images get the run's eval preprocessing (central
87.5% crop of variable-size images, resized to the model's input side). Logits are the model's
in inference mode (no dropout, no router noise, the run's eval-time routing). Labels stay on the
host: ReaL's label lists differ in length per image, and scoring is numpy.

`check_ready` runs before any work (training included) and fails in one line: a model that is not
a 1000-class ImageNet classifier, a set that is not prepared, images the model cannot take.
"""

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from harness.data import metadata, pipeline
from harness.data.eval_datasets import SHAPE_BIAS
from harness.data.spec import DataSpec
from harness.errors import UsageError, one_line
from harness.runtime.evaluator import EvalOutput
from harness.runtime.steps import apply_model
from harness.transfer import ood, shape_bias

if TYPE_CHECKING:  # the type only: importing it loads the model stack
    from harness.runtime.sharded_model import ShardedModel


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Where an eval-datasets name lives in TFDS and which label features it is scored by."""

    tfds_name: str
    split: str
    label_keys: tuple[str, ...]
    # A single-class label feature, for the metadata check of `check_ready` (ReaL's own labels
    # are lists; its 'original_label' is the plain ImageNet one).
    class_key: str


def eval_set(name: str) -> EvalSet:
    if name == SHAPE_BIAS:
        keys = (shape_bias.SHAPE_LABEL_KEY, shape_bias.TEXTURE_LABEL_KEY)
        return EvalSet(shape_bias.TFDS_NAME, shape_bias.TFDS_SPLIT, keys, keys[0])
    spec = ood.OOD_DATASETS[name]
    class_key = "original_label" if spec.multi_label else spec.label_key
    return EvalSet(spec.tfds_name, spec.split, (spec.label_key,), class_key)


def data_spec(data: DataSpec, image_shape: Sequence[int], name: str) -> DataSpec:
    """The run's DataSpec reading set `name` at the model's input side."""
    where = eval_set(name)
    return dataclasses.replace(
        data,
        dataset=where.tfds_name,
        # These sets have one split; pointing train_split at it only satisfies dataset_info.
        train_split=where.split,
        eval_split=where.split,
        label_key=where.class_key,
        image_size=image_shape[0],
    )


def check_ready(sharded: "ShardedModel", names: Sequence[str]) -> None:
    """Raises UsageError (one line naming the set and the fix) unless every set can be evaluated
    with the sharded's model: 1000 ImageNet classes, the set prepared, images the model takes."""
    if not names:
        return
    num_classes = sharded.experiment.model.vit.num_classes
    if num_classes != ood.NUM_IMAGENET_CLASSES:
        raise UsageError(
            f"eval dataset {names[0]!r} needs a 1000-class ImageNet model but this one has "
            f"VitSpec.num_classes={num_classes}; evaluate an ImageNet-1k model, or drop it from "
            "--eval_datasets / TrainSpec.eval_datasets"
        )
    for name in names:
        spec = data_spec(sharded.experiment.data, sharded.image_shape, name)
        try:
            info = metadata.dataset_info(spec)
        except UsageError as error:  # Not prepared (says how to prepare it), or no such split.
            raise UsageError(f"eval dataset {name!r}: {one_line(error)}") from error
        if tuple(info.image_shape) != tuple(sharded.image_shape):
            raise UsageError(
                f"eval dataset {name!r} gives {info.image_shape} images but the model takes "
                f"{tuple(sharded.image_shape)}; it needs a model of RGB images"
            )


def evaluate(sharded: "ShardedModel", params: Any, names: Sequence[str]) -> dict[str, Any]:
    """results.json's 'ood' ({name: top1, correct, counted, tfds_name, split}) and 'shape_bias'
    ({shape_bias, shape_hits, texture_hits, conflict_images}) sections, for the sets in `names`
    (a section is absent when no name belongs to it)."""
    logits_of = _logits_function(sharded)
    shards = sharded.input_shard.count
    results: dict[str, Any] = {}
    for name in names:
        where = eval_set(name)
        spec = data_spec(sharded.experiment.data, sharded.image_shape, name)
        if name == SHAPE_BIAS:
            counts = shape_bias.ShapeBiasCounts(0, 0, 0)
            for logits, labels in _logits_and_labels(sharded, params, logits_of, spec, where):
                counts += shape_bias.shape_bias_from_logits(
                    logits, labels[shape_bias.SHAPE_LABEL_KEY], labels[shape_bias.TEXTURE_LABEL_KEY]
                )
            counts = shape_bias.ShapeBiasCounts(
                *_sum_over_processes(dataclasses.astuple(counts), shards)
            )
            results[SHAPE_BIAS] = {"shape_bias": counts.shape_bias, **dataclasses.asdict(counts)}
            continue
        correct = counted = 0
        for logits, labels in _logits_and_labels(sharded, params, logits_of, spec, where):
            hits, seen = ood.score(name, logits, labels[where.label_keys[0]])
            correct, counted = correct + hits, counted + seen
        correct, counted = _sum_over_processes((correct, counted), shards)
        results.setdefault("ood", {})[name] = {
            "top1": correct / counted if counted else float("nan"),
            "correct": correct,
            "counted": counted,
            "tfds_name": where.tfds_name,
            "split": where.split,
        }
    return results


class OodEvaluator:
    """The OOD sets and shape bias as an evaluator (harness/runtime/evaluator.py), after the
    last step only."""

    every_steps = 0

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)

    def __call__(self, model: "ShardedModel", params: Any, step: int) -> EvalOutput:
        results = evaluate(model, params, self.names)
        return EvalOutput(scalars(results), results)


def at_end(model: "ShardedModel", **_: Any) -> OodEvaluator | None:
    """The evaluator of TrainSpec.eval_datasets, checked ready; None when it names none."""
    names = model.experiment.train.eval_datasets
    if not names:
        return None
    check_ready(model, names)
    return OodEvaluator(names)


def scalars(results: dict[str, Any]) -> dict[str, float]:
    """TensorBoard scalars of `evaluate`'s results: 'ood/<name>/top1' and 'shape_bias'."""
    out = {f"ood/{name}/top1": row["top1"] for name, row in results.get("ood", {}).items()}
    if SHAPE_BIAS in results:
        out[SHAPE_BIAS] = results[SHAPE_BIAS]["shape_bias"]
    return out


def _logits_function(sharded: "ShardedModel") -> Any:
    model = sharded.model
    replicated = NamedSharding(sharded.mesh, PartitionSpec())

    def logits(params: Any, images: jax.Array) -> jax.Array:
        return apply_model(model, params, images, rng=None)[0].astype(jnp.float32)

    return jax.jit(
        logits,
        in_shardings=(sharded.state_shardings.params, sharded.eval_batch_shardings["image"]),
        out_shardings=replicated,
    )


def _logits_and_labels(
    sharded: "ShardedModel", params: Any, logits_of: Any, spec: DataSpec, where: EvalSet
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """This process's (logits, labels) per batch, padding examples dropped."""
    shard = sharded.input_shard
    image_sharding = {"image": sharded.eval_batch_shardings["image"]}
    with sharded.mesh:
        for local in pipeline.eval_batches(
            spec, shard.index, shard.count, label_keys=where.label_keys
        ):
            images = sharded.global_batch({"image": local["image"]}, image_sharding)["image"]
            # Every process gets every row's logits; it keeps its own rows, which line up with
            # its labels (processes along 'model' hold the same rows: see batch_layout).
            logits = np.asarray(jax.device_get(logits_of(params, images)))
            logits = logits[shard.rows(len(logits))]
            keep = local["mask"] > 0
            yield logits[keep], {key: local[key][keep] for key in where.label_keys}


def _sum_over_processes(counts: Sequence[int], shard_count: int) -> tuple[int, ...]:
    """Totals over the input shards: processes reading the same shard scored the same rows,
    so the sum over processes counts each shard process_count / shard_count times."""
    if jax.process_count() == 1:
        return tuple(int(c) for c in counts)
    gathered = multihost_utils.process_allgather(np.asarray(counts, np.int64))
    totals = np.asarray(gathered).reshape(-1, len(counts)).sum(axis=0)
    return tuple(int(c) * shard_count // jax.process_count() for c in totals)
