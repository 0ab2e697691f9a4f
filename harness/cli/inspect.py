r"""Size and compute of a gin-configured model, built abstractly (no weights in memory).

  python -m harness.inspect --gin_file=gin/vmoe_h14.gin [--gin_param=B ...] [--json]
      [--plan [--device=tpuv3-core] [--devices=256]]
      [--mesh=DATA,EXPERT,MODEL] [--noxla_flops] [--batch=GLOBAL_BATCH]

Prints params_total, params_body, params_active, gflops_per_image and XLA's FLOP count
(definitions in harness/measure/params_flops.py), and the bytes of weights each device holds
on the given mesh. A table for people; one JSON object with --json.

With --batch, also a per-device memory plan of one training step on the mesh (weights, Adam
state, gradient accumulator, batch, and activations from XLA's buffer assignment of the train
step compiled at reduced depth and extrapolated per layer; harness/measure/memory_plan.py) and
which chips it fits. The step is compiled on EXPERT x MODEL simulated CPU devices (4 x EXPERT
x MODEL under FSDP), whatever the machine: the command sets
XLA_FLAGS=--xla_force_host_platform_device_count=N for itself before JAX starts (an N already
in XLA_FLAGS is kept).

With --plan, the memory plan from the program instead (harness/measure/program_plan.py:
weights, gradients, Adam state and accumulator from the trainer's partition specs; what the
backward pass keeps from JAX's trace of the loss; no compile, seconds per config) for
--device (tpuv3-core, tpuv4, tpuv5e, a100-40gb, a100-80gb, h100-80gb), and the cheapest
setting (remat, micro-batches, FSDP, mesh) of --devices such devices that fits, with its
estimated step time and, for a gin file with TrainSpec.num_epochs, the run's accelerator-days,
energy and CO2. With --mesh given too, no search: the plan of the gin file's own setting
(VitSpec.remat, TrainSpec.microbatches, MeshSpec.shard_params_over_data) on that mesh, the
figure an accelerator's own memory analysis is compared with (one JSON object with --json).

FSDP and gradient accumulation come from the gin file, as for `harness.run`:
MeshSpec.shard_params_over_data and TrainSpec.microbatches, overridden the same way, e.g.
--gin_param=MeshSpec.shard_params_over_data=True --gin_param=TrainSpec.microbatches=4. (The
mesh is --mesh, not MeshSpec's sizes, since inspect runs on no accelerator to resolve -1.)
"""

import json
import math
import os
import sys
import time

from absl import flags

from harness.cli import app
from harness.cli import flags as cli_flags
from harness.errors import UsageError

FLAGS = flags.FLAGS
cli_flags.define_gin_flags()
flags.adopt_module_key_flags(cli_flags)
flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
flags.DEFINE_string("mesh", "1,1,1", "Mesh sizes DATA,EXPERT,MODEL for bytes per device.")
flags.DEFINE_bool("xla_flops", True, "Also report XLA's FLOP count of the lowered forward.")
flags.DEFINE_integer(
    "batch",
    None,
    "Global batch: adds a per-device memory plan of a training step on --mesh, with the gin "
    "file's MeshSpec.shard_params_over_data (FSDP) and TrainSpec.microbatches.",
)

flags.DEFINE_bool(
    "plan",
    False,
    "Print the memory plan from the program (JAX's residuals, no compile) and the cheapest "
    "setting that fits --devices x --device.",
)
flags.DEFINE_string("device", "tpuv3-core", "Accelerator for --plan, e.g. h100-80gb.")
flags.DEFINE_integer("devices", 256, "How many --device accelerators --plan searches a mesh of.")

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
# Bounds on what one command may ask of this machine (issue 26: --mesh=1,100000,1 had XLA
# make 100000 CPU devices and hang, --batch=10**12 segfaulted, 2**20 compiled for over 5 min
# in 18 GB). The largest TPU pods are under 10k chips; the plan compiles one micro-batch per
# simulated device (8192 images of the CPU ViT: 80 s, 0.5 GB), and the paper configs' plans
# use at most 4 x 32 simulated devices.
MAX_MESH_DEVICES = 65536
MAX_SIMULATED_DEVICES = 512
MAX_PLAN_IMAGES = 8192


def request_host_devices(count: int) -> None:
    """XLA reads its flags once, when JAX starts, so the simulated CPU devices the memory plan
    compiles on are asked for here, before anything imports jax. A count the caller already
    set is kept (the plan then says if it is too small)."""
    current = os.environ.get("XLA_FLAGS", "")
    if "jax" in sys.modules or DEVICE_COUNT_FLAG in current:
        return
    os.environ["XLA_FLAGS"] = f"{current} {DEVICE_COUNT_FLAG}={count}".strip()


def parse_mesh(text: str) -> list[int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(
            f"--mesh={text} is not three positive sizes; use DATA,EXPERT,MODEL like 1,8,1"
        )
    sizes = [int(p) for p in parts]
    if math.prod(sizes) > MAX_MESH_DEVICES:
        raise UsageError(
            f"--mesh={text} is {math.prod(sizes)} devices, over the {MAX_MESH_DEVICES} of any "
            "machine this harness plans for; give the mesh of your pod slice, e.g. 8,32,1"
        )
    return sizes


def check_plan_size(mesh: list[int], batch: int, fsdp: bool, microbatches: int) -> None:
    """Refuses (one line) a memory plan whose compile this machine cannot take: more simulated
    devices than MAX_SIMULATED_DEVICES or more images per device and micro-batch than
    MAX_PLAN_IMAGES (the batch must already split, plan_meshes.check_batch)."""
    from harness.measure import plan_meshes

    devices = plan_meshes.device_count(mesh, fsdp)
    if devices > MAX_SIMULATED_DEVICES:
        raise UsageError(
            f"--mesh={','.join(map(str, mesh))} needs {devices} simulated CPU devices for the "
            f"memory plan, over {MAX_SIMULATED_DEVICES}; plan a smaller expert x model mesh"
        )
    images = batch // (mesh[0] * mesh[1]) // microbatches
    if images > MAX_PLAN_IMAGES:
        raise UsageError(
            f"--batch={batch} gives {images} images per device and micro-batch, over the "
            f"{MAX_PLAN_IMAGES} the memory plan compiles; use a smaller --batch, a larger "
            "data axis in --mesh or more TrainSpec.microbatches"
        )


def format_table(record: dict) -> str:
    width = max(len(k) for k in record)
    lines = []
    for key, value in record.items():
        if isinstance(value, int) and not isinstance(value, bool):
            text = f"{value:,}"
        elif value is None:
            text = "not computed"
        else:
            text = str(value)
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def main(args: list[str]) -> None:
    app.no_positional(args, "--gin_file=gin/vit_b16.gin")
    if not cli_flags.gin_files():
        raise UsageError("--gin_file is required; e.g. --gin_file=gin/vit_b16.gin")
    mesh = parse_mesh(FLAGS.mesh)
    if FLAGS.plan:
        from harness.measure.plan_devices import plan_device

        try:
            device = plan_device(FLAGS.device)
        except ValueError as error:
            raise UsageError(str(error)) from error
        if FLAGS.devices < 1:
            raise UsageError(f"--devices={FLAGS.devices} must be >= 1; e.g. --devices=8")
    if FLAGS.batch is not None and FLAGS.batch < 1:
        raise UsageError(f"--batch={FLAGS.batch} is not a positive global batch; e.g. 4096")
    from harness.config import gin_config
    from harness.config.experiment import check_mesh_fits_model
    from harness.config.train_spec import MeshSpec, TrainSpec
    from harness.measure import plan_meshes
    from models.specs import ModelSpec

    gin_config.parse_gin(cli_flags.gin_files(), cli_flags.gin_params())
    start = time.perf_counter()
    try:
        spec, train = ModelSpec(), TrainSpec()
        fsdp = MeshSpec().shard_params_over_data
        check_mesh_fits_model(spec, tuple(mesh))
        if FLAGS.plan:
            from harness.data.spec import DataSpec

            batch = FLAGS.batch or DataSpec().batch_size
            if FLAGS["mesh"].present:
                plan_meshes.check_batch(spec, mesh, batch, train.microbatches)
            print(plan_text(spec, train, fsdp, device, mesh, batch))
            return
        if FLAGS.batch is not None:
            # A batch the mesh cannot split fails before the model code loads.
            plan_meshes.check_batch(spec, mesh, FLAGS.batch, train.microbatches)
            check_plan_size(mesh, FLAGS.batch, fsdp, train.microbatches)
            # Parsing gin imports no JAX, so the devices can still be asked for here.
            request_host_devices(plan_meshes.device_count(mesh, fsdp))
        from harness.measure import model_summary  # praxis and JAX: only for a valid model

        record = {"gin_files": cli_flags.gin_files()}
        record.update(model_summary.inspect_model(spec, mesh, FLAGS.xla_flops, fsdp))
        plan = None
        if FLAGS.batch is not None:
            plan = memory_plan_of(spec, train, fsdp, mesh, FLAGS.batch)
    except ValueError as error:  # invalid model settings (k > E, bad placement, ...)
        raise UsageError(str(error).splitlines()[0]) from error
    record["inspect_seconds"] = round(time.perf_counter() - start, 1)
    if FLAGS.json:
        if plan is not None:
            record["memory_plan"] = plan.as_dict()
        print(json.dumps(record))
        return
    print(format_table(record))
    if plan is not None:
        from harness.measure import memory_plan

        print()
        print(memory_plan.format_plan(plan))


def plan_text(spec, train, fsdp: bool, device, mesh: list[int], batch: int) -> str:
    """--plan: the gin file's own setting on --mesh if given, else the cheapest that fits."""
    from harness.measure import plan_format, program_plan, recommend, step_cost
    from harness.reporting.claims import IMAGENET_TRAIN_IMAGES

    if FLAGS["mesh"].present:
        setting = program_plan.Setting(tuple(mesh), spec.vit.remat, train.microbatches, fsdp)
        plan = program_plan.plan(spec, setting, batch, train.compute_dtype, train.loss)
        if FLAGS.json:
            return json.dumps(
                {
                    **plan.as_dict(),
                    "device": device.flag,
                    "fits": plan.fits(device.memory_bytes),
                    "verdict": plan.verdict(device.memory_bytes),
                }
            )
        return plan_format.format_program_plan(plan, device)
    found = recommend.recommend(spec, device, FLAGS.devices, batch, train.compute_dtype, train.loss)
    text = plan_format.format_recommendation(found, device, FLAGS.devices)
    if found.plan is not None and train.num_epochs:
        images = round(train.num_epochs * IMAGENET_TRAIN_IMAGES)
        steps = -(-images // batch)
        cost = step_cost.run_cost(
            spec, found.plan.setting, batch, steps, device, train.compute_dtype
        )
        text += "\n" + plan_format.format_run(cost, device, images)
    return text


def memory_plan_of(spec, train, fsdp: bool, mesh: list[int], batch: int):
    """The training-step memory plan in the gin file's compute dtype, loss, FSDP and
    micro-batches (`train` is its TrainSpec)."""
    from harness.measure import memory_plan

    return memory_plan.plan(
        spec, mesh, batch, train.compute_dtype, train.loss, fsdp, train.microbatches
    )


if __name__ == "__main__":
    app.run(main)
