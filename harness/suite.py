r"""Reproduce the papers' claims at CPU scale: train a gin-configured set of runs over several
seeds, sweep the sparse ones, inspect the paper configs, and write one report, claim by claim.

  python -m harness.suite --gin_file=gin/suites/paper_claims.gin [--gin_param=...]

Every (run, seed) trains in this process, one after another, into ROOT/NAME/seed_S. A run
with a results.json is done and skipped; one with a checkpoint resumes; so an interrupted
suite picks up where it stopped when the same command is run again. A run whose loss
diverges is recorded as diverged (a claim may be about exactly that) and the suite goes on.
"""

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import gin
from absl import app, logging

from harness import (
    claims,
    config,
    gin_flags,
    inspect,
    preemption,
    results,
    run,
    step_timing,
    sweep,
)
from harness.errors import UsageError, run_cli
from models import specs
from models.specs import Spec

DIVERGED_FILE = "diverged.json"
STEP_TIMES_FILE = "step_times.json"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SuiteSpec(Spec):
    """What the suite trains and where it writes.

    runs: (name, gin file, [bindings]) triples; claims.py refers to the names it needs.
    num_epochs, eval_split: applied to every run (eval_split None = the full test split).
    sweep_runs, sweep_capacities, sweep_ks: which runs get the inference-time routing sweep
      (all their seeds), over which C and k.
    step_time_runs, step_time_rounds, step_time_steps: runs whose train step is timed
      interleaved in one process (harness/step_timing.py) for the speed claim, rather than
      compared through the throughput of runs trained one after another.
    paper_configs: gin/NAME.gin files inspected (not trained) for claim 6.
    """

    root: str = "runs/suite"
    report: str = "reports/suite.md"
    seeds: int = 3
    num_epochs: float = 1.0
    eval_split: str | None = None
    runs: Sequence[Any] = ()
    sweep_capacities: Sequence[Any] = (2.0, 1.0, 0.5, 0.25, 0.125)
    sweep_ks: Sequence[Any] = (1, 2)
    sweep_timing_batch_size: int = 256
    sweep_runs: Sequence[Any] = ("vmoe",)
    step_time_runs: Sequence[Any] = ("vit22b", "vit22b_sequential", "vit22b_bias")
    step_time_rounds: int = 5
    step_time_steps: int = 10
    paper_configs: Sequence[Any] = config.PAPER_CONFIGS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seeds < 1:
            raise ValueError(f"SuiteSpec.seeds={self.seeds} must be >= 1")
        if self.step_time_rounds < 1 or self.step_time_steps < 1:
            raise ValueError(
                f"SuiteSpec.step_time_rounds={self.step_time_rounds} and step_time_steps="
                f"{self.step_time_steps} must both be >= 1"
            )
        if not self.runs:
            raise ValueError("SuiteSpec.runs is empty; list (name, gin_file, [bindings]) triples")
        for entry in self.runs:
            if len(entry) != 3 or not isinstance(entry[0], str) or not isinstance(entry[1], str):
                raise ValueError(
                    f"SuiteSpec.runs entry {entry!r} must be (name, gin_file, [bindings])"
                )
            if not os.path.isfile(os.path.join(config.REPO_ROOT, entry[1])):
                raise ValueError(f"SuiteSpec.runs entry {entry[0]!r}: {entry[1]} does not exist")


def run_dir(spec: SuiteSpec, name: str, seed: int) -> str:
    return os.path.join(spec.root, name, f"seed_{seed}")


def bindings_for(spec: SuiteSpec, extra: Sequence[str], seed: int) -> list[str]:
    bindings = [*extra, f"TrainSpec.seed={seed}", f"TrainSpec.num_epochs={spec.num_epochs}"]
    if spec.eval_split:
        bindings.append(f"DataConfig.eval_split={spec.eval_split!r}")
    return bindings


def train_all(spec: SuiteSpec) -> None:
    from harness import trainer  # after absl parsed flags: it imports JAX state

    todo = [
        (name, gin_file, extra, s) for name, gin_file, extra in spec.runs for s in range(spec.seeds)
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
            run.train([gin_file], bindings_for(spec, extra, seed), workdir)
        except trainer.NonFiniteLossError as error:
            print(f"{label}: diverged ({error})", flush=True)
            results.write_json_atomically(
                os.path.join(workdir, DIVERGED_FILE), {"error": str(error)}
            )
        finally:
            gin.clear_config()


def sweep_all(spec: SuiteSpec) -> None:
    for name in spec.sweep_runs:
        for seed in range(spec.seeds):
            workdir = run_dir(spec, name, seed)
            path = os.path.join(workdir, sweep.SWEEP_FILE)
            if os.path.exists(path) or not os.path.exists(
                os.path.join(workdir, results.RESULTS_FILE)
            ):
                continue
            print(f"[suite] routing sweep of {workdir}", flush=True)
            trained = sweep.load_trained(workdir)
            payload = sweep.sweep(
                trained,
                [float(c) for c in spec.sweep_capacities],
                [int(k) for k in spec.sweep_ks],
                spec.sweep_timing_batch_size,
            )
            payload["command"] = f"python -m harness.sweep {workdir}"
            results.write_json_atomically(path, payload)
            gin.clear_config()


def time_steps(spec: SuiteSpec) -> None:
    """Interleaved train-step times of spec.step_time_runs, once per suite root."""
    path = os.path.join(spec.root, STEP_TIMES_FILE)
    entries = {name: (gin_file, extra) for name, gin_file, extra in spec.runs}
    names = [name for name in spec.step_time_runs if name in entries]
    if os.path.exists(path) or not names:
        return
    print(f"[suite] timing the train step of {', '.join(names)}", flush=True)
    timed = step_timing.time_train_steps(
        {name: (entries[name][0], bindings_for(spec, entries[name][1], 0)) for name in names},
        spec.step_time_rounds,
        spec.step_time_steps,
    )
    results.write_json_atomically(
        path,
        {
            "method": step_timing.METHOD.format(
                rounds=spec.step_time_rounds, steps=spec.step_time_steps
            ),
            "devices": results.devices(),
            "times": {name: t.as_dict() for name, t in timed.items()},
        },
    )


def inspect_paper_configs(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Abstract parameter and FLOP counts of paper configs (no weights, no compile)."""
    records = {}
    for name in names:
        config.parse_gin([f"gin/{name}.gin"], [])
        records[name] = inspect.inspect_model(specs.ModelSpec(), [1, 1, 1], xla_flops=False)
        records[name]["train_images"] = _train_images()
        gin.clear_config()
    return records


def _train_images() -> float:
    """Images the parsed gin file's training section sees: epochs x ImageNet-1k's train split."""
    epochs = gin.query_parameter("TrainSpec.num_epochs")
    return epochs * claims.IMAGENET_TRAIN_IMAGES if epochs else float("nan")


def _finished(workdir: str) -> bool:
    return any(
        os.path.exists(os.path.join(workdir, name))
        for name in (results.RESULTS_FILE, DIVERGED_FILE)
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def main() -> None:
    logging.set_verbosity(logging.WARNING)
    if not gin_flags.GIN_FILES.value:
        raise UsageError("--gin_file is required; e.g. --gin_file=gin/suites/demo.gin")
    config.parse_gin(gin_flags.GIN_FILES.value, gin_flags.GIN_PARAMS.value)
    try:
        spec = SuiteSpec()
    except ValueError as error:
        raise UsageError(str(error)) from error
    gin.clear_config()
    command = "python -m harness.suite " + " ".join(sys.argv[1:])
    started = time.perf_counter()
    try:
        train_all(spec)
    except preemption.Preempted as stopped:
        print(f"{stopped} (the suite resumes with it too)", file=sys.stderr)
        sys.exit(preemption.PREEMPTED_EXIT_CODE)
    sweep_all(spec)
    time_steps(spec)
    print("[suite] inspecting the paper configs", flush=True)
    paper = inspect_paper_configs(spec.paper_configs)
    claims.write_report(spec, paper, command, devices=results.devices())
    print(f"[suite] report: {spec.report} ({_clock(time.perf_counter() - started)})")


if __name__ == "__main__":
    app.run(lambda argv: run_cli(main))
