"""The report's measured side: accuracy against measured training throughput (beside the
accuracy-vs-GFLOPs plot), and the codecarbon kWh of each run beside the table estimate."""

import os
from typing import Any

from harness.measure import carbon
from harness.reporting import plots
from harness.reporting.markdown import table
from harness.reporting.runs import Run

THROUGHPUT_PLOT = "accuracy_vs_train_throughput.png"

FLOPS_CAVEAT = (
    "FLOPs overstate an MoE's speed: routing, dispatching tokens to experts and combining them "
    "back, and the capacity padding of each expert cost time that the analytic FLOP count "
    "leaves out, so a sparse model with a dense model's GFLOPs trains fewer images per second."
)


def train_images_per_second(run: Run) -> float | None:
    """The run's measured training throughput (timed steps of every attempt, evaluation
    excluded); None for a run without one (e.g. evaluated imported weights)."""
    value = run.results.get("train", {}).get("images_per_second")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def throughput_section(runs: list[Run], plots_dir: str, rel: str) -> list[str]:
    """Table and plot of top-1 against measured training images/s, with the FLOPs caveat."""
    timed = {run.name: train_images_per_second(run) for run in runs}
    rows = [
        (
            run.name,
            run.family,
            f"{run.results['model']['gflops_per_image']:.4f}",
            "n/a" if timed[run.name] is None else f"{timed[run.name]:.1f}",
            f"{run.top1:.4f}",
            f"{run.results['run']['devices']['count']} x {run.results['run']['devices']['kind']}",
        )
        for run in runs
    ]
    lines = [
        "### Accuracy vs measured training throughput",
        "",
        FLOPS_CAVEAT,
        "",
        table(
            ("run", "family", "GFLOPs/img", "train img/s (measured)", "top-1", "trained on"),
            rows,
            align="llrrrl",
        ),
        "",
        "train img/s: the run's own training steps (the compiling first step and evaluation "
        "excluded, every attempt summed), as `results.json` records them. Runs trained on "
        "different devices, or at different times on a shared machine, are not timed alike.",
        "",
    ]
    points = {run.name: (timed[run.name], run.top1) for run in runs if timed[run.name]}
    if points:
        plots.save(
            plots.scatter_plot(
                points,
                "training images per second (measured)",
                "test top-1",
                "Accuracy vs measured training throughput",
            ),
            os.path.join(plots_dir, THROUGHPUT_PLOT),
        )
        lines += [f"![accuracy vs measured training throughput]({rel}/{THROUGHPUT_PLOT})", ""]
    return lines


def _codecarbon_cells(energy: dict[str, Any] | None) -> tuple[str, str]:
    measured = (energy or {}).get("codecarbon")
    if not isinstance(measured, dict):
        return "n/a", "not recorded (run from before energy metering)"
    if measured.get("kwh") is None:
        return "n/a", f"not measured: {measured.get('reason', 'no reason recorded')}"
    methods = ", ".join(f"{c}: {m}" for c, m in measured.get("methods", {}).items())
    label = f"{measured['kind']} ({methods})"
    if not measured.get("covers_all_attempts", True):
        label += (
            f"; {measured['attempts_metered']} of {measured['attempts']} attempts metered, "
            "the sum misses the others"
        )
    return f"{measured['kwh']:.2e}", label


def energy_section(runs: list[Run], footprints: dict[str, carbon.Footprint]) -> list[str]:
    """Each run's codecarbon kWh (labelled measured, partly measured or estimated by how
    codecarbon got its power) beside the table estimate the Results table shows."""
    rows = []
    for run in runs:
        kwh, label = _codecarbon_cells(run.results.get("energy"))
        rows.append((run.name, kwh, label, f"{footprints[run.name].kwh:.2e}"))
    return [
        "### Energy: codecarbon beside the table estimate",
        "",
        table(
            ("run", "codecarbon kWh", "how codecarbon got it", "table estimate kWh"),
            rows,
            align="lrlr",
        ),
        "",
        "codecarbon kWh: codecarbon's offline tracker around training on the chief process. "
        "'measured' means energy counters (RAPL for CPUs, NVML for NVIDIA GPUs); 'estimated' "
        "means codecarbon could not read them (a container without RAPL access, say) and "
        "scaled the CPU's TDP instead. RAM is always codecarbon's estimate. Table estimate: "
        "the Results table's kWh, wall time x the device's table power (never metered).",
        "",
    ]
