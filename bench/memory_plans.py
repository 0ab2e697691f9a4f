r"""Per-device training memory of every paper config on its reference mesh, and the smallest
mesh (data axis grown, expert and model axes kept) whose devices each hold it on a TPU v3 core.

  .venv/bin/python bench/memory_plans.py [--configs=NAME,...] [-o bench/memory_plans.md]

NAME is a gin/NAME.gin of harness.project.PAPER_CONFIGS (default: all). Prints markdown (or
writes it with -o). The plan of each row is `python -m harness.inspect --gin_file=F
--mesh=D,E,M --batch=B` (harness/measure/memory_plan.py says how each part is obtained), at
the global batch of the gin file. The smaller meshes re-use the reference plan: weights and
Adam state do not change with the data axis, and the batch and activations are scaled in
proportion to the per-device batch, so no extra compile is needed.
"""

import argparse
import os
import sys
import time

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The largest expert x model product below; XLA reads it once, before JAX starts.
COMPILE_DEVICES = 32
os.environ["XLA_FLAGS"] = (
    f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={COMPILE_DEVICES}"
).strip()

import gin  # noqa: E402

from harness import gin_config  # noqa: E402
from harness.project import PAPER_CONFIGS, REPO_ROOT  # noqa: E402

# Reference meshes (data, expert, model). The papers report TPU core-days, not meshes, so only
# the V-MoE-H/14 one is the paper's (experts one per core over 32 cores, 256 TPUv3 cores); the
# others are assumptions in the same spirit, marked "assumed": 256 TPUv3 cores, experts over at
# most 32 of them, and ViT-22B on 1024 chips with its weights split 16 ways.
REFERENCE_MESHES: dict[str, tuple[tuple[int, int, int], str]] = {
    "vit_b16": ((256, 1, 1), "assumed"),
    "vit_l16": ((256, 1, 1), "assumed"),
    "vit_h14": ((256, 1, 1), "assumed"),
    "vmoe_s32": ((8, 32, 1), "assumed"),
    "vmoe_b16": ((8, 32, 1), "assumed"),
    "vmoe_l16": ((8, 32, 1), "assumed"),
    "vmoe_h14": ((8, 32, 1), "V-MoE paper"),
    "vmoe_h14_last5": ((8, 32, 1), "assumed"),
    "vmoe_15b": ((8, 32, 1), "assumed"),
    "widenet_b": ((64, 4, 1), "assumed"),
    "widenet_l": ((64, 4, 1), "assumed"),
    "widenet_h": ((64, 4, 1), "assumed"),
    "vit22b": ((64, 1, 16), "assumed"),
    "softmoe_b16": ((8, 32, 1), "assumed"),
    "softmoe_l16": ((8, 32, 1), "assumed"),
}
TARGET_CHIP = "TPU v3 core"


def plan_config(name: str):
    """The reference-mesh plan of gin/NAME.gin, and its global batch."""
    from harness.data.spec import DataSpec
    from harness.measure import memory_plan
    from harness.train.specs import TrainSpec
    from models.specs import ModelSpec

    gin_config.parse_gin([os.path.join(REPO_ROOT, "gin", f"{name}.gin")], [])
    try:
        spec, train, batch = ModelSpec(), TrainSpec(), DataSpec().batch_size
    finally:
        gin.clear_config()
    mesh, _ = REFERENCE_MESHES[name]
    return memory_plan.plan(spec, mesh, batch, train.compute_dtype, train.loss), spec


def smallest_fitting_mesh(plan, spec, chip) -> str:
    """Fewest devices, growing the data axis from 1, whose per-device plan fits `chip`."""
    _, expert, model = plan.mesh
    data = 1
    while plan.global_batch % (data * expert) == 0:
        per_device = plan.global_batch // (data * expert)
        if per_device % spec.min_batch == 0:
            scaled = plan.scaled_to_batch((data, expert, model), plan.global_batch)
            if scaled.fits(chip):
                return f"{data},{expert},{model} ({data * expert * model} devices)"
        data *= 2
    weights = (plan.params + plan.optimizer) / 2**30
    if weights > chip.bytes / 2**30:
        return f"none: weights + Adam alone are {weights:.1f} GiB per device"
    group = spec.min_batch
    smallest = "one image" if group == 1 else f"one routing group ({group} images)"
    return f"none: even {smallest} per device does not fit"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default=",".join(PAPER_CONFIGS))
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args()
    from harness.measure import memory_plan

    chip = next(c for c in memory_plan.CHIPS if c.name == TARGET_CHIP)
    gib = 2**30
    lines = [
        f"`.venv/bin/python bench/memory_plans.py{' -o ' + args.output if args.output else ''}`"
        f" ({time.strftime('%Y-%m-%d')}). GiB per device of one training step at each gin "
        "file's batch; fits = at most the chip's memory (TPU v3 core 16 GiB, H100 80 GB).",
        "",
        "| config | mesh (D,E,M) | batch/dev | params | Adam | activations | total "
        f"| {TARGET_CHIP} | H100 80GB | smallest mesh fitting a {TARGET_CHIP} |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    methods = []
    h100 = next(c for c in memory_plan.CHIPS if c.name == "H100 80GB")
    for name in args.configs.split(","):
        start = time.perf_counter()
        try:
            plan, spec = plan_config(name)
        except Exception as error:  # one config's failure must not lose the others' rows
            lines.append(f"| {name} | failed: {str(error).splitlines()[0][:200]} |")
            print(lines[-1], file=sys.stderr, flush=True)
            continue
        _, source = REFERENCE_MESHES[name]
        mesh = ",".join(map(str, plan.mesh))
        lines.append(
            f"| {name} | {mesh} ({source}) | {plan.per_device_batch} | {plan.params / gib:.2f} "
            f"| {plan.optimizer / gib:.2f} | {plan.activations / gib:.2f} "
            f"| {plan.total / gib:.2f} | {'yes' if plan.fits(chip) else 'no'} "
            f"| {'yes' if plan.fits(h100) else 'no'} "
            f"| {smallest_fitting_mesh(plan, spec, chip)} |"
        )
        methods.append(f"- {name}: {plan.method} ({time.perf_counter() - start:.0f} s)")
        print(lines[-1], file=sys.stderr, flush=True)
        write(args.output, lines, methods)  # after every row, so a long run keeps its rows
    print(write(args.output, lines, methods))


def write(output: str | None, lines: list[str], methods: list[str]) -> str:
    text = "\n".join([*lines, "", "Method per row:", "", *methods]) + "\n"
    if output:
        with open(output, "w") as out:
            out.write(text)
    return text


if __name__ == "__main__":
    main()
