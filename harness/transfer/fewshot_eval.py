"""Few-shot linear probes during training (TrainSpec.fewshot_every_steps > 0).

Every `fewshot_every_steps` steps and at the last step, the run's FewShotSpec is evaluated on the
pre-logits of the current weights (harness/transfer/features.py, inference mode), its summary is
written to TensorBoard as 'fewshot/<dataset>/<s>shot' (and '<tag>_std'), and the last step's
payload, with the structure of `python -m harness.fewshot`'s fewshot.json, goes into
results.json under "fewshot". Each dataset's images are read once and kept for the whole run;
only their features are recomputed.
"""

from typing import TYPE_CHECKING, Any

from harness.config.experiment import Experiment
from harness.data import metadata
from harness.data.fewshot_datasets import FEWSHOT_DATASETS
from harness.data.spec import DataSpec
from harness.errors import UsageError
from harness.runtime.evaluator import EvalOutput
from harness.transfer import features, fewshot

if TYPE_CHECKING:
    from harness.runtime.sharded_model import ShardedModel

RESULTS_KEY = "fewshot"  # results.json's section, read by the report like RUN_DIR/fewshot.json.


def check_datasets(experiment: Experiment) -> None:
    """Before training: every FewShotSpec dataset is prepared (the default ones are ImageNet-
    scale downloads). Raises UsageError naming the first that is not, and the fixes."""
    if not experiment.train.fewshot_every_steps:
        return
    spec = experiment.fewshot
    data_dir = spec.data_dir if spec.data_dir is not None else experiment.data.data_dir
    for name in spec.datasets:
        dataset = FEWSHOT_DATASETS[name]
        probe = DataSpec(
            dataset=dataset.tfds_name,
            data_dir=data_dir,
            train_split=dataset.train_split,
            eval_split=dataset.test_split,
        )
        try:
            metadata.dataset_info(probe)
        except metadata.DatasetNotFoundError as error:
            raise UsageError(
                f"FewShotSpec.datasets has {name!r}, which TrainSpec.fewshot_every_steps="
                f"{experiment.train.fewshot_every_steps} would probe, but {error}; or bind "
                "FewShotSpec.datasets to prepared ones (e.g. ('fashion_mnist_heldout',)), or set "
                "TrainSpec.fewshot_every_steps=0"
            ) from error


class PeriodicFewShot:
    """The few-shot evaluator (harness/runtime/evaluator.py's protocol)."""

    def __init__(self, model: "ShardedModel", command: str | None = None):
        experiment = model.experiment
        self.every_steps = experiment.train.fewshot_every_steps
        self.spec = experiment.fewshot
        self.weights = f"the training run in {model.workdir}"
        self.command = command
        self._source: features.ModelFeatures | None = None

    def __call__(self, model: "ShardedModel", params: Any, step: int) -> EvalOutput:
        """Probes `params` (the weights after `step`): the summary's scalars, and the
        fewshot.json-shaped payload as results.json's "fewshot"."""
        if self._source is None:
            self._source = features.ModelFeatures(model, params, self.spec.data_dir)
        else:
            self._source.set_params(params)
        payload, summary = features.evaluate_features(
            self.spec, self._source, self.weights, step, self.command
        )
        print(f"few-shot at step {step}:\n{fewshot.format_table(summary)}", flush=True)
        return EvalOutput(fewshot.summary_scalars(summary), {RESULTS_KEY: payload})


def periodic(model: "ShardedModel", command: str | None = None, **_: Any) -> PeriodicFewShot | None:
    """The evaluator a run's TrainSpec asks for, or None when fewshot_every_steps is 0."""
    if not model.experiment.train.fewshot_every_steps:
        return None
    check_datasets(model.experiment)
    return PeriodicFewShot(model, command)
