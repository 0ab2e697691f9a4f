#!/usr/bin/env bash
# `make setup ACCEL=cuda12|tpu` runs this after the CPU lock is installed into the venv.
#
#   bash scripts/setup_accel.sh ACCEL VENV
#
# cuda12: installs requirements-cuda12.lock (the CPU lock plus jax-cuda12-plugin/-pjrt 0.4.26
#   and the nvidia CUDA 12.4 / cuDNN 8.9 wheels; see scripts/lock_cuda12.sh) with --no-deps,
#   and a start-up hook that keeps JAX on CPU, with one warning, where no GPU is visible.
# tpu: jax[tpu]==0.4.26 pins libtpu-nightly==0.1.dev20240403, which is not on PyPI: it is
#   served only by Google's libtpu release page. It is installed from there, and only on a
#   TPU VM (a Google PCI device, vendor 0x1ae0, as jax/_src/hardware_utils.py detects TPUs),
#   so nothing is half-installed elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
accel=${1:?usage: setup_accel.sh cuda12|tpu VENV}
venv=${2:?usage: setup_accel.sh cuda12|tpu VENV}
py="$venv/bin/python"
LIBTPU_PAGE=https://storage.googleapis.com/jax-releases/libtpu_releases.html

case "$accel" in
  cuda12)
    "$venv/bin/uv" pip install --python "$py" --no-deps -r requirements-cuda12.lock
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    cp scripts/jax_cpu_fallback.py "$site/_harness_jax_cpu_fallback.py"
    echo "import _harness_jax_cpu_fallback" >"$site/_harness_jax_cpu_fallback.pth"
    "$py" -c 'import jax; print("jax", jax.__version__, "devices:", jax.devices())'
    ;;
  tpu)
    echo "ACCEL=tpu: jax[tpu]==0.4.26 needs libtpu-nightly==0.1.dev20240403, which is not on"
    echo "PyPI; on a TPU VM it installs with"
    echo "  pip install 'jax[tpu]==0.4.26' -f $LIBTPU_PAGE"
    echo "and here as: uv pip install --no-deps libtpu-nightly==0.1.dev20240403 -f <that page>."
    if ! grep -qs 0x1ae0 /sys/bus/pci/devices/*/vendor; then
      echo "error: this is not a TPU VM (no Google TPU PCI device under /sys/bus/pci/devices);" \
        "nothing was installed beyond the CPU lock. Run make setup ACCEL=tpu on a TPU VM." >&2
      exit 2
    fi
    "$venv/bin/uv" pip install --python "$py" --no-deps -f "$LIBTPU_PAGE" \
      libtpu-nightly==0.1.dev20240403
    "$py" -c 'import jax; print("jax", jax.__version__, "devices:", jax.devices())'
    ;;
  *)
    echo "error: ACCEL=$accel is not known; use ACCEL=cuda12 or ACCEL=tpu (or none for CPU)" >&2
    exit 2
    ;;
esac
