"""Reads TensorBoard scalars back with tensorboard's own event reader (report, tests)."""

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} for every scalar in the event files under `logdir`."""
    accumulator = event_accumulator.EventAccumulator(
        logdir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0}
    )
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {
        tag: [(e.step, float(e.value)) for e in accumulator.Scalars(tag)]
        for tag in tags.get("scalars", [])
    }
    for tag in tags.get("tensors", []):
        events = accumulator.Tensors(tag)
        values = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in events]
        if all(v.ndim == 0 for _, v in values):
            scalars[tag] = [(step, float(v)) for step, v in values]
    return scalars


def image_tags(logdir: str) -> list[str]:
    """Tags of the image summaries (e.g. expert-by-class heatmaps) under `logdir`."""
    accumulator = event_accumulator.EventAccumulator(
        logdir, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return [
        tag
        for tag in accumulator.Tags().get("tensors", [])
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "images"
    ]
