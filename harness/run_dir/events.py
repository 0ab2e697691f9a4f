"""Reads TensorBoard scalars back with tensorboard's own event reader (report, tests); the
reader and the rewrites below go through TensorFlow's file system, so a gs:// run reads too."""

import os
import sys
from collections.abc import Callable

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from harness import files, storage
from harness.run_dir import bounded

EVENT_FILE_PREFIX = "events.out.tfevents."
# Replaces 'tfevents' in the name of a damaged event file set aside.
DAMAGED_MARK = "damaged"


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} for every scalar in the event files under `logdir`; an
    event file that is not a regular file within its size limit is UnreadableFile."""
    bounded.check_event_files(logdir)
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


def discard_events(logdir: str, orphaned: Callable[[event_pb2.Event], bool]) -> int:
    """Rewrites the event files directly in `logdir` without the events `orphaned` picks, and
    without a last record cut short by a kill; returns how many events were dropped.

    A run killed after its last checkpoint has logged steps it will log again when it
    resumes; TensorBoard purges such orphans only for old-style event files, so without this
    it would show each of those steps twice. Each file is written to a temporary name and
    renamed over the old one, so a second kill in here leaves every file whole. A file that is
    damaged (a record fails its checksum: not something a kill does) is never rewritten: it is
    renamed aside, with a warning, and its records before the damage carry on in a new file.
    """
    import tensorflow as tf  # heavy; only resuming runs pay for it

    dropped = 0
    for name in sorted(storage.listdir(logdir)):
        path = storage.join(logdir, name)
        if not name.startswith(EVENT_FILE_PREFIX) or not storage.isfile(path):
            continue
        records, complete, damage = [], True, None
        try:
            records.extend(tf.data.TFRecordDataset(path).as_numpy_iterator())
        except tf.errors.DataLossError as error:
            complete = False
            # A kill cuts the last record short ("truncated record"); anything else is damage.
            if "truncated record" not in str(error):
                damage = error
        kept = [r for r in records if not orphaned(event_pb2.Event.FromString(r))]
        if complete and len(kept) == len(records):
            continue
        dropped += len(records) - len(kept)
        if damage is not None:
            set_aside(path, len(records))
        with files.replacing(path) as temporary, tf.io.TFRecordWriter(temporary) as writer:
            for record in kept:
                writer.write(record)
    return dropped


def set_aside(path: str, readable: int) -> str:
    """Renames a damaged event file to a name TensorBoard does not read (it reads any file
    with 'tfevents' in its name) and says so; returns the new path."""
    directory, name = os.path.split(path)
    aside = storage.join(directory, name.replace("tfevents", DAMAGED_MARK, 1))
    storage.rename(path, aside)
    print(
        f"warning: TensorBoard event file {path} is damaged after its first {readable} "
        f"records; kept it as {aside} and carried those {readable} records on",
        file=sys.stderr,
    )
    return aside
