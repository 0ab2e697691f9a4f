"""TFDS `fashion_mnist` prepared offline from the original IDX files that Debian ships.

Debian's package `dataset-fashion-mnist` installs the four gzipped IDX files of Zalando's release
under /usr/share/datasets/fashion-mnist/. `FashionMnistLocal` turns them into exactly the examples
of TFDS's own `fashion_mnist` builder (same features, splits, keys and therefore the same on-disk
order), with no network. Without the files it behaves like the standard builder and downloads.

Run `python -m harness.datasets.fashion_mnist_local [--data_dir=DIR]` to prepare it by hand.
"""

import argparse
import gzip
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist

DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"

# TFDS's MNIST family names its files like this; Zalando's release and Debian's package use the
# same names, which is what lets the IDX files stand in for the download.
_FILES = {
    "train_data": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_data": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_SPLIT_SIZES = {"train": 60_000, "test": 10_000}
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049  # IDX headers: ubyte data with 3 and 1 dimensions.


def idx_files_present(idx_dir: str = DEFAULT_IDX_DIR) -> bool:
    return all(os.path.isfile(os.path.join(idx_dir, name)) for name in _FILES.values())


def read_idx_images(path: str) -> np.ndarray:
    """Parses a gzipped IDX3 image file into uint8 [n, rows, cols, 1], checking its header."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != _IMAGE_MAGIC or len(raw) != 16 + count * rows * cols:
        raise ValueError(f"{path} is not an IDX3 ubyte image file (magic {magic}, {len(raw)} B)")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols, 1)


def read_idx_labels(path: str) -> np.ndarray:
    """Parses a gzipped IDX1 label file into int64 [n] (the dtype TFDS's MNIST builder yields)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count = np.frombuffer(raw[:8], dtype=">u4")
    if magic != _LABEL_MAGIC or len(raw) != 8 + count:
        raise ValueError(f"{path} is not an IDX1 ubyte label file (magic {magic}, {len(raw)} B)")
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)


# Registration: TFDS registers each builder class under its name and refuses a second
# `fashion_mnist`. This subclass opts out of the registry (`skip_registration=True`) but keeps
# `name = "fashion_mnist"`, so it writes <data_dir>/fashion_mnist/3.0.1/, the very directory that
# TFDS's own builder reads. Only where the bytes come from changes; info, features, version, split
# names and example keys are TFDS's. So one prepared copy serves this project and any plain
# `tfds.load("fashion_mnist")`, and a copy that TFDS prepared online is reused as it is. A distinct
# name (e.g. `fashion_mnist_local`) would fork identical data into a second directory that nothing
# else reads.
class FashionMnistLocal(mnist.FashionMNIST, skip_registration=True):
    """`fashion_mnist` built from local IDX files when present, else downloaded like TFDS's."""

    name = "fashion_mnist"

    # Where the IDX files are looked for; a class attribute rather than an __init__ argument because
    # TFDS rebuilds builders from their __init__ arguments (pickling) and this is not one of them.
    idx_dir: str = DEFAULT_IDX_DIR

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> Any:
        if not idx_files_present(self.idx_dir):
            return super()._split_generators(dl_manager)  # TFDS's download, needs the internet.
        paths = {key: os.path.join(self.idx_dir, name) for key, name in _FILES.items()}
        return [
            tfds.core.SplitGenerator(
                name=split,
                gen_kwargs=dict(
                    num_examples=num,
                    data_path=paths[f"{split}_data"],
                    label_path=paths[f"{split}_labels"],
                ),
            )
            for split, num in _SPLIT_SIZES.items()
        ]

    def _generate_examples(
        self, num_examples: int, data_path: str, label_path: str
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        if not data_path.endswith(".gz"):  # The download path: TFDS already gunzipped the files.
            yield from super()._generate_examples(num_examples, data_path, label_path)
            return
        # Read the .gz directly instead of via dl_manager.extract, which would leave 55 MB of
        # gunzipped copies under <data_dir>/downloads.
        images, labels = read_idx_images(data_path), read_idx_labels(label_path)
        if len(images) != num_examples or len(labels) != num_examples:
            raise ValueError(
                f"{data_path}: {len(images)} images and {len(labels)} labels, "
                f"expected {num_examples} of each"
            )
        # Key = index, as TFDS's builder does: TFDS orders examples on disk by a hash of the key,
        # so equal keys give the same on-disk order as the official copy.
        for index in range(num_examples):
            yield index, {"image": images[index], "label": labels[index]}


def prepare(data_dir: str | None = None, idx_dir: str | None = None) -> FashionMnistLocal:
    """Prepares `fashion_mnist` in `data_dir` (TFDS's default when None) if not already there."""
    builder = FashionMnistLocal(data_dir=data_dir)
    if idx_dir is not None:
        builder.idx_dir = idx_dir  # Instance attribute: leaves other builders on the default.
    if not builder.is_prepared():
        builder.download_and_prepare()
    return builder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
    parser.add_argument("--idx_dir", default=DEFAULT_IDX_DIR, help="where the IDX .gz files are")
    args = parser.parse_args()
    builder = prepare(args.data_dir, args.idx_dir)
    print(f"fashion_mnist ready at {builder.data_path}")


if __name__ == "__main__":
    main()
