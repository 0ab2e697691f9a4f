r"""Train-step time and images/s of each family's CPU config, ViT-22B parallel vs sequential
blocks, and the fraction of a training loop spent waiting for input data.

  .venv/bin/python bench/train_step.py [--configs=NAME,...] [--steps=40]
      [--dispatch=einsum|gather]

NAME is any key of CONFIGS below (default: all of them).

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

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

from harness.measure import step_timing
from harness.measure.params_flops import analytic_gflops_per_image

CONFIGS = {
    "vit": ("gin/cpu/vit.gin", []),
    "vmoe": ("gin/cpu/vmoe.gin", []),
    "widenet": ("gin/cpu/widenet.gin", []),
    "vit22b": ("gin/cpu/vit22b.gin", []),
    "vit22b_sequential": ("gin/cpu/vit22b.gin", ["Vit22bSpec.parallel=False"]),
    "vit22b_bias": ("gin/cpu/vit22b.gin", ["Vit22bSpec.use_bias=True"]),
}


def measure(name: str, steps: int, extra: list[str]) -> dict[str, float]:
    gin_file, bindings = CONFIGS[name]
    with tempfile.TemporaryDirectory(prefix="bench_") as workdir:
        prepared = step_timing.prepare(gin_file, [*bindings, *extra], workdir)
        step_s = statistics.median(prepared.step() for _ in range(steps))
        run = prepared.run
        waiting, loop_start = 0.0, time.perf_counter()
        with run.mesh:
            for _ in range(steps):
                start = time.perf_counter()
                prepared.batch = run.global_batch(next(prepared.batches), run.batch_shardings)
                waiting += time.perf_counter() - start
                prepared.step()
        loop = time.perf_counter() - loop_start
    batch_size = run.experiment.data.batch_size
    return {
        "gflops": analytic_gflops_per_image(run.experiment.model),
        "step_ms": 1000 * step_s,
        "images_per_s": batch_size / step_s,
        "data_wait": waiting / loop,
        "batch": batch_size,
    }


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
