r"""Train-step time and images/s of each family's CPU config, ViT-22B parallel vs sequential
blocks, and the fraction of a training loop spent waiting for input data.

  .venv/bin/python bench/train_step.py [--configs=vit,vmoe,widenet,vit22b,vit22b_sequential]
      [--steps=40] [--dispatch=einsum|gather]

All configs run in this one process, one after another, on the devices JAX sees (one CPU
device unless XLA_FLAGS says otherwise), with the batch size of the gin file. Two timings
per config, both after a compiling warm-up step:

  step ms     median of `steps` jit-compiled train steps on one batch already on the device,
              each waited for with block_until_ready: the model's own cost.
  data wait   the real loop (the tf.data pipeline of the run, host->device transfer, step),
              steps waited for one by one, as the fraction of its wall time spent getting the
              next batch. Under 5% means the pipeline keeps the device busy.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import gin

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

from harness import config, trainer
from harness.measure import analytic_gflops_per_image

CONFIGS = {
    "vit": ("gin/cpu/vit.gin", []),
    "vmoe": ("gin/cpu/vmoe.gin", []),
    "widenet": ("gin/cpu/widenet.gin", []),
    "vit22b": ("gin/cpu/vit22b.gin", []),
    "vit22b_sequential": ("gin/cpu/vit22b.gin", ["Vit22bSpec.parallel=False"]),
    "vit22b_bias": ("gin/cpu/vit22b.gin", ["Vit22bSpec.use_bias=True"]),
}


def _trainer(name: str, extra: list[str]) -> trainer.Trainer:
    gin_file, bindings = CONFIGS[name]
    config.parse_gin([gin_file], [*bindings, *extra, "TrainSpec.num_epochs=None"])
    experiment = trainer.Experiment.from_gin()
    mesh_shape = trainer.validate(experiment, jax.device_count())
    return trainer.Trainer(experiment, tempfile.mkdtemp(prefix="bench_"), mesh_shape)


def measure(name: str, steps: int, extra: list[str]) -> dict[str, float]:
    run = _trainer(name, extra)
    batches = run.train_batches(0)
    with run.mesh:
        state = run.init_state()
        batch = run.global_batch(next(batches), run.batch_shardings)
        state, metrics = run.train_step(state, batch)  # compile
        jax.block_until_ready(metrics)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            state, metrics = run.train_step(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        waiting, loop_start = 0.0, time.perf_counter()
        for _ in range(steps):
            start = time.perf_counter()
            batch = run.global_batch(next(batches), run.batch_shardings)
            waiting += time.perf_counter() - start
            state, metrics = run.train_step(state, batch)
            jax.block_until_ready(metrics)
        loop = time.perf_counter() - loop_start
    step_s = statistics.median(times)
    batch_size = run.experiment.data.batch_size
    result = {
        "gflops": analytic_gflops_per_image(run.experiment.model),
        "step_ms": 1000 * step_s,
        "images_per_s": batch_size / step_s,
        "data_wait": waiting / loop,
        "batch": batch_size,
    }
    gin.clear_config()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--dispatch", default=None, help="MoeSpec.dispatch for sparse configs")
    args = parser.parse_args()
    extra = [f"MoeSpec.dispatch='{args.dispatch}'"] if args.dispatch else []
    device = jax.devices()[0]
    print(
        f"{device.platform} {device.device_kind}, {jax.device_count()} device(s), "
        f"{platform.processor() or platform.machine()}, jax {jax.__version__}; median of "
        f"{args.steps} steps"
    )
    print()
    print("| config | batch | GFLOPs/img | step ms | images/s | data wait |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.configs.split(","):
        r = measure(name, args.steps, extra)
        print(
            f"| {name} | {r['batch']} | {r['gflops']:.4f} | {r['step_ms']:.1f} "
            f"| {r['images_per_s']:.0f} | {100 * r['data_wait']:.1f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
