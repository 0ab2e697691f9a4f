"""The report's Transfer section: few-shot linear probes, out-of-distribution top-1 and shape
bias, per run, with the plots the papers show (accuracy vs shots; OOD vs in-distribution top-1).

Each table, and its plot, appears only when some run has its data; a report of runs without any
transfer result has no Transfer section. Shared by the comparison report (report.py) and the
suite's claims report (claims.py).
"""

import os
from collections.abc import Sequence

from harness.reporting import plots
from harness.reporting.markdown import code_span, escape, table
from harness.reporting.transfer_data import FROM_FILE, RunTransfer

FEWSHOT_PLOT = "fewshot_vs_shots.png"
OOD_PLOT = "ood_vs_in_distribution.png"
# The usual order of the ViT-22B and V-MoE papers' robustness tables; other sets follow, sorted.
OOD_ORDER = ("imagenet_v2", "imagenet2012_real", "imagenet_r", "imagenet_a", "imagenet_sketch")
# How each known set is scored (harness/transfer/ood.py); any other set: plain top-1.
OOD_SCORING = {
    "imagenet_r": "argmax over its 200 classes only (the other logits masked)",
    "imagenet_a": "argmax over its 200 classes only (the other logits masked)",
    "imagenet2012_real": "correct if any of the image's ReaL labels; images without labels "
    "are not counted",
}


def _fewshot_table(transfers: Sequence[RunTransfer]) -> str:
    rows = [
        (
            t.name,
            r.dataset,
            r.setting,
            r.shots,
            f"{r.mean:.4f} ± {r.std:.4f}",
            r.num_seeds,
            f"{r.l2_reg:g}",
        )
        for t in transfers
        for r in t.fewshot.rows
    ]
    header = ("run", "dataset", "setting", "shots", "top-1 (mean ± std)", "seeds", "l2")
    return table(header, rows, align="lllrrrr")


def _fewshot_plot(transfers: Sequence[RunTransfer], path: str) -> None:
    series, errors = {}, {}
    for t in transfers:
        for r in t.fewshot.rows:
            key = f"{t.name} {r.dataset} ({r.setting})"
            xs, ys = series.setdefault(key, ([], []))
            xs.append(r.shots)
            ys.append(r.mean)
            errors.setdefault(key, []).append(r.std)
    plots.save(
        plots.line_plot(
            series,
            "training examples per class (shots)",
            "few-shot test top-1",
            "Few-shot linear probe accuracy vs shots",
            logx=True,
            errors=errors,
            xticks=sorted({r.shots for t in transfers for r in t.fewshot.rows}),
        ),
        path,
    )


def fewshot_lines(transfers: Sequence[RunTransfer], plots_dir: str, rel: str) -> list[str]:
    with_fewshot = [t for t in transfers if t.fewshot is not None and t.fewshot.rows]
    if not with_fewshot:
        return []
    _fewshot_plot(with_fewshot, os.path.join(plots_dir, FEWSHOT_PLOT))
    lines = [
        "### Few-shot linear probe",
        "",
        _fewshot_table(with_fewshot),
        "",
        f"![few-shot accuracy vs shots]({rel}/{FEWSHOT_PLOT})",
        "",
        "Setting: *in-domain* when the probe's images come from the dataset the run trained on "
        "(its classes are not new to the model), *transfer* otherwise; each run's reasons are "
        "listed below. The plot has one line "
        "per run and dataset; error bars are the sample std over seeds, and lines are nudged "
        "sideways by a few percent of an octave so their bars do not hide each other. "
        "How each run was measured, and the command that regenerates its numbers:",
        "",
    ]
    for t in with_fewshot:
        source = (
            f"from {t.fewshot.source} (the explicit `harness.fewshot` command; it takes "
            "precedence over results.json)"
            if t.fewshot.source == FROM_FILE
            else f"from {t.fewshot.source} (the evaluation during training)"
        )
        description = escape(t.fewshot.description or "no method recorded")
        lines.append(f"- {escape(t.name)}, {source}: {description}")
        lines += [f"  - {escape(setting)}" for setting in t.fewshot.settings]
        lines.append(f"  - regenerate: {code_span(t.fewshot.command)}")
    return [*lines, ""]


def _ood_names(transfers: Sequence[RunTransfer]) -> list[str]:
    names = {o.name for t in transfers for o in t.ood}
    known = [n for n in OOD_ORDER if n in names]
    return known + sorted(names - set(known))


def ood_lines(transfers: Sequence[RunTransfer], plots_dir: str, rel: str) -> list[str]:
    with_ood = [t for t in transfers if t.ood]
    if not with_ood:
        return []
    names = _ood_names(with_ood)
    rows, points = [], {}
    for t in with_ood:
        by_name = {o.name: o for o in t.ood}
        cells = [
            f"{by_name[n].top1:.4f} ({by_name[n].correct:,}/{by_name[n].counted:,})"
            if n in by_name
            else "n/a"
            for n in names
        ]
        rows.append((t.name, f"{t.in_distribution_top1:.4f}", *cells))
        for o in t.ood:
            points[f"{t.name}: {o.name}"] = (t.in_distribution_top1, o.top1)
    plots.save(
        plots.scatter_plot(
            points,
            "in-distribution top-1 (the run's own evaluation split)",
            "out-of-distribution top-1",
            "Out-of-distribution vs in-distribution accuracy",
            diagonal="y = x",
        ),
        os.path.join(plots_dir, OOD_PLOT),
    )
    header = ("run", "in-distribution top-1", *names)
    sets = {o.name: o for t in with_ood for o in t.ood}
    lines = [
        "### Out-of-distribution top-1",
        "",
        table(header, rows, align="l" + "r" * (len(header) - 1)),
        "",
        f"![OOD vs in-distribution top-1]({rel}/{OOD_PLOT})",
        "",
        "Cells: top-1 (correct / images counted) of the run's weights on each whole test "
        "set; in-distribution top-1 is the run's final evaluation (`results.json`). The "
        "plot has one point per run and set; the dashed line is no drop from in-distribution. "
        "Sets:",
        "",
    ]
    for name in names:
        scoring = OOD_SCORING.get(name, "plain top-1 over the 1000 ImageNet classes")
        lines.append(
            f"- {escape(name)}: TFDS {code_span(sets[name].tfds_name)} split "
            f"{code_span(sets[name].split)}; {scoring}."
        )
    lines += ["", "Regenerate (the command that wrote each run's results.json):", ""]
    lines += [f"- {escape(t.name)}: {code_span(t.command)}" for t in with_ood]
    return [*lines, ""]


def shape_bias_lines(transfers: Sequence[RunTransfer]) -> list[str]:
    with_bias = [t for t in transfers if t.shape_bias is not None]
    if not with_bias:
        return []
    rows = [
        (
            t.name,
            f"{t.shape_bias.shape_bias:.4f}",
            f"{t.shape_bias.shape_hits:,}",
            f"{t.shape_bias.texture_hits:,}",
            f"{t.shape_bias.conflict_images:,}",
        )
        for t in with_bias
    ]
    header = ("run", "shape bias", "shape hits", "texture hits", "cue-conflict images")
    lines = [
        "### Shape bias",
        "",
        table(header, rows, align="lrrrr"),
        "",
        "Shape bias = shape hits / (shape hits + texture hits) on the cue-conflict stimuli of "
        "Geirhos et al. 2019 (TFDS `geirhos_conflict_stimuli`): the 1000 ImageNet "
        "probabilities averaged into the 16 categories, images whose shape and texture agree "
        "left out, decisions that are neither category not counted (1.0: all shape, like "
        "humans at about 0.96; 0.0: all texture).",
        "",
        "Regenerate (the command that wrote each run's results.json):",
        "",
        *[f"- {escape(t.name)}: {code_span(t.command)}" for t in with_bias],
    ]
    return [*lines, ""]


def transfer_section(
    transfers: Sequence[RunTransfer], plots_dir: str, rel: str, report_command: str
) -> list[str]:
    """Markdown lines of the Transfer section (none when no run has a transfer result); its
    plots go to `plots_dir`, linked as `rel`/NAME."""
    body = (
        fewshot_lines(transfers, plots_dir, rel)
        + ood_lines(transfers, plots_dir, rel)
        + shape_bias_lines(transfers)
    )
    if not body:
        return []
    return [
        "## Transfer",
        "",
        "How the models transfer beyond their training task, per run. The tables and plots "
        f"below are redrawn from the runs' files by `{report_command}`.",
        "",
        *body,
    ]
