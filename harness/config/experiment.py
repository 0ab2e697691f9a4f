"""An experiment: every spec a gin file binds, resolved and validated before anything is written."""

import dataclasses
from collections.abc import Sequence

from harness.config import gin_config
from harness.config.train_spec import MeshSpec, OptimizerSpec, TrainSpec
from harness.data.fewshot_datasets import FewShotSpec
from harness.data.spec import DataSpec, shaped_like_model
from harness.errors import UsageError, one_line
from models.specs import ModelSpec


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything gin decides, resolved and validated before any file is written."""

    model: ModelSpec
    train: TrainSpec
    mesh: MeshSpec
    optimizer: OptimizerSpec
    data: DataSpec
    # Read only when TrainSpec.fewshot_every_steps > 0; a default so that experiment.json files
    # from before it still load.
    fewshot: FewShotSpec = dataclasses.field(default_factory=FewShotSpec)

    @classmethod
    def from_gin(cls) -> "Experiment":
        model = ModelSpec()
        return cls(
            model=model,
            train=TrainSpec(),
            mesh=MeshSpec(),
            optimizer=OptimizerSpec(),
            # Synthetic data takes the shape the model expects unless gin says otherwise;
            # resolved here so experiment.json records the concrete values.
            data=shaped_like_model(DataSpec(), model),
            fewshot=FewShotSpec(),
        )


def parse_experiment(gin_files: Sequence[str], gin_params: Sequence[str]) -> tuple[str, Experiment]:
    """Parses the gin files and bindings and builds every spec: (config text, experiment).

    Every field's type and range is checked where its spec declares it, and nothing here
    imports JAX, praxis or TensorFlow, so a bad config is one line (UsageError) in well under a
    second, before any command loads its libraries.
    """
    config_text = gin_config.parse_gin(gin_files, gin_params)
    try:
        return config_text, Experiment.from_gin()
    except ValueError as error:
        # gin appends "In call to configurable ..." lines; the first line is the message.
        raise UsageError(one_line(str(error).splitlines()[0])) from error


def check_mesh_fits_model(spec: ModelSpec, mesh_shape: tuple[int, ...]) -> None:
    """The model's experts must split evenly over the expert axis (training, inspect)."""
    _, expert_axis, _ = mesh_shape
    if spec.is_sparse and spec.moe.num_experts % expert_axis:
        raise ValueError(
            f"MoeSpec.num_experts={spec.moe.num_experts} is not divisible by the expert mesh "
            f"axis ({expert_axis}); set the expert axis to a divisor of the expert count"
        )


def check_split_sizes(data: DataSpec, num_train: int, num_eval: int) -> None:
    """Both splits hold examples, and a train batch is no larger than its split (a larger
    one could never be filled, and an absurd one would hang allocating)."""
    if num_train < 1:
        raise ValueError(
            f"DataSpec.train_split={data.train_split!r} has no examples; give a split with "
            "some, e.g. 'train' or 'train[:10%]'"
        )
    if num_eval < 1:
        raise ValueError(
            f"DataSpec.eval_split={data.eval_split!r} has no examples; give a split with some, "
            "e.g. 'test' or 'test[:1000]'"
        )
    if data.batch_size > num_train:
        raise ValueError(
            f"DataSpec.batch_size={data.batch_size} exceeds the {num_train} examples of "
            f"DataSpec.train_split={data.train_split!r}; use a batch of at most {num_train}"
        )


def check_microbatches(experiment: Experiment, batch_devices: int) -> None:
    """Every micro-batch of gradient accumulation spans all batch devices with the same number
    of images (whole routing groups for sparse models), as a whole batch must."""
    microbatches, batch_size = experiment.train.microbatches, experiment.data.batch_size
    if microbatches == 1:
        return
    group = experiment.model.min_batch
    divisor = microbatches * batch_devices * group
    if batch_size % divisor:
        groups = f" x {group} images per routing group" if group > 1 else ""
        raise ValueError(
            f"DataSpec.batch_size={batch_size} does not split into TrainSpec.microbatches="
            f"{microbatches} x {batch_devices} data x expert devices{groups}; use a multiple "
            f"of {divisor} or fewer micro-batches"
        )


def validate(experiment: Experiment, device_count: int) -> tuple[int, int, int]:
    """Checks what can be checked without training; returns the mesh shape.

    Raises ValueError (one line: the value and the fix) on the first problem found.
    """
    mesh_shape = check_layout(experiment, device_count)
    check_data(experiment)
    return mesh_shape


def check_layout(experiment: Experiment, device_count: int) -> tuple[int, int, int]:
    """The mesh against the devices and the model, and the batches against the mesh; returns
    the mesh shape. Needs no dataset (no TensorFlow), so it runs before the data is read."""
    mesh_shape = experiment.mesh.resolve(device_count)
    spec = experiment.model
    check_mesh_fits_model(spec, mesh_shape)
    batch_devices = mesh_shape[0] * mesh_shape[1]
    for name in ("batch_size", "eval_batch_size"):
        size = getattr(experiment.data, name) or experiment.data.batch_size
        if size % batch_devices:
            raise ValueError(
                f"DataSpec.{name}={size} is not divisible by the {batch_devices} devices "
                f"of the data x expert mesh axes; use a multiple of {batch_devices}"
            )
        per_device = size // batch_devices
        if per_device % spec.min_batch:
            raise ValueError(
                f"DataSpec.{name}={size} gives {per_device} images per device, not a multiple "
                f"of MoeSpec.group_images={spec.moe.group_images}; use a multiple of "
                f"{batch_devices * spec.min_batch}"
            )
    check_microbatches(experiment, batch_devices)
    return mesh_shape


def check_data(experiment: Experiment) -> None:
    """The dataset's splits, image shape and classes against the specs (TFDS metadata)."""
    from harness.data import metadata  # tfds (a second): parsing gin alone stays lighter

    spec = experiment.model
    num_classes, image_shape, num_train, num_eval = metadata.dataset_info(experiment.data)
    check_split_sizes(experiment.data, num_train, num_eval)
    expected = (spec.vit.image_size, spec.vit.image_size, spec.vit.num_channels)
    if tuple(image_shape) != expected:
        raise ValueError(
            f"the data gives images of shape {tuple(image_shape)} but VitSpec expects "
            f"{expected}; set VitSpec.image_size/num_channels or DataSpec.image_size to agree"
        )
    if num_classes != spec.vit.num_classes:
        raise ValueError(
            f"the {what_is_trained(experiment.data)} has {num_classes} classes but VitSpec."
            f"num_classes={spec.vit.num_classes}; set VitSpec.num_classes={num_classes}"
        )


def what_is_trained(data: DataSpec) -> str:
    """'dataset', or 'DataSpec.classes subset' when training on some of its classes."""
    return "dataset" if data.classes is None else f"DataSpec.classes={data.classes} subset"
