r"""The XLA:CPU cross-check of bench/memory_plans.py (the method the plans used before the
program plan; slow: every config compiled at two depths).

Per-device training memory of every paper config on its reference mesh, and the smallest
mesh (data axis grown, expert and model axes kept) whose devices each hold it on a TPU v3 core;
then, for the configs that fit no such mesh as they are, the same with FSDP and with
gradient accumulation.

  .venv/bin/python bench/memory_plans_xla_cpu.py [--configs=NAME,...] [--section=all|reference|fsdp]
      [--fsdp_configs=NAME,...] [-o bench/memory_plans_xla_cpu.md]

NAME is a gin/NAME.gin of harness.project.PAPER_CONFIGS (default: all). Prints markdown (or
writes it with -o). The plan of each row is `python -m harness.inspect --gin_file=F
--mesh=D,E,M --batch=B` (harness/measure/memory_plan.py says how each part is obtained), at
the global batch of the gin file. The smaller meshes re-use the reference plan
(MemoryPlan.on_mesh): weights, Adam state and accumulator are recounted exactly for each mesh,
the batch and activations are scaled, so no extra compile is needed.

--section=fsdp regenerates only the FSDP / micro-batch section (about 15 minutes of compiles
on 2 cores instead of 45): with -o, the reference table already in that file is kept.
"""

import argparse
import os
import sys
import time

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The largest compile mesh below: FSDP compiles vmoe_15b's (8, 32, 1) at data 2 and 4
# (harness/measure/plan_meshes.py). XLA reads the count once, before JAX starts.
COMPILE_DEVICES = 128
os.environ["XLA_FLAGS"] = (
    f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={COMPILE_DEVICES}"
).strip()

import gin  # noqa: E402

from harness.config import gin_config  # noqa: E402
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


FSDP_CONFIGS = ("vmoe_15b", "vit22b")  # fit no TPU v3 mesh without FSDP (the first table)
FSDP_HEADING = "## With FSDP and gradient accumulation"
FOOTER = (
    "Compiled on the 2-core development VM (XLA:CPU with simulated devices; no accelerator): "
    "the activations are XLA:CPU's buffer assignment, an estimate of what a TPU or GPU "
    "allocates, not a measurement of it."
)


def parse_config(name: str):
    """ModelSpec, TrainSpec and global batch of gin/NAME.gin."""
    from harness.config.train_spec import TrainSpec
    from harness.data.spec import DataSpec
    from models.specs import ModelSpec

    gin_config.parse_gin([os.path.join(REPO_ROOT, "gin", f"{name}.gin")], [])
    try:
        return ModelSpec(), TrainSpec(), DataSpec().batch_size
    finally:
        gin.clear_config()


def plan_config(name: str, fsdp: bool = False, microbatches: int = 1, mesh=None):
    """The plan of gin/NAME.gin (on its reference mesh unless given), and its ModelSpec."""
    from harness.measure import memory_plan

    spec, train, batch = parse_config(name)
    mesh = mesh or REFERENCE_MESHES[name][0]
    plan = memory_plan.plan(spec, mesh, batch, train.compute_dtype, train.loss, fsdp, microbatches)
    return plan, spec


def smallest_fitting_mesh(plan, spec, chip, micro_images: int | None = None, start_data: int = 1):
    """Fewest devices, growing the data axis from 1, whose per-device plan fits `chip`: the
    plan there, or a line saying why none does. With `micro_images`, each mesh runs its batch
    in micro-batches of that many images, at least 2 of them: one is the plain step, which
    compiles without the micro-batch loop (and, under FSDP, without the all-gathered weights
    XLA hoists out of it), so it is the other rows' case, not this plan's to scale."""
    from harness.measure import memory_plan

    _, expert, model = plan.mesh
    weights = memory_plan.model_weights(spec, plan.mesh)
    data, last = start_data, None
    while plan.global_batch % (data * expert) == 0:
        per_device = plan.global_batch // (data * expert)
        micro = micro_images or per_device
        accumulates = micro_images is None or per_device // micro > 1
        if per_device % spec.min_batch == 0 and per_device % micro == 0 and accumulates:
            mesh = (data, expert, model)
            params = weights.bytes_per_device(mesh, plan.shard_params_over_data)
            last = plan.on_mesh(mesh, params, per_device // micro)
            if last.fits(chip):
                return last
        data *= 2
    held = (last.params + last.optimizer + last.grad_accumulator) / 2**30 if last else 0.0
    if held > chip.bytes / 2**30:
        what = "weights + Adam" + (" + accumulator" if last.grad_accumulator else "")
        return f"none: {what} alone are {held:.1f} GiB per device at data={last.mesh[0]}"
    group = micro_images or spec.min_batch
    smallest = "one image" if group == 1 else f"one routing group ({group} images)"
    if micro_images:
        return f"none: micro-batches of {smallest} do not fit at any data size"
    return f"none: even {smallest} per device does not fit"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default=",".join(PAPER_CONFIGS))
    parser.add_argument("--fsdp_configs", default=",".join(FSDP_CONFIGS))
    parser.add_argument("--section", choices=("all", "reference", "fsdp"), default="all")
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args()
    command = " ".join(["`.venv/bin/python bench/memory_plans_xla_cpu.py", *sys.argv[1:]]) + "`"
    kept = ""
    if args.section == "fsdp" and args.output and os.path.exists(args.output):
        with open(args.output) as old:
            kept = reference_part(old.read())
    reference, fsdp = kept, ""
    if args.section != "fsdp":
        for reference in reference_section(args.configs.split(","), command):
            write(args.output, reference, fsdp)  # after every row, so a long run keeps its rows
    if args.section != "reference":
        for fsdp in fsdp_section(args.fsdp_configs.split(","), command):
            write(args.output, reference, fsdp)
    print(write(args.output, reference, fsdp))


def reference_part(text: str) -> str:
    """A file's reference table and its methods: what comes before the FSDP section (or the
    footer, in a file written without one)."""
    for marker in (FSDP_HEADING, FOOTER.split(":")[0]):
        if marker in text:
            text = text[: text.index(marker)]
    return text.rstrip() + "\n"


def write(output: str | None, reference: str, fsdp: str) -> str:
    text = "\n\n".join(part.rstrip() for part in (reference, fsdp, FOOTER) if part) + "\n"
    if output:
        with open(output, "w") as out:
            out.write(text)
    return text


def chip_named(name: str):
    from harness.measure import memory_plan

    return next(c for c in memory_plan.CHIPS if c.name == name)


def mesh_cell(found) -> str:
    if isinstance(found, str):
        return found
    data, expert, model = found.mesh
    return f"{data},{expert},{model} ({data * expert * model} devices)"


def reference_section(names: list[str], command: str):
    """The reference table, yielded as text after every row."""
    chip, h100, gib = chip_named(TARGET_CHIP), chip_named("H100 80GB"), 2**30
    lines = [
        f"{command} ({time.strftime('%Y-%m-%d')}). GiB per device of one training step at each "
        "gin file's batch, without FSDP and in one micro-batch (the gin files' defaults); fits "
        "= at most the chip's memory (TPU v3 core 16 GiB, H100 80 GB).",
        "",
        "| config | mesh (D,E,M) | batch/dev | params | Adam | activations | total "
        f"| {TARGET_CHIP} | H100 80GB | smallest mesh fitting a {TARGET_CHIP} |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    methods = []
    for name in names:
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
            f"| {mesh_cell(smallest_fitting_mesh(plan, spec, chip))} |"
        )
        methods.append(f"- {name}: {plan.method} ({time.perf_counter() - start:.0f} s)")
        print(lines[-1], file=sys.stderr, flush=True)
        yield "\n".join([*lines, "", "Method per row:", "", *methods]) + "\n"


def fsdp_section(names: list[str], command: str):
    """Each config with FSDP, with micro-batches of one routing group (one image for dense
    models: the least activation memory accumulation gives), and with both; yielded as text
    after every row. The smallest fitting mesh is confirmed by compiling the plan there
    (confirmed_fit)."""
    chip, gib = chip_named(TARGET_CHIP), 2**30
    lines = [
        FSDP_HEADING,
        "",
        f"{command} ({time.strftime('%Y-%m-%d')}). The configs that fit no {TARGET_CHIP} mesh "
        "above, with `MeshSpec.shard_params_over_data=True` (FSDP) and/or "
        "`TrainSpec.microbatches` (micro-batches of one routing group, or of one image for "
        "dense models), on the same reference meshes. GiB per device. The smallest fitting "
        "mesh is searched on the plan scaled to each data size (MemoryPlan.on_mesh), then "
        "compiled there; on a miss the search goes on from the plan compiled.",
        "",
        "| config | FSDP | micro-batches (images each) | mesh (D,E,M) | batch/dev | params | Adam "
        f"| accumulator | activations | total | {TARGET_CHIP} | smallest mesh fitting a "
        f"{TARGET_CHIP}, compiled there | meshes tried: estimate, compiled |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    methods = []
    for name in names:
        spec, _, batch = parse_config(name)
        mesh = REFERENCE_MESHES[name][0]
        per_device = batch // (mesh[0] * mesh[1])
        micro = spec.min_batch
        for fsdp, microbatches in (
            (True, 1),
            (False, per_device // micro),
            (True, per_device // micro),
        ):
            start = time.perf_counter()
            try:
                plan, spec = plan_config(name, fsdp, microbatches)
                found, tried = confirmed_fit(name, plan, spec, chip, micro, microbatches > 1)
            except Exception as error:  # one variant's failure must not lose the others
                lines.append(f"| {name} | {fsdp} | {microbatches} | failed: {str(error)[:200]} |")
                print(lines[-1], file=sys.stderr, flush=True)
                continue
            lines.append(
                f"| {name} | {'yes' if fsdp else 'no'} | {microbatches} ({plan.microbatch_images}) "
                f"| {','.join(map(str, plan.mesh))} | {plan.per_device_batch} "
                f"| {plan.params / gib:.2f} | {plan.optimizer / gib:.2f} "
                f"| {plan.grad_accumulator / gib:.2f} | {plan.activations / gib:.2f} "
                f"| {plan.total / gib:.2f} | {'yes' if plan.fits(chip) else 'no'} "
                f"| {mesh_cell(found)} | {'; '.join(tried)} |"
            )
            label = f"{name}, FSDP {'on' if fsdp else 'off'}, {microbatches} micro-batch(es)"
            methods.append(f"- {label}: {plan.method} ({time.perf_counter() - start:.0f} s)")
            print(lines[-1], file=sys.stderr, flush=True)
            yield "\n".join([*lines, "", "Method per row:", "", *methods]) + "\n"


def confirmed_fit(name: str, plan, spec, chip, micro: int, accumulates: bool, tries: int = 3):
    """The smallest mesh that fits `chip`, found on the scaled plan and then compiled there,
    since scaling the activations by images gets their fixed part wrong. On a miss the search
    goes on from the next data size, scaled from the plan just compiled. Returns the fitting
    compiled plan (or why none) and, per mesh compiled, its estimate and compiled total."""
    gib, tried, basis, start = 2**30, [], plan, 1
    for _ in range(tries):
        found = smallest_fitting_mesh(basis, spec, chip, micro if accumulates else None, start)
        if isinstance(found, str) or found.mesh == basis.mesh:
            return found if isinstance(found, str) else basis, tried
        there, _ = plan_config(name, plan.shard_params_over_data, found.microbatches, found.mesh)
        verdict = "fits" if there.fits(chip) else "does not fit"
        tried.append(
            f"{','.join(map(str, found.mesh))}: {found.total / gib:.2f}, "
            f"{there.total / gib:.2f} GiB ({verdict})"
        )
        if there.fits(chip):
            return there, tried
        basis, start = there, found.mesh[0] * 2
    return f"none confirmed in {tries} compiles", tried


if __name__ == "__main__":
    main()
