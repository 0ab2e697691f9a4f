"""Which data a run directory read as data may make a command read.

experiment.json names the run's DataSpec, and readers (sweep, fewshot, the report's timing)
rebuild the run's trainer from it, which opens (and for Fashion-MNIST prepares, i.e. writes)
the named dataset in the named data_dir. A shared run directory is not the user's choice, so
it may name only a dataset the project knows without a network (a TFDS builder that ships with
TFDS or the project, or synthetic data), never a community namespace whose loader fetches
from the internet ('kubric:movi_a' reached gs://kubric-public, 'huggingface:x/y' the HF hub),
and its data_dir is used only when it is the user's: TFDS's default, or the command's
--data_dir, which replaces it (issue 26: DataSpec.data_dir='/etc' prepared Fashion-MNIST into
/etc).
"""

import dataclasses
import functools
import os

from harness.data.spec import DataSpec
from harness.data.synthetic_spec import SYNTHETIC
from harness.errors import UsageError


@functools.cache
def _local_builders() -> frozenset[str]:
    import tensorflow_datasets as tfds

    return frozenset(tfds.list_builders(with_community_datasets=False))


def default_data_dir() -> str:
    """TFDS's default data_dir ($TFDS_DATA_DIR, else ~/tensorflow_datasets)."""
    from tensorflow_datasets.core import constants

    return os.environ.get("TFDS_DATA_DIR") or constants.DATA_DIR


def _same_dir(a: str, b: str) -> bool:
    def norm(path: str) -> str:
        return os.path.realpath(os.path.expanduser(path.rstrip("/") or "/"))

    return norm(a) == norm(b)


def check_dataset(dataset: str, where: str) -> None:
    """Refuses (one line) a dataset name outside the local registry: a community namespace
    ('kubric:...', 'huggingface:...') or a name TFDS and the project do not define."""
    if dataset == SYNTHETIC:
        return
    from tensorflow_datasets.core import naming

    try:
        name, _ = naming.parse_builder_name_kwargs(dataset)
    except ValueError as error:
        raise UsageError(
            f"{where} names DataSpec.dataset={dataset!r}, which is not a dataset name"
        ) from error
    if name.namespace:
        raise UsageError(
            f"{where} names DataSpec.dataset={dataset!r}, a community dataset whose loader "
            "reaches the network; a run directory may name only datasets TFDS or the project "
            "define locally"
        )
    if name.name not in _local_builders():
        raise UsageError(
            f"{where} names DataSpec.dataset={dataset!r}, which neither TFDS nor the project "
            "defines; a run directory may name only registered datasets"
        )


def for_reading(data: DataSpec, where: str, user_data_dir: str | None = None) -> DataSpec:
    """`data` from a run directory's experiment.json (`where` names the file), as it may be
    read here: its dataset checked (check_dataset), its data_dir replaced by the user's
    `user_data_dir` (the command's --data_dir) when given, kept when it is TFDS's default, and
    refused otherwise with one line saying how to allow it."""
    check_dataset(data.dataset, where)
    if user_data_dir:
        return dataclasses.replace(data, data_dir=user_data_dir)
    recorded = data.data_dir
    if recorded is None or data.dataset == SYNTHETIC or _same_dir(recorded, default_data_dir()):
        return data
    raise UsageError(
        f"{where} names DataSpec.data_dir={recorded!r}, a data directory you did not give this "
        f"command; pass --data_dir={recorded} if you trust it, or --data_dir=DIR of another "
        f"directory holding {data.dataset}"
    )
