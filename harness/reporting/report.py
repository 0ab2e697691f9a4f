"""The comparison report: runs side by side as markdown, with PNG plots beside it.

Per run: family, parameters (total, active), GFLOPs per image, test top-1, inference
throughput and latency (all runs timed in this one process, on this process's devices),
training time, energy and carbon (measured wall time x the device's table power, and
codecarbon's reading beside it), accuracy against measured training throughput, routing
sweeps and expert-by-class heatmaps where the run has them, and the transfer section
(few-shot, out-of-distribution, shape bias; transfer_section.py). Every figure says how it was
measured, and the commands that regenerate the runs and the report are printed with it.
"""

import os
import shlex
from typing import Any

from harness import files, storage
from harness.errors import UsageError
from harness.measure import carbon, run_timing
from harness.reporting import (
    carbon_tables,
    measured_section,
    plots,
    routing_health_section,
    transfer_data,
    transfer_section,
)
from harness.reporting.markdown import code_span, escape, fenced, table
from harness.reporting.runs import Run, footprint_of, load_run, warn
from harness.reporting.transfer_data import FROM_FILE
from harness.run_dir import run_record


def _fmt_int(value: int) -> str:
    return f"{value:,}"


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def comparison_table(
    runs: list[Run], timings: dict[str, list[Any]], footprints: dict[str, carbon.Footprint]
) -> str:
    timing_batch = None
    for timed in timings.values():
        timing_batch = max(t.batch_size for t in timed)
    header = (
        "run",
        "family",
        "params total",
        "params active",
        "GFLOPs/img",
        "top-1",
        f"img/s (batch {timing_batch})",
        f"latency p50 / p90 ms (batch {timing_batch})",
        "train time s",
        "kWh",
        "kgCO2e",
    )
    rows = []
    for run in runs:
        model = run.results["model"]
        timed = {t.batch_size: t for t in timings.get(run.name, [])}.get(timing_batch)
        footprint = footprints[run.name]
        rows.append(
            (
                run.name,
                run.family,
                _fmt_int(model["params_total"]),
                _fmt_int(model["params_active"]),
                _fmt(model["gflops_per_image"], 4),
                _fmt(run.top1, 4),
                _fmt(timed.images_per_s if timed else None, 0),
                f"{_fmt(timed.p50_ms if timed else None, 2)} / "
                f"{_fmt(timed.p90_ms if timed else None, 2)}",
                _fmt(run.results["train"]["wall_seconds"], 0),
                f"{footprint.kwh:.2e}",
                f"{footprint.kg_co2e:.2e}",
            )
        )
    return table(header, rows, align="llrrrrrrrrr")


def timing_table(timings: dict[str, list[Any]]) -> str:
    rows = [
        (
            name,
            t.batch_size,
            f"{t.p50_ms:.2f}",
            f"{t.p90_ms:.2f}",
            f"{t.mean_ms:.2f}",
            f"{t.images_per_s:.0f}",
        )
        for name, timed in timings.items()
        for t in timed
    ]
    header = ("run", "batch", "p50 ms", "p90 ms", "mean ms", "img/s (at p50)")
    return table(header, rows, align="lrrrrr")


def sweep_section(run: Run, plots_dir: str, rel: str) -> list[str]:
    points = run.sweep["points"]
    series, rows = {}, []
    for p in points:
        key = f"{p['routing']} k={p['k']}"
        xs, ys = series.setdefault(key, ([], []))
        xs.append(p["capacity_factor"])
        ys.append(p["top1"])
        per_image = p.get("per_image_processed")
        rows.append(
            (
                p["routing"],
                p["k"],
                p["capacity_factor"],
                f"{p['top1']:.4f}",
                f"{p['dropped_fraction']:.3f}",
                f"{per_image['std']:.3f}" if per_image else "n/a",
                f"{p['gflops_per_image']:.4f}",
                f"{p['ms_per_batch_p50']:.2f}",
            )
        )
    header = (
        "routing",
        "k",
        "C",
        "top-1",
        "dropped",
        "per-image processed std",
        "GFLOPs/img",
        "ms/batch p50",
    )
    filename = f"{run.name}_capacity.png"
    plots.save(
        plots.line_plot(
            series,
            "inference capacity factor C",
            "test top-1",
            f"{run.name}: accuracy vs capacity, vanilla vs BPR",
            logx=True,
        ),
        os.path.join(plots_dir, filename),
    )
    trained = run.sweep["trained_routing"]
    return [
        f"### {escape(run.name)}: inference-time routing sweep",
        "",
        f"Trained with k={escape(trained['k'])}, C={escape(trained['capacity_factor'])}, "
        f"BPR={escape(trained['batch_priority'])}; evaluated at checkpoint step "
        f"{escape(run.sweep['checkpoint_step'])} on the full test split with other eval k, C "
        "and routing, same weights. Timing: " + escape(run.sweep["timing_method"]) + ".",
        "",
        f"![accuracy vs capacity]({rel}/{filename})",
        "",
        table(header, rows, align="lrrrrrrr"),
        "",
        "Per-image processed std: how unevenly the test images' expert assignments fit in "
        "capacity (0 = every image kept the same share).",
        "",
        f"Regenerate: {code_span(run.sweep['command'])}",
        "",
    ]


def heatmap_section(run: Run, plots_dir: str, rel: str) -> list[str]:
    counts = run.results.get("routing", {}).get("expert_class_counts", {})
    if not counts:
        return []
    lines = [f"### {escape(run.name)}: expert choices by class (first and last MoE block)", ""]
    for block, matrix in counts.items():
        filename = f"{run.name}_{block}_experts.png"
        plots.save(
            plots.expert_class_heatmap(matrix, f"{run.name} {block}"),
            os.path.join(plots_dir, filename),
        )
        lines.append(f"![{escape(block)}]({rel}/{filename})")
    load = run.results["routing"].get("expert_load", {})
    if load:
        lines += ["", "Per-expert load (share of top-k selections on the test split):", ""]
        lines += [f"- {escape(b)}: " + ", ".join(f"{x:.3f}" for x in v) for b, v in load.items()]
    return [*lines, ""]


def run_command(run: Run) -> str:
    info = run.results["run"]
    args = [f"--gin_file={f}" for f in info["gin_files"]]
    args += [f"--gin_param={p}" for p in info["gin_params"]]
    args.append(f"--workdir={run.path}")
    return "python -m harness.run " + " ".join(shlex.quote(a) for a in args)


def render(
    runs: list[Run],
    timings: dict[str, list[Any]],
    output: str,
    command: str,
) -> str:
    plots_dir = os.path.splitext(output)[0] + "_plots"
    os.makedirs(plots_dir, exist_ok=True)
    rel = os.path.basename(plots_dir)
    footprints = {run.name: footprint_of(run) for run in runs}
    lines = [
        f"# Comparison: {escape(', '.join(r.name for r in runs))}",
        "",
        f"Generated {run_record.timestamp()} by {code_span(command)}.",
        "",
        "## Results",
        "",
        comparison_table(runs, timings, footprints),
        "",
        "How each column is measured:",
        "- params, GFLOPs/img: definitions in `harness/measure/params_flops.py` (active = "
        "experts counted k of E; GFLOPs = analytic forward matmul FLOPs of one image, 2 per "
        "multiply-add).",
        "- top-1: the run's final evaluation on the full test split (`results.json`).",
    ]
    if timings:
        method = next(iter(timings.values()))[0].describe_method()
        lines.append(f"- img/s and latency: timed in this report's process; {method}.")
    else:
        lines.append("- img/s and latency: not timed (--notiming or no restorable checkpoint).")
    lines += [
        "- train time: the run's wall time (start-up, compilation and evaluation included).",
        f"- kWh, kgCO2e: {escape(next(iter(footprints.values())).method)}" if footprints else "",
        "",
    ]
    if timings:
        lines += ["### Inference timing, every batch size", "", timing_table(timings), ""]
        from harness.measure import inference

        peak = inference.peak_memory_bytes()
        lines += [
            "Peak device memory of this process while timing all runs: "
            + (
                f"{peak / 2**20:,.0f} MiB." if peak is not None else "not reported by this backend."
            ),
            "",
        ]
    points = {r.name: (r.results["model"]["gflops_per_image"], r.top1) for r in runs}
    plots.save(
        plots.scatter_plot(
            points, "GFLOPs per image (analytic)", "test top-1", "Accuracy vs compute"
        ),
        os.path.join(plots_dir, "accuracy_vs_gflops.png"),
    )
    lines += [f"![accuracy vs GFLOPs]({rel}/accuracy_vs_gflops.png)", ""]
    lines += measured_section.throughput_section(runs, plots_dir, rel)
    lines += measured_section.energy_section(runs, footprints)
    curves = {
        r.name: tuple(zip(*r.scalars["train/loss"], strict=True))
        for r in runs
        if r.scalars.get("train/loss")
    }
    if curves:
        plots.save(
            plots.line_plot(curves, "step", "train loss", "Training curves"),
            os.path.join(plots_dir, "training_curves.png"),
        )
        lines += ["## Training", "", f"![training curves]({rel}/training_curves.png)", ""]
    sparse = [
        r for r in runs if r.sweep or r.results.get("routing") or r.results.get("routing_health")
    ]
    if sparse:
        lines += ["## Routing", ""]
        for run in sparse:
            lines += routing_health_section.routing_health_section(run, plots_dir, rel)
            if run.sweep:
                lines += sweep_section(run, plots_dir, rel)
            lines += heatmap_section(run, plots_dir, rel)
    transfers = [transfer_data.read_transfer(run, run_command(run)) for run in runs]
    lines += transfer_section.transfer_section(transfers, plots_dir, rel, command)
    lines += ["## Environment", ""]
    for run in runs:
        info = run.results["run"]
        devices = info["devices"]
        lines.append(
            "- "
            + escape(
                f"{run.name}: {devices['count']} x {devices['kind']} ({devices['platform']}), "
                f"{devices['process_count']} process(es) on {devices['host']}; "
                + ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items()))
            )
        )
    report_devices = run_record.devices()
    lines += [
        f"- this report: {report_devices['count']} x {report_devices['kind']} "
        f"({report_devices['platform']}) on {report_devices['host']}",
        "",
        "## Energy and carbon assumptions",
        "",
        carbon_tables.device_table_markdown(),
        "",
        "## Regenerate",
        "",
        *fenced(
            [
                *[run_command(run) for run in runs],
                *[run.sweep["command"] for run in runs if run.sweep],
                *[
                    t.fewshot.command
                    for t in transfers
                    if t.fewshot and t.fewshot.source == FROM_FILE
                ],
                command,
            ],
            "sh",
        ),
        "",
        "TensorBoard overlays the runs: `tensorboard --logdir` on their common parent folder.",
        "",
    ]
    return "\n".join(lines)


def check_output(output: str) -> None:
    """Refuses an output path the report could not be written to, before any work or file."""
    if storage.is_url(output):
        # The markdown and its PNG plots are written with open() and matplotlib, locally;
        # os.path would make a folder named 'gs:' of a URL.
        raise UsageError(
            f"--output={output} is a URL; the report and its plots are written locally: name "
            "a local .md file and copy it afterwards (the run directories may be URLs)"
        )
    if os.path.isdir(output):
        raise UsageError(
            f"--output={output} is a directory; name a .md file, e.g. {output}/report.md"
        )
    files.check_replaceable(output)  # never a device, FIFO or symlink (-o /dev/null)
    parent = os.path.dirname(os.path.abspath(output))
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise UsageError(f"--output={output} cannot be written ({existing} is not writable)")


def write_report(
    run_dirs: list[str],
    output: str,
    command: str,
    batch_sizes: list[int],
    repeats: int,
    data_dir: str | None = None,
) -> None:
    """Reads the run directories, times them (unless `batch_sizes` is empty) and writes the
    markdown to `output` with its plots in OUTPUT_plots/."""
    check_output(output)
    runs = [run for run in (load_run(path) for path in run_dirs) if run is not None]
    if not runs:
        raise UsageError(
            "none of the run directories has a readable results.json; nothing to report"
        )
    timings = (
        run_timing.time_restored_runs(
            {r.name: r.path for r in runs}, batch_sizes, repeats, warn, data_dir
        )
        if batch_sizes
        else {}
    )
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    files.write_text_atomically(output, render(runs, timings, output, command))
