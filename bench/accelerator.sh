#!/usr/bin/env bash
# The benchmarks to run whenever a GPU or TPU machine is at hand (no test depends on them).
#
#   bash bench/accelerator.sh > /tmp/accel.md      # from the repo root, after make setup ACCEL=...
#
# Prints markdown to append to bench/README.md: date and device, then
#   1. train step and images/s of each CPU config (bench/train_step.py, its own tiny models on
#      Fashion-MNIST; needs `make setup`'s dataset),
#   2. ViT-B/16 and V-MoE-B/16 at 4 layers, batch 64, random images, bf16
#      (bench/accelerator_models.py; gin/data has no synthetic dataset, so it makes its own),
#   3. the MoE layer against the dense MLP and praxis GShard (bench/moe_layer.py) at D=768.
# Each part has its own time limit, so the whole stays under 8 minutes; a part that runs out
# of time or fails says so in the output and the next one still runs.
#
# PY may be a command with arguments (split on spaces), e.g. PY="python3 bench/jax_compat.py"
# on a machine with its own newer jax (bench/accelerator_device.sh). PARTS picks parts by name
# (train, models, moe; default all); a part left out is listed as skipped. MODELS_ARGS and
# MOE_ARGS replace the arguments of parts 2 and 3 (for a quick check of this script on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
read -ra PY <<<"${PY:-.venv/bin/python}"
PARTS=",${PARTS:-train,models,moe},"
export PYTHONUNBUFFERED=1  # a part stopped by its time limit still shows its finished rows
LIMIT=${PART_SECONDS:-140}  # per part; 3 parts + start-up stay under 8 minutes
read -ra MODELS_ARGS <<<"${MODELS_ARGS:---layers=4 --batch=64 --steps=10}"
read -ra MOE_ARGS <<<"${MOE_ARGS:---dims=768 --experts=8,32 --ks=1,2 --repeats=5}"

part() {  # part NAME TITLE SECONDS COMMAND...: a markdown section, command above its table
  local name=$1 title=$2 seconds=$3
  shift 3
  if [[ $PARTS != *",$name,"* ]]; then
    echo
    echo "### $title"
    echo
    echo "(skipped: PARTS=${PARTS:1:-1})"
    return
  fi
  echo
  echo "### $title"
  echo
  echo "\`\`\`sh"
  echo "$*"
  echo "\`\`\`"
  echo
  timeout "$seconds" "$@"
  local rc=$?
  if [[ $rc -eq 124 ]]; then
    echo
    echo "(stopped after $seconds s; rows above are complete)"
  elif [[ $rc -ne 0 ]]; then
    echo
    echo "(failed with exit code $rc; see stderr)"
  fi
}

echo "## Accelerator run, $(date +%F)"
echo
"${PY[@]}" -c '
import jax, platform
d = jax.devices()[0]
print(f"Device: {d.device_kind} ({d.platform}), {jax.device_count()} device(s), "
      f"host {platform.machine()}, jax {jax.__version__}.")
'
part train "Train step per CPU config" "$LIMIT" "${PY[@]}" bench/train_step.py --steps=20
part models "ViT-B/16 and V-MoE-B/16, 4 layers, random images, bf16" "$LIMIT" \
  "${PY[@]}" bench/accelerator_models.py "${MODELS_ARGS[@]}"
part moe "MoE layer vs dense MLP vs GShard" "$LIMIT" \
  "${PY[@]}" bench/moe_layer.py "${MOE_ARGS[@]}"
