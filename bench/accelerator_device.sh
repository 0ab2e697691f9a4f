#!/usr/bin/env bash
# bench/accelerator.sh on the GPU machine some sessions are lent: no network, and its own
# python3 (3.12) with jax 0.11.2 + the CUDA 13 plugin instead of the lock's jax 0.4.26, and no
# praxis, lingvo, fiddle, gin-config, clu or TensorFlow. So:
#   - the packages it lacks come as wheels (scripts/device_wheels.sh makes WHEELS/base and
#     WHEELS/fallback) and are installed with pip --no-index into SITE, first on PYTHONPATH;
#   - every script runs through bench/jax_compat.py (one import shim for praxis 1.4.0);
#   - part 1 (bench/train_step.py) is skipped: the trainer imports clu.metric_writers, which
#     imports TensorFlow, and its data is Fashion-MNIST through TFDS;
#   - JAX_THREEFRY_PARTITIONABLE=false: jax >= 0.5 defaults to the partitionable threefry, so
#     the router noise would come from another random stream than under the lock's jax; with
#     it, the MoE bench layers match jax 0.4.26 to 4e-7 on CPU (bench/jax_compat_check.py);
#   - a small smoke run first checks praxis on the image's flax/optax/chex; if that fails,
#     WHEELS/fallback (the versions tested on CPU) go first on PYTHONPATH and it runs again.
#
#   WHEELS=.whl bash bench/accelerator_device.sh    # from the repo root (a copy of it)
#
# Writes the markdown section to $OUT/accel.md (OUT: the device tool's output folder; else
# /tmp/accel_out), versions to $OUT/versions.txt and the parts' stderr to $OUT/stderr.log.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 JAX_THREEFRY_PARTITIONABLE=false
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-/tmp/accel_out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"

"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "$WHEELS"/base/*.whl || exit 1
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}

versions() {
  "$PYTHON" bench/jax_compat.py -c '
import importlib.metadata as m, platform, sys
import jax
names = ["jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "flax", "optax", "chex",
         "numpy", "praxis", "lingvo", "fiddle", "gin-config", "clu", "typeguard"]
found = []
for n in names:
    try:
        found.append(f"{n} {m.version(n)}")
    except m.PackageNotFoundError:
        pass
print(f"Python {platform.python_version()} ({sys.executable}); " + ", ".join(found))
print("jax devices:", jax.devices())
import flax, optax, praxis
print("imported from:", flax.__file__, optax.__file__, praxis.__file__, sep="\n  ")
'
  nvidia-smi -L 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
    --format=csv 2>&1
}

smoke() {  # tiny MoE layer run on the device: praxis GShard, our einsum and gather, dense
  timeout 75 "$PYTHON" bench/jax_compat.py bench/moe_layer.py --dims=64 --experts=4 --ks=2 \
    --tokens=1024 --group_size=512 --repeats=1
}

echo "== smoke run with the image's flax/optax/chex"
if ! smoke 2>>"$OUT/stderr.log"; then
  echo "== smoke run failed (stderr.log); retrying with $WHEELS/fallback"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE-fallback" "$WHEELS"/fallback/*.whl || exit 1
  export PYTHONPATH=$SITE-fallback:$PYTHONPATH
  smoke 2>>"$OUT/stderr.log" || {
    echo "== smoke run failed again; stderr.log's tail:"
    tail -n 40 "$OUT/stderr.log"
    exit 1
  }
fi
versions 2>&1 | tee "$OUT/versions.txt"
echo

PY="$PYTHON bench/jax_compat.py" PARTS=${PARTS:-models,moe} PART_SECONDS=${PART_SECONDS:-150} \
  bash bench/accelerator.sh 2>>"$OUT/stderr.log" | tee "$OUT/accel.md"
if grep -q "(failed with exit code" "$OUT/accel.md"; then
  echo
  echo "== stderr.log's tail:"
  tail -n 40 "$OUT/stderr.log"
fi
