"""The figures runs and reports draw: expert-by-class heatmaps, accuracy curves and trade-offs.

Each function returns a matplotlib Figure; `save` writes PNGs for reports and
`figure_to_array` turns a figure into an image for TensorBoard.
"""

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: reports and TensorBoard images, never a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness import files

DPI = 110
# Sideways nudge between series with error bars on a log2 x axis, in octaves.
DODGE_OCTAVES = 0.06


def figure_to_array(figure: Figure) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a rendered figure; closes the figure."""
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    plt.close(figure)
    return rgba[..., :3].copy()


def save(figure: Figure, path: str) -> None:
    """Writes the PNG atomically, and only to a regular file or a new path (files.replacing)."""
    with files.replacing(path) as temporary:
        figure.savefig(temporary, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(figure)


def expert_class_heatmap(
    counts: np.ndarray, title: str, class_names: Sequence[str] | None = None
) -> Figure:
    """Rows: classes; columns: experts; cell: share of that class's expert selections."""
    counts = np.asarray(counts, dtype=np.float64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-12)
    num_classes, num_experts = shares.shape
    figure, axes = plt.subplots(figsize=(1.2 + 0.35 * num_experts, 1.0 + 0.3 * num_classes))
    image = axes.imshow(shares, aspect="auto", cmap="viridis", vmin=0.0)
    axes.set_xlabel("expert")
    axes.set_ylabel("class")
    axes.set_xticks(range(num_experts))
    axes.set_yticks(range(num_classes))
    if class_names is not None:
        axes.set_yticklabels(class_names, fontsize=7)
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, label="share of the class's selections")
    return figure


def load_heatmap(
    loads: Mapping[str, Sequence[float]], dead: Mapping[str, Sequence[int]], title: str
) -> Figure:
    """Rows: MoE layers; columns: experts; cell: the expert's load share, an x on the dead.
    Layers with fewer experts than the widest leave their extra cells blank."""
    names = list(loads)
    width = max(len(v) for v in loads.values())
    shares = np.full((len(names), width), np.nan)
    for row, name in enumerate(names):
        shares[row, : len(loads[name])] = loads[name]
    figure, axes = plt.subplots(
        figsize=(min(2.0 + 0.35 * width, 16.0), min(1.2 + 0.35 * len(names), 16.0))
    )
    image = axes.imshow(shares, aspect="auto", cmap="viridis", vmin=0.0)
    if shares.size <= 1024:  # a mark per dead expert while the cells are big enough to see
        for row, name in enumerate(names):
            for expert in dead.get(name, []):
                axes.text(expert, row, "x", ha="center", va="center", color="red", fontsize=8)
    axes.set_xlabel("expert")
    if width <= 32:
        axes.set_xticks(range(width))
    axes.set_yticks(range(len(names)))
    axes.set_yticklabels(names, fontsize=7)
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, label="load share (x: dead)")
    return figure


def _label(axes: Axes, xlabel: str, ylabel: str, title: str, legend: bool) -> None:
    """The axis labels, title, grid and (optionally) legend every trade-off plot shares."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if legend:
        axes.legend(fontsize=8)


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    errors: Mapping[str, Sequence[float]] | None = None,
    reference: tuple[str, float] | None = None,
    xticks: Sequence[float] | None = None,
) -> Figure:
    """One line per named (xs, ys) series, with optional error bars, a dashed horizontal
    (label, y) reference line and x ticks at `xticks` (e.g. the shot counts 1, 5, 10, 25).

    On a log-x axis with error bars, each series is nudged sideways by a few percent of an
    octave so that bars at the same x do not hide each other; the caption should say so.
    """
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    for index, (name, (xs, ys)) in enumerate(series.items()):
        if errors and name in errors:
            if logx:
                nudge = 2.0 ** (DODGE_OCTAVES * (index - (len(series) - 1) / 2))
                xs = [x * nudge for x in xs]
            axes.errorbar(xs, ys, yerr=errors[name], marker="o", capsize=3, label=name)
        else:
            axes.plot(xs, ys, marker="o", markersize=3, label=name)
    if reference is not None:
        label, y = reference
        axes.axhline(y, color="grey", linestyle="--", linewidth=1, label=label)
    if logx:
        axes.set_xscale("log", base=2)
    if xticks is not None:
        axes.set_xticks(list(xticks), labels=[f"{x:g}" for x in xticks])
        axes.minorticks_off()
    _label(axes, xlabel, ylabel, title, legend=True)
    return figure


def scatter_plot(
    points: Mapping[str, tuple[float, float]],
    xlabel: str,
    ylabel: str,
    title: str,
    errors: Mapping[str, float] | None = None,
    diagonal: str | None = None,
) -> Figure:
    """Labelled points, e.g. accuracy against GFLOPs per image, one per model, with optional
    vertical error bars and a dashed y = x line labelled `diagonal`."""
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    rightmost = max(x for x, _ in points.values())
    for name, (x, y) in points.items():
        if errors and name in errors:
            axes.errorbar([x], [y], yerr=[errors[name]], marker="o", capsize=3)
        else:
            axes.scatter([x], [y], s=30)
        # The rightmost label goes on the left of its point so that it stays inside the frame.
        left = x == rightmost and len(points) > 1
        axes.annotate(
            name,
            (x, y),
            textcoords="offset points",
            xytext=(-5, 4) if left else (5, 4),
            ha="right" if left else "left",
            fontsize=8,
        )
    axes.margins(x=0.12, y=0.12)
    if diagonal is not None:
        # Spans both axes' ranges, so it shows even when every point lies far below it.
        low = min(min(axes.get_xlim()), min(axes.get_ylim()))
        high = max(max(axes.get_xlim()), max(axes.get_ylim()))
        axes.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        axes.annotate(diagonal, (high, high), ha="right", va="bottom", fontsize=7, color="grey")
    _label(axes, xlabel, ylabel, title, legend=False)
    return figure


def seed_curves_plot(
    groups: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
    xlabel: str,
    ylabel: str,
    title: str,
    logy: bool = False,
) -> Figure:
    """One colour per named group, one line per (xs, ys) in it: e.g. every seed of a run."""
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, curves) in enumerate(groups.items()):
        colour = colours[index % len(colours)]
        for seed, (xs, ys) in enumerate(curves):
            count = f"{len(curves)} seed{'s' if len(curves) != 1 else ''}"
            label = f"{name} ({count})" if seed == 0 else None
            axes.plot(xs, ys, color=colour, marker="o", markersize=2, alpha=0.8, label=label)
    if logy:
        axes.set_yscale("log")
    _label(axes, xlabel, ylabel, title, legend=True)
    return figure


def distribution_plot(
    histograms: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    title: str,
) -> Figure:
    """Step histograms of named (bin_edges, counts) distributions, each normalised to its
    share of the total, overlaid on one axis."""
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    for name, (edges, counts) in histograms.items():
        total = float(sum(counts)) or 1.0
        axes.stairs([c / total for c in counts], edges, label=name, linewidth=1.5)
    _label(axes, xlabel, "share of images", title, legend=True)
    return figure
