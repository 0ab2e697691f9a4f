#!/usr/bin/env bash
# Downloads the wheels that bench/accelerator_device.sh installs on the lent GPU machine, which
# has no network and its own Python 3.12 with jax 0.11.2 + CUDA 13, flax, optax, chex, numpy,
# sympy, etils, absl-py, einops, opt-einsum, wrapt and typing-extensions, but none of the
# packages below. All are fetched --no-deps for CPython 3.12 on x86-64 manylinux.
#
#   bash scripts/device_wheels.sh [DIR]      # DIR defaults to .whl (git-excluded; carry it)
#
# DIR/base: what the bench scripts import and the image lacks (lock versions; lingvo 0.14.2
#   is the lock's too, used only for lingvo.core's NestedMap/HParams; its wheel is the bulk,
#   about 10 MB of the about 14 MB).
# DIR/fallback: flax, optax and chex as tested on CPU with jax 0.11.2 (bench/README.md), used
#   only if praxis fails with the image's own versions.
set -euo pipefail
dir=${1:-.whl}
PIP=${PIP:-python3 -m pip}
download() {  # download SUBDIR SPEC...
  local sub=$1
  shift
  mkdir -p "$dir/$sub"
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$dir/$sub" "$@"
}
download base praxis==1.4.0 lingvo==0.14.2 fiddle==0.3.0 gin-config==0.5.0 clu==0.0.11 \
  jax-bitempered-loss==0.0.2 typeguard==2.13.3 libcst==1.9.0 graphviz==0.21
download fallback flax==0.12.12 optax==0.2.8 chex==0.1.92
du -sh "$dir"
