"""Pre-logits features of a model's weights: the `FeatureSource` the few-shot probe reads.

The weights are a restored run's (`python -m harness.fewshot`) or the live parameters of a
training run (harness/transfer/fewshot_eval.py); both go through `ModelFeatures`.

The representation is the input of the classifier head (`head` of models/vit.py's
VisionTransformerClassifier): the pooled, final-normed token, after the Dense+tanh
`pre_logits_layer` where the model has one. It is read by intercepting the head's call with
flax's `intercept_methods` inside `harness.runtime.steps.apply_model(..., rng=None)`, so the
forward pass is the evaluator's own: inference mode, no dropout, no router noise, the run's
eval-time routing. models/ is untouched.

Images come through `harness.data.pipeline.eval_batches` (file order, padded to full batches,
padding dropped by its mask), with the run's DataSpec pointed at the dataset and split and its
images resized to the model's input side. A dataset with a class subset is read with that
subset as DataSpec.classes, so the images of other classes are never decoded or embedded; their
labels are mapped back to the dataset's own, and the probe's `filter_classes` relabels them as
it would the whole split.
"""

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from harness.data import metadata, pipeline
from harness.data.fewshot_datasets import FEWSHOT_DATASETS, FewShotDataset, FewShotSpec, setting
from harness.data.spec import DataSpec
from harness.errors import UsageError
from harness.runtime.restore import TrainedRun
from harness.runtime.steps import apply_model
from harness.transfer import fewshot, fewshot_suite

if TYPE_CHECKING:  # the type only: importing it loads the model stack
    from harness.runtime.sharded_model import ShardedModel

HEAD = "head"  # The classifier head's name in VisionTransformerClassifier.
# A split's preprocessed float32 images are kept between evaluations up to this size (all of
# Fashion-MNIST's train split is 188 MB); larger splits are read again for each evaluation.
IMAGE_CACHE_BYTES = 2**30


def pre_logits(model: Any, params: Any, images: jax.Array) -> jax.Array:
    """[B, D] float32 input of the model's top-level `head` layer, in inference mode."""
    captured: list[jax.Array] = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (
            context.method_name == "__call__"
            and module.scope is not None
            and tuple(module.scope.path) == (HEAD,)
        ):
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        apply_model(model, params, images, rng=None)
    if len(captured) != 1:
        raise ValueError(
            f"the model called a top-level '{HEAD}' layer {len(captured)} times; pre-logits "
            "features need a VisionTransformerClassifier-style model with one head"
        )
    return captured[0].astype(jnp.float32)


class ModelFeatures:
    """Pre-logits of a Trainer's model with `params`, for any prepared TFDS dataset.

    Implements harness.transfer.fewshot_suite.FeatureSource. The images of a (dataset, split)
    are read once and kept, and its features are computed once per set of weights, so the
    train split of a dataset is embedded once for all seeds, and a training run's periodic
    evaluation re-embeds cached images after `set_params` rather than re-reading them.
    """

    def __init__(self, sharded: "ShardedModel", params: Any, data_dir: str | None = None):
        self.sharded = sharded
        self.params = params
        self.data = sharded.experiment.data
        self.data_dir = data_dir if data_dir is not None else self.data.data_dir
        self.image_shape = tuple(sharded.image_shape)
        replicated = NamedSharding(sharded.mesh, PartitionSpec())
        model = sharded.model

        def extract(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
            return {
                "features": pre_logits(model, params, batch["image"]),
                "label": batch["label"],
                "mask": batch["mask"],
            }

        # Replicated outputs: every process gets every example's features, multi-host included.
        self._extract = jax.jit(
            extract,
            in_shardings=(sharded.state_shardings.params, sharded.eval_batch_shardings),
            out_shardings=replicated,
        )
        # Keyed by (TFDS name, split, classes).
        self._images: dict[tuple[Any, ...], list[dict[str, np.ndarray]]] = {}
        self._features: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}

    def set_params(self, params: Any) -> None:
        """New weights: features are recomputed on next use, from the cached images."""
        self.params = params
        self._features.clear()

    def data_spec(self, dataset: FewShotDataset, split: str) -> DataSpec:
        """The run's DataSpec reading `split` of `dataset` at the model's input size."""
        height, width, _ = self.image_shape
        if height != width:
            raise UsageError(f"the model's input is {height}x{width}; few-shot needs square images")
        return dataclasses.replace(
            self.data,
            dataset=dataset.tfds_name,
            data_dir=self.data_dir,
            train_split=dataset.train_split,
            eval_split=split,
            image_size=height,
            # The probe's classes, not the run's: a run trained on a subset probes the others.
            classes=dataset.classes,
        )

    def info(self, dataset: FewShotDataset) -> metadata.DataInfo:
        info = metadata.dataset_info(self.data_spec(dataset, dataset.test_split))
        if tuple(info.image_shape) != self.image_shape:
            raise UsageError(
                f"{dataset.tfds_name} gives {info.image_shape} images but the run's model takes "
                f"{self.image_shape}; few-shot needs a dataset with the run's channel count"
            )
        return info

    def num_classes(self, dataset: FewShotDataset) -> int:
        return self.info(dataset).num_classes

    def features(self, dataset: FewShotDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        key = (dataset.tfds_name, split, dataset.classes)
        if key not in self._features:
            features, labels = self._compute(self._batches(key, dataset, split), dataset, split)
            if dataset.classes is not None:  # Back to the dataset's own label numbers.
                labels = np.asarray(dataset.classes, np.int64)[labels]
            self._features[key] = features, labels
        return self._features[key]

    def _batches(
        self, key: tuple[Any, ...], dataset: FewShotDataset, split: str
    ) -> Iterable[dict[str, np.ndarray]]:
        """The split's eval batches: kept from an earlier call, or read (and kept if small)."""
        if key in self._images:
            return self._images[key]
        self.info(dataset)  # Image-shape check, one line, before reading anything.
        spec = self.data_spec(dataset, split)
        shard = (self.sharded.input_shard.index, self.sharded.input_shard.count)
        batches = pipeline.eval_batches(spec, *shard)
        info = metadata.dataset_info(spec)
        if info.num_eval_examples * np.prod(info.image_shape) * 4 > IMAGE_CACHE_BYTES:
            return batches  # Too large to keep (ImageNet's shot pool): read it each time.
        self._images[key] = list(batches)
        return self._images[key]

    def _compute(
        self, batches: Iterable[dict[str, np.ndarray]], dataset: FewShotDataset, split: str
    ) -> tuple[np.ndarray, np.ndarray]:
        sharded = self.sharded
        features, labels = [], []
        with sharded.mesh:
            for local in batches:
                batch = sharded.global_batch(local, sharded.eval_batch_shardings)
                out = jax.device_get(self._extract(self.params, batch))
                keep = np.asarray(out["mask"]) > 0
                features.append(np.asarray(out["features"])[keep])
                labels.append(np.asarray(out["label"])[keep].astype(np.int64))
        if not features:
            raise UsageError(f"{dataset.tfds_name} split {split!r} has no examples")
        return np.concatenate(features), np.concatenate(labels)


def evaluate_run(
    run: TrainedRun, spec: FewShotSpec, command: str
) -> tuple[dict[str, Any], dict[str, fewshot.FewShotSummary]]:
    """Runs `spec` on a restored run's pre-logits; returns the fewshot.json payload and the
    summary (see `evaluate_features`)."""
    source = ModelFeatures(run.sharded, run.params, spec.data_dir)
    return evaluate_features(spec, source, run.run_dir, run.step, command)


def evaluate_features(
    spec: FewShotSpec,
    source: ModelFeatures,
    weights: str,
    step: int,
    command: str | None,
) -> tuple[dict[str, Any], dict[str, fewshot.FewShotSummary]]:
    """Runs `spec` on `source`'s features; returns the fewshot.json payload and the summary.

    The payload holds every (dataset, shots, seed, l2) result, the summary (mean and sample std
    over seeds per dataset and shot count, under its TensorBoard tag), the method (protocol,
    checkpoint step, each dataset's splits, class count and in-domain/transfer setting) and,
    unless None, the command. `weights` names where the weights come from (the run directory).
    """
    results = fewshot_suite.evaluate_spec(spec, source)
    summary = fewshot.summarize(results)
    trained_on = source.data.dataset
    trained_classes = source.data.classes
    datasets = {}
    settings = {}
    for name in spec.datasets:
        dataset = FEWSHOT_DATASETS[name]
        kind, line = setting(name, trained_on, trained_classes)
        settings[name] = line
        datasets[name] = {
            "tfds_name": dataset.tfds_name,
            "train_split": dataset.train_split,
            "test_split": dataset.test_split,
            "classes": list(dataset.classes) if dataset.classes is not None else None,
            "setting": kind,
        }
    l2_choice = (
        "the only l2"
        if len(spec.l2_regs) == 1
        else "per shot count, the l2 of best mean rank over all datasets and seeds (V-MoE)"
    )
    description = (
        f"few-shot linear probe on frozen pre-logits of {weights} at step {step} "
        f"(inference mode: no dropout, no router noise): closed-form ridge regression on s "
        f"examples per class drawn per seed from the train split, top-1 on the whole test "
        f"split; mean ± sample std over {len(spec.seeds)} seed(s); l2: {l2_choice}"
    )
    method = {
        "description": description,
        "features": "pre-logits (input of the classifier head), inference mode",
        "step": step,
        "trained_on": trained_on,
        "trained_classes": list(trained_classes) if trained_classes is not None else None,
        "shots": list(spec.shots),
        "seeds": list(spec.seeds),
        "l2_regs": list(spec.l2_regs),
        "l2_selection": l2_choice,
        "datasets": datasets,
        "settings": settings,
    }
    payload: dict[str, Any] = {} if command is None else {"command": command}
    payload.update(
        {
            "method": method,
            "results": [dataclasses.asdict(r) for r in results],
            "summary": {tag: dataclasses.asdict(row) for tag, row in summary.items()},
        }
    )
    return payload, summary
