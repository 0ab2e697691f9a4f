r"""The memory plan (`python -m harness.inspect --plan --mesh`) against what XLA allocates on
one device: the check that bench/memory_plans.md's method asks a GPU run for.

  .venv/bin/python bench/plan_vs_xla.py [--configs=vit_b16,vmoe_b16] [--remat=none,full]
      [--batch=128] [--layers=12]

For each config x remat policy, in a fresh process (the device's peak counter only grows):
  plan      harness/measure/program_plan.py at mesh (1,1,1): its total and its terms;
  XLA       the compiled train step's memory_analysis(): arguments + outputs - aliased
            (donated) + temporaries, the buffers XLA assigns for the step;
  measured  the device allocator's peak_bytes_in_use after init and three steps (GPU/TPU
            only; the CPU client reports no memory stats).
The step is bench/accelerator_models.py's: the trainer's own (harness.runtime.steps.
make_train_step) with optax Adam, on random f32 images already on the device, state donated.
"""

import argparse
import json
import os
import subprocess
import sys

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MIB = 2**20


def measure(name: str, remat: str, batch: int, layers: int) -> dict:
    import jax

    from bench.accelerator_models import random_image_step
    from harness.measure import program_plan

    run = random_image_step(
        name, batch, [f"VitSpec.num_layers={layers}", f"VitSpec.remat='{remat}'"]
    )
    spec, train = run.spec, run.train
    plan = program_plan.plan(
        spec, program_plan.Setting((1, 1, 1), remat), batch, train.compute_dtype, train.loss
    )
    state, data = run.state, run.data
    compiled = run.step.lower(state, data).compile()
    analysis = compiled.memory_analysis()
    xla = None
    if analysis is not None:
        xla = {
            "arguments": analysis.argument_size_in_bytes,
            "outputs": analysis.output_size_in_bytes,
            "aliased": analysis.alias_size_in_bytes,
            "temporaries": analysis.temp_size_in_bytes,
        }
        xla["total"] = xla["arguments"] + xla["outputs"] - xla["aliased"] + xla["temporaries"]
    for _ in range(3):
        state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "config": name,
        "remat": remat,
        "batch": batch,
        "layers": layers,
        "dtype": train.compute_dtype,
        "plan": plan.as_dict(),
        "xla": xla,
        "measured_peak": stats.get("peak_bytes_in_use"),
    }


def row(r: dict) -> str:
    plan = r["plan"]
    terms = plan["terms"]
    state = sum(terms[k]["bytes"] for k in ("params", "gradients", "optimizer"))
    xla = r["xla"] or {}
    peak = r["measured_peak"]

    def mib(x: int | None) -> str:
        return "n/a" if x is None else f"{x / MIB:,.0f}"

    def ratio(x: int | None) -> str:
        return "n/a" if not x else f"{plan['total'] / x:.2f}"

    return (
        f"| {r['config']} | {r['layers']} | {r['batch']} | {r['remat']} | {mib(state)} "
        f"| {mib(terms['residuals']['bytes'])} | {mib(terms['recompute']['bytes'])} "
        f"| {mib(plan['total'])} | {mib(xla.get('temporaries'))} | {mib(xla.get('total'))} "
        f"| {mib(peak)} | {ratio(xla.get('total'))} | {ratio(peak)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="vit_b16,vmoe_b16")
    parser.add_argument("--remat", default="none,full")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # NAME,REMAT: measure in this process
    args = parser.parse_args()
    if args.one:
        name, remat = args.one.split(",")
        print(json.dumps(measure(name, remat, args.batch, args.layers)))
        return
    import jax

    d = jax.devices()[0]
    print(f"{d.platform} {d.device_kind}, one device, jax {jax.__version__}; MiB per device")
    print()
    print(
        "| config | layers | batch | remat | plan: params+grads+Adam | plan: residuals "
        "| plan: recompute | plan total | XLA temporaries | XLA total | measured peak "
        "| plan / XLA | plan / measured |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.configs.split(","):
        for remat in args.remat.split(","):
            command = [*sys.orig_argv[: sys.orig_argv.index(sys.argv[0])], sys.argv[0]]
            command += [f"--one={name},{remat}", f"--batch={args.batch}", f"--layers={args.layers}"]
            done = subprocess.run(command, capture_output=True, text=True)
            lines = done.stdout.strip().splitlines()
            if done.returncode or not lines:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"| {name} | {args.layers} | {args.batch} | {remat} | failed: {tail} |")
                continue
            print(row(json.loads(lines[-1])), flush=True)


if __name__ == "__main__":
    main()
