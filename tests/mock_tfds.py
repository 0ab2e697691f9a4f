"""Prepared-looking TFDS datasets without data, for `tfds.testing.mock_data`.

mock_data generates examples from a dataset's metadata, but the pipeline first asks the builder
whether it is prepared and how large each split is. `write_metadata` writes just that metadata.
"""

from collections.abc import Mapping

import tensorflow_datasets as tfds


def write_metadata(root: str, name: str, split_sizes: Mapping[str, int]) -> None:
    """Writes TFDS dataset `name`'s metadata under `root` with these splits and sizes."""
    with tfds.testing.mock_data(data_dir=root):
        builder = tfds.builder(name)
        infos = [
            tfds.core.SplitInfo(
                name=split,
                shard_lengths=[size],
                num_bytes=0,
                filename_template=tfds.core.ShardedFileTemplate(
                    data_dir=builder.data_path, dataset_name=name, split=split
                ),
            )
            for split, size in split_sizes.items()
        ]
        builder.info.set_splits(tfds.core.SplitDict(infos))
        builder.data_path.mkdir(parents=True)
        builder.info.write_to_directory(builder.data_path)
