"""The meshes the memory plan compiles the train step on, and how a batch splits over them.
No JAX here: harness.inspect asks for that many simulated CPU devices before JAX starts (XLA
reads the count once), and refuses a batch the mesh cannot split before the model code loads.
"""

import math
from collections.abc import Sequence

from models.specs import ModelSpec

# Under FSDP the step compiles at these data-axis sizes and the temporaries are fitted as
# fixed + split / data through both (harness/measure/step_temporaries.py).
FSDP_DATA_SIZES = (2, 4)


def compile_meshes(mesh: Sequence[int], shard_params_over_data: bool) -> list[tuple[int, int, int]]:
    """Without FSDP the data axis only replicates the step, so it compiles with data=1."""
    _, expert, model = mesh
    if shard_params_over_data and mesh[0] > 1:
        return [(data, expert, model) for data in FSDP_DATA_SIZES]
    return [(1, expert, model)]


def device_count(mesh: Sequence[int], shard_params_over_data: bool) -> int:
    """Simulated CPU devices the plan of `mesh` compiles on."""
    return max(math.prod(m) for m in compile_meshes(mesh, shard_params_over_data))


def check_batch(
    spec: ModelSpec, mesh: Sequence[int], global_batch: int, microbatches: int = 1
) -> int:
    """The per-device batch; ValueError (one line) if the mesh, or the micro-batches, cannot
    split the batch (as the trainer's harness.config.experiment.validate requires)."""
    devices = mesh[0] * mesh[1]
    if global_batch < 1 or global_batch % devices:
        raise ValueError(
            f"--batch={global_batch} does not split over the {devices} devices of the data x "
            f"expert mesh axes; use a multiple of {devices}"
        )
    per_device = global_batch // devices
    if per_device % spec.min_batch:
        raise ValueError(
            f"--batch={global_batch} gives {per_device} images per device, not a multiple of "
            f"MoeSpec.group_images={spec.min_batch}; use a multiple of {devices * spec.min_batch}"
        )
    if microbatches < 1:
        raise ValueError(f"TrainSpec.microbatches={microbatches} must be >= 1")
    if per_device % (microbatches * spec.min_batch):
        groups = f" of whole MoeSpec.group_images={spec.min_batch} groups" * (spec.min_batch > 1)
        raise ValueError(
            f"--batch={global_batch} gives {per_device} images per device, which do not split "
            f"into TrainSpec.microbatches={microbatches} equal micro-batches{groups}; use a "
            f"batch that is a multiple of {devices * microbatches * spec.min_batch} or fewer "
            "micro-batches"
        )
    return per_device
