"""Runs a suite: trains every (run, seed), sweeps the sparse runs, times the ViT-22B block
variants' train steps, inspects the paper configs and writes the claim-by-claim report.

Every (run, seed) trains in this process, one after another, into ROOT/NAME/seed_S. A run
with a results.json is done and skipped; one with a checkpoint resumes; so an interrupted
suite picks up where it stopped when the same command is run again. A run whose loss
diverges is recorded as diverged (a claim may be about exactly that) and the suite goes on.
"""

import time
from collections.abc import Sequence
from typing import Any

import gin

from harness import files, storage
from harness.config import gin_config
from harness.config.suite_spec import (
    DIVERGED_FILE,
    STEP_TIMES_FILE,
    SuiteSpec,
    bindings_for,
    run_dir,
    seeds_of,
)
from harness.errors import NonFiniteLossError
from harness.measure import model_summary, params_flops, routing_sweep, step_timing
from harness.reporting import claims
from harness.run_dir import run_record
from harness.runtime import restore
from harness.train import launch
from models.specs import ModelSpec


def train_all(spec: SuiteSpec) -> None:
    todo = [
        (name, gin_file, extra, s)
        for name, gin_file, extra in spec.runs
        for s in seeds_of(spec, name)
    ]
    started = time.perf_counter()
    for index, (name, gin_file, extra, seed) in enumerate(todo, 1):
        workdir = run_dir(spec, name, seed)
        elapsed = _clock(time.perf_counter() - started)
        label = f"[suite {index}/{len(todo)}, {elapsed}] {name} seed {seed}"
        if _finished(workdir):
            print(f"{label}: done before, skipped", flush=True)
            continue
        print(f"{label}: training into {workdir}", flush=True)
        try:
            epochs = epochs_for(spec, name)
            launch.train([gin_file], bindings_for(spec, extra, seed, epochs), workdir)
        except NonFiniteLossError as error:
            print(f"{label}: diverged ({error})", flush=True)
            files.write_json_atomically(storage.join(workdir, DIVERGED_FILE), {"error": str(error)})
        finally:
            gin.clear_config()


def _gflops_per_image(spec: SuiteSpec, name: str) -> float:
    gin_file, extra = {n: (g, e) for n, g, e in spec.runs}[name]
    gin.clear_config()
    try:
        gin_config.parse_gin([gin_file], bindings_for(spec, extra, 0))
        model = ModelSpec()  # the gin-bound model of this run
    finally:
        gin.clear_config()
    return params_flops.analytic_gflops_per_image(model)


def epochs_for(spec: SuiteSpec, name: str) -> float:
    """The suite's epochs, scaled for a compute-matched run by its reference's per-image
    GFLOPs over its own (SuiteSpec.compute_matched)."""
    reference = dict(spec.compute_matched).get(name)
    if reference is None:
        return spec.num_epochs
    ratio = _gflops_per_image(spec, reference) / _gflops_per_image(spec, name)
    return spec.num_epochs * ratio


def sweep_all(spec: SuiteSpec) -> None:
    for name in spec.sweep_runs:
        for seed in seeds_of(spec, name):
            workdir = run_dir(spec, name, seed)
            path = storage.join(workdir, run_record.SWEEP_FILE)
            if storage.exists(path) or not storage.exists(
                storage.join(workdir, run_record.RESULTS_FILE)
            ):
                continue
            print(f"[suite] routing sweep of {workdir}", flush=True)
            trained = restore.load_trained(workdir, own_run=True)
            payload = routing_sweep.sweep(
                trained,
                [float(c) for c in spec.sweep_capacities],
                [int(k) for k in spec.sweep_ks],
                spec.sweep_timing_batch_size,
            )
            payload["command"] = f"python -m harness.sweep {workdir}"
            files.write_json_atomically(path, payload)
            gin.clear_config()


def time_steps(spec: SuiteSpec) -> None:
    """Interleaved train-step times of spec.step_time_runs, once per suite root."""
    path = storage.join(spec.root, STEP_TIMES_FILE)
    entries = {name: (gin_file, extra) for name, gin_file, extra in spec.runs}
    names = [name for name in spec.step_time_runs if name in entries]
    if storage.exists(path) or not names:
        return
    print(f"[suite] timing the train step of {', '.join(names)}", flush=True)
    timed = step_timing.time_train_steps(
        {name: (entries[name][0], bindings_for(spec, entries[name][1], 0)) for name in names},
        spec.step_time_rounds,
        spec.step_time_steps,
    )
    files.write_json_atomically(
        path,
        {
            "method": step_timing.METHOD.format(
                rounds=spec.step_time_rounds, steps=spec.step_time_steps
            ),
            "devices": run_record.devices(),
            "times": {name: t.as_dict() for name, t in timed.items()},
        },
    )


def inspect_paper_configs(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Abstract parameter and FLOP counts of paper configs (no weights, no compile)."""
    records = {}
    for name in names:
        gin_config.parse_gin([f"gin/{name}.gin"], [])
        records[name] = model_summary.inspect_model(ModelSpec(), [1, 1, 1], xla_flops=False)
        records[name]["train_images"] = _train_images()
        gin.clear_config()
    return records


def _train_images() -> float:
    """Images the parsed gin file's training section sees: epochs x ImageNet-1k's train split."""
    epochs = gin.query_parameter("TrainSpec.num_epochs")
    return epochs * claims.IMAGENET_TRAIN_IMAGES if epochs else float("nan")


def _finished(workdir: str) -> bool:
    return any(
        storage.exists(storage.join(workdir, name))
        for name in (run_record.RESULTS_FILE, DIVERGED_FILE)
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def run_suite(spec: SuiteSpec, command: str) -> None:
    """Everything the suite does, in order; each stage skips what an earlier attempt finished.

    Raises harness.train.preemption.Preempted when a run is pre-empted (SIGTERM)."""
    started = time.perf_counter()
    train_all(spec)
    sweep_all(spec)
    time_steps(spec)
    print("[suite] inspecting the paper configs", flush=True)
    paper = inspect_paper_configs(spec.paper_configs)
    claims.write_report(spec, paper, command, devices=run_record.devices())
    print(f"[suite] report: {spec.report} ({_clock(time.perf_counter() - started)})")
