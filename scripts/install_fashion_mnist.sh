#!/usr/bin/env bash
# Makes the embedded default dataset available offline: Debian's package
# `dataset-fashion-mnist` ships the original Fashion-MNIST IDX files, which the
# project's TFDS builder reads. Without it, training falls back to TFDS's own
# download, which needs the internet.
set -u
dir=/usr/share/datasets/fashion-mnist
[ -f "$dir/train-images-idx3-ubyte.gz" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian package dataset-fashion-mnist into $dir"
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null && exit 0
fi
echo "setup: warning: $dir is missing; install it with" \
  "'sudo apt-get install dataset-fashion-mnist' (training on Fashion-MNIST needs it offline)" >&2
exit 0
