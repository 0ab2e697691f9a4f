"""Pre-logits features of a restored run: the `FeatureSource` the few-shot probe reads.

The representation is the input of the classifier head (`head` of models/vit.py's
VisionTransformerClassifier): the pooled, final-normed token, after the Dense+tanh
`pre_logits_layer` where the model has one. It is read by intercepting the head's call with
flax's `intercept_methods` inside `harness.train.steps.apply_model(..., rng=None)`, so the
forward pass is the evaluator's own: inference mode, no dropout, no router noise, the run's
eval-time routing. models/ is untouched.

Images come through `harness.data.pipeline.eval_batches` (file order, padded to full batches,
padding dropped by its mask), with the run's DataSpec pointed at the dataset and split and its
images resized to the model's input side.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from harness.data import pipeline
from harness.data.spec import DataSpec
from harness.errors import UsageError
from harness.train.restore import TrainedRun
from harness.train.steps import apply_model
from harness.transfer import fewshot, fewshot_suite
from harness.transfer.fewshot_datasets import (
    FEWSHOT_DATASETS,
    FewShotDataset,
    FewShotSpec,
    setting,
)

HEAD = "head"  # The classifier head's name in VisionTransformerClassifier.


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


class RunFeatures:
    """Pre-logits features of a trained run's latest weights, for any prepared TFDS dataset.

    Implements harness.transfer.fewshot_suite.FeatureSource. Features of a (dataset, split)
    are computed once and cached, so the train split of a dataset is read once for all seeds.
    """

    def __init__(self, run: TrainedRun, data_dir: str | None = None):
        self.run = run
        trainer = run.trainer
        self.data = trainer.experiment.data
        self.data_dir = data_dir if data_dir is not None else self.data.data_dir
        self.image_shape = tuple(trainer.image_shape)
        replicated = NamedSharding(trainer.mesh, PartitionSpec())
        model = trainer.model

        def extract(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
            return {
                "features": pre_logits(model, params, batch["image"]),
                "label": batch["label"],
                "mask": batch["mask"],
            }

        # Replicated outputs: every process gets every example's features, multi-host included.
        self._extract = jax.jit(
            extract,
            in_shardings=(trainer.state_shardings.params, trainer.eval_batch_shardings),
            out_shardings=replicated,
        )
        self._cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

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
        )

    def info(self, dataset: FewShotDataset) -> pipeline.DataInfo:
        info = pipeline.dataset_info(self.data_spec(dataset, dataset.test_split))
        if tuple(info.image_shape) != self.image_shape:
            raise UsageError(
                f"{dataset.tfds_name} gives {info.image_shape} images but the run's model takes "
                f"{self.image_shape}; few-shot needs a dataset with the run's channel count"
            )
        return info

    def num_classes(self, dataset: FewShotDataset) -> int:
        return self.info(dataset).num_classes

    def features(self, dataset: FewShotDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        key = (dataset.tfds_name, split)
        if key not in self._cache:
            self.info(dataset)  # Image-shape check, one line, before reading anything.
            self._cache[key] = self._compute(self.data_spec(dataset, split))
        return self._cache[key]

    def _compute(self, spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
        trainer = self.run.trainer
        shard = (trainer.input_shard.index, trainer.input_shard.count)
        features, labels = [], []
        with trainer.mesh:
            for local in pipeline.eval_batches(spec, *shard):
                batch = trainer.global_batch(local, trainer.eval_batch_shardings)
                out = jax.device_get(self._extract(self.run.params, batch))
                keep = np.asarray(out["mask"]) > 0
                features.append(np.asarray(out["features"])[keep])
                labels.append(np.asarray(out["label"])[keep].astype(np.int64))
        if not features:
            raise UsageError(f"{spec.dataset} split {spec.eval_split!r} has no examples")
        return np.concatenate(features), np.concatenate(labels)


def evaluate_run(
    run: TrainedRun, spec: FewShotSpec, command: str
) -> tuple[dict[str, Any], dict[str, fewshot.FewShotSummary]]:
    """Runs `spec` on the run's pre-logits; returns the fewshot.json payload and the summary.

    The payload holds every (dataset, shots, seed, l2) result, the summary (mean and sample std
    over seeds per dataset and shot count, under its TensorBoard tag), the method (protocol,
    checkpoint step, each dataset's splits, class count and in-domain/transfer setting) and the
    command.
    """
    source = RunFeatures(run, spec.data_dir)
    results = fewshot_suite.evaluate_spec(spec, source)
    summary = fewshot.summarize(results)
    trained_on = run.trainer.experiment.data.dataset
    datasets = {}
    settings = {}
    for name in spec.datasets:
        dataset = FEWSHOT_DATASETS[name]
        kind, line = setting(name, trained_on)
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
        f"few-shot linear probe on frozen pre-logits of {run.run_dir} at step {run.step} "
        f"(inference mode: no dropout, no router noise): closed-form ridge regression on s "
        f"examples per class drawn per seed from the train split, top-1 on the whole test "
        f"split; mean ± sample std over {len(spec.seeds)} seed(s); l2: {l2_choice}"
    )
    method = {
        "description": description,
        "features": "pre-logits (input of the classifier head), inference mode",
        "step": run.step,
        "trained_on": trained_on,
        "shots": list(spec.shots),
        "seeds": list(spec.seeds),
        "l2_regs": list(spec.l2_regs),
        "l2_selection": l2_choice,
        "datasets": datasets,
        "settings": settings,
    }
    payload = {
        "command": command,
        "method": method,
        "results": [dataclasses.asdict(r) for r in results],
        "summary": {tag: dataclasses.asdict(row) for tag, row in summary.items()},
    }
    return payload, summary
