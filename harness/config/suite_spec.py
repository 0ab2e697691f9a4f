"""The suite section of a gin file (gin/suites/*.gin): which runs, seeds, sweeps and report."""

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import gin

from harness.limits import MAX_TIMING_BATCH
from harness.project import PAPER_CONFIGS, REPO_ROOT
from harness.run_dir import names
from models.specs import Spec

DIVERGED_FILE = names.DIVERGED_FILE
STEP_TIMES_FILE = names.STEP_TIMES_FILE


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
    single_seed_runs: names of runs trained with seed 0 only, whatever `seeds` says (the
      held-out-class few-shot runs, whose spread comes from the few-shot seeds); the paper
      claims leave them out.
    compute_matched: (run, reference) name pairs: the run trains for num_epochs x the ratio
      of the two configs' per-image GFLOPs, so it spends the reference's training compute
      (the upcycling claim's dense arm against the upcycled V-MoE).

    A run's bindings may say {root} and {seed}: e.g. "TrainSpec.init_from='{root}/vit/seed_
    {seed}'" starts each seed from that seed's earlier run (runs train in the listed order).
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
    paper_configs: Sequence[Any] = PAPER_CONFIGS
    single_seed_runs: Sequence[Any] = ()
    compute_matched: Sequence[Any] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seeds < 1:
            raise ValueError(f"SuiteSpec.seeds={self.seeds} must be >= 1")
        for name in ("root", "report"):
            if not str(getattr(self, name)).strip():
                # '' would train into (or write the report as) the current directory.
                raise ValueError(
                    f"SuiteSpec.{name}={getattr(self, name)!r} is empty; name a folder of its "
                    f"own, e.g. {type(self).__dataclass_fields__[name].default!r}"
                )
        check_sweep_settings(self.sweep_capacities, self.sweep_ks, self.sweep_timing_batch_size)
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
            if not os.path.isfile(os.path.join(REPO_ROOT, entry[1])):
                raise ValueError(f"SuiteSpec.runs entry {entry[0]!r}: {entry[1]} does not exist")
        names = [entry[0] for entry in self.runs]
        for pair in self.compute_matched:
            if len(pair) != 2 or any(name not in names for name in pair):
                raise ValueError(
                    f"SuiteSpec.compute_matched entry {pair!r} must be (run, reference), both "
                    f"names from {names}"
                )
        unknown = [name for name in self.single_seed_runs if name not in names]
        if unknown:
            raise ValueError(
                f"SuiteSpec.single_seed_runs has {unknown}, not names of SuiteSpec.runs; use "
                f"names from {names}"
            )


def check_sweep_settings(capacities: Sequence[Any], ks: Sequence[Any], timing_batch: int) -> None:
    """The routing sweep's settings, checked before any training (they are used after it)."""
    if not capacities or not all(
        isinstance(c, int | float) and not isinstance(c, bool) and 0 < c < float("inf")
        for c in capacities
    ):
        raise ValueError(
            f"SuiteSpec.sweep_capacities={list(capacities)} must be finite numbers > 0, e.g. "
            "(2.0, 1.0, 0.5)"
        )
    if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        raise ValueError(f"SuiteSpec.sweep_ks={list(ks)} must be integers >= 1, e.g. (1, 2)")
    if not 1 <= timing_batch <= MAX_TIMING_BATCH:
        raise ValueError(
            f"SuiteSpec.sweep_timing_batch_size={timing_batch} must be in 1..{MAX_TIMING_BATCH}"
        )


def run_dir(spec: SuiteSpec, name: str, seed: int) -> str:
    return os.path.join(spec.root, name, f"seed_{seed}")


def seeds_of(spec: SuiteSpec, name: str) -> range:
    """The seeds the suite trains run `name` with."""
    return range(1) if name in spec.single_seed_runs else range(spec.seeds)


def bindings_for(
    spec: SuiteSpec, extra: Sequence[str], seed: int, num_epochs: float | None = None
) -> list[str]:
    """The run's bindings with {root} and {seed} filled in, then its seed and epochs
    (`num_epochs`, default the suite's)."""
    filled = [b.replace("{root}", spec.root).replace("{seed}", str(seed)) for b in extra]
    epochs = spec.num_epochs if num_epochs is None else num_epochs
    bindings = [*filled, f"TrainSpec.seed={seed}", f"TrainSpec.num_epochs={epochs}"]
    if spec.eval_split:
        bindings.append(f"DataSpec.eval_split={spec.eval_split!r}")
    return bindings
