"""The report's Transfer section on hand-made run directories (no training): few-shot, OOD and
shape-bias tables carry the runs' numbers and labels, missing sections are left out, plots are
written, and the suite's claims report shows the same section per seed run."""

import json
import re
import types

import pytest

from harness.reporting import claims, report, transfer_data

COMMAND = "python -m harness.report runs/a -o r.md"
IMAGENET_R = {"tfds_name": "imagenet_r", "split": "test"}


def _results(top1: float, **sections) -> dict:
    return {
        "run": {
            "family": "vit",
            "gin_files": ["gin/cpu/vit.gin"],
            "gin_params": [],
            "config": "",
            "devices": {
                "count": 1,
                "kind": "cpu",
                "platform": "cpu",
                "process_count": 1,
                "host": "test",
            },
            "versions": {"jax": "0.4.26"},
        },
        "eval": {"eval/top1": top1},
        "model": {"params_total": 1000, "params_active": 1000, "gflops_per_image": 0.01},
        "train": {"wall_seconds": 60.0},
        **sections,
    }


def _fewshot(summary: dict[tuple[str, int], tuple[float, float]], command: str) -> dict:
    """A harness.fewshot payload: (dataset, shots) -> (mean, std) over 3 seeds at l2 1024."""
    settings = {"fashion_mnist": "in-domain", "cifar10": "transfer"}
    datasets = {d for d, _ in summary}
    return {
        "command": command,
        "method": {
            "description": f"probe measured by {command}",
            "datasets": {d: {"setting": settings[d], "classes": None} for d in datasets},
            "settings": {d: f"{d}: {settings[d]} because of the test" for d in datasets},
        },
        "results": [],
        "summary": {
            f"fewshot/{d}/{s}shot": {"mean": m, "std": sd, "num_seeds": 3, "l2_reg": 1024.0}
            for (d, s), (m, sd) in summary.items()
        },
    }


FILE_FEWSHOT = _fewshot(
    {("fashion_mnist", 1): (0.5, 0.03), ("fashion_mnist", 5): (0.625, 0.0125)},
    "python -m harness.fewshot runs/vit --shots=1,5",
)
TRAINING_FEWSHOT = _fewshot(
    {("cifar10", 1): (0.25, 0.05), ("cifar10", 10): (0.375, 0.02)}, "python -m harness.run vmoe"
)


def _write_run(path, results: dict, fewshot_file: object = None) -> str:
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    if fewshot_file is not None:
        text = fewshot_file if isinstance(fewshot_file, str) else json.dumps(fewshot_file)
        (path / transfer_data.FEWSHOT_FILE).write_text(text)
    return str(path)


def _ood(name: str, correct: int, counted: int) -> dict:
    return {
        "top1": correct / counted,
        "correct": correct,
        "counted": counted,
        "tfds_name": name,
        "split": "test",
    }


@pytest.fixture
def runs(tmp_path):
    """vit: fewshot.json AND an older results.json payload (the file must win), one OOD set;
    vmoe: few-shot from training, two OOD sets, shape bias; plain: no transfer result."""
    root = tmp_path / "runs"
    vit = _results(0.75, fewshot=TRAINING_FEWSHOT, ood={"imagenet_v2": _ood("imagenet_v2", 6, 10)})
    vmoe = _results(
        0.8,
        fewshot=TRAINING_FEWSHOT,
        ood={"imagenet_r": _ood("imagenet_r", 50, 200), "imagenet_v2": _ood("imagenet_v2", 7, 10)},
        shape_bias={
            "shape_bias": 0.25,
            "shape_hits": 30,
            "texture_hits": 90,
            "conflict_images": 1120,
        },
    )
    return {
        "vit": _write_run(root / "vit", vit, FILE_FEWSHOT),
        "vmoe": _write_run(root / "vmoe", vmoe),
        "plain": _write_run(root / "plain", _results(0.7)),
    }


def _report(tmp_path, run_dirs: list[str]) -> str:
    output = tmp_path / "out" / "compare.md"
    report.write_report(run_dirs, str(output), COMMAND, batch_sizes=[], repeats=1)
    return output.read_text()


def _section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of any level."""
    return markdown.split(heading + "\n", 1)[1].split("\n#", 1)[0]


def _rows(text: str) -> list[list[str]]:
    """The body rows of the first markdown table in `text`, as stripped cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]


def test_fewshot_table_has_each_run_dataset_and_shot_with_setting_and_l2(runs, tmp_path):
    markdown = _report(tmp_path, [runs["vit"], runs["vmoe"], runs["plain"]])
    fewshot = _section(markdown, "### Few-shot linear probe")
    expected = []
    for name, payload in (("vit", FILE_FEWSHOT), ("vmoe", TRAINING_FEWSHOT)):
        for tag, row in payload["summary"].items():
            _, dataset, shots = tag.split("/")
            setting = payload["method"]["datasets"][dataset]["setting"]
            mean_std = f"{row['mean']:.4f} ± {row['std']:.4f}"
            expected.append(
                [name, dataset, setting, shots.removesuffix("shot"), mean_std, "3", "1024"]
            )
    assert _rows(fewshot) == expected
    # vit's fewshot.json is used, not its results.json payload; each source is named.
    assert "vit, from fewshot.json (the explicit `harness.fewshot` command" in fewshot
    assert 'vmoe, from results.json["fewshot"] (the evaluation during training)' in fewshot
    assert "fashion_mnist: in-domain because of the test" in fewshot
    assert f"regenerate: `{FILE_FEWSHOT['command']}`" in fewshot
    assert f"regenerate: `{TRAINING_FEWSHOT['command']}`" in fewshot
    regenerate = markdown.split("## Regenerate", 1)[1]
    assert FILE_FEWSHOT["command"] in regenerate
    assert "plain" not in fewshot


def test_ood_table_sets_beside_in_distribution_top1_and_shape_bias(runs, tmp_path):
    markdown = _report(tmp_path, [runs["vit"], runs["vmoe"], runs["plain"]])
    ood = _section(markdown, "### Out-of-distribution top-1")
    header = next(line for line in ood.splitlines() if line.startswith("|"))
    assert [c.strip() for c in header.split("|")[1:-1]] == [
        "run",
        "in-distribution top-1",
        "imagenet_v2",
        "imagenet_r",
    ]
    assert _rows(ood) == [
        ["vit", "0.7500", "0.6000 (6/10)", "n/a"],
        ["vmoe", "0.8000", "0.7000 (7/10)", "0.2500 (50/200)"],
    ]
    assert "imagenet_r: TFDS `imagenet_r` split `test`; argmax over its 200 classes" in ood
    assert "- vit: `python -m harness.run --gin_file=gin/cpu/vit.gin" in ood
    bias = _section(markdown, "### Shape bias")
    assert _rows(bias) == [["vmoe", "0.2500", "30", "90", "1,120"]]


def test_plots_are_written_and_linked(runs, tmp_path):
    markdown = _report(tmp_path, [runs["vit"], runs["vmoe"]])
    for name in ("fewshot_vs_shots.png", "ood_vs_in_distribution.png"):
        assert (tmp_path / "out" / "compare_plots" / name).stat().st_size > 1000, name
        assert f"](compare_plots/{name})" in markdown


def test_sections_without_data_are_left_out(runs, tmp_path):
    assert "## Transfer" not in _report(tmp_path, [runs["plain"]])
    only_fewshot = _write_run(tmp_path / "runs" / "probed", _results(0.7), FILE_FEWSHOT)
    markdown = _report(tmp_path, [only_fewshot, runs["plain"]])
    assert "### Few-shot linear probe" in markdown
    assert "### Out-of-distribution" not in markdown and "### Shape bias" not in markdown
    assert not (tmp_path / "out" / "compare_plots" / "ood_vs_in_distribution.png").exists()


def test_corrupt_fewshot_file_falls_back_to_results_with_a_warning(tmp_path, capsys):
    path = _write_run(tmp_path / "runs" / "vit", _results(0.7, fewshot=TRAINING_FEWSHOT), "{no")
    fewshot = _section(_report(tmp_path, [path]), "### Few-shot linear probe")
    assert "fewshot.json: corrupt or incomplete" in capsys.readouterr().err
    assert [row[1] for row in _rows(fewshot)] == ["cifar10", "cifar10"]
    assert 'from results.json["fewshot"]' in fewshot


def test_malformed_summary_tag_costs_the_fewshot_table_only(tmp_path, capsys):
    bad = json.loads(json.dumps(FILE_FEWSHOT))
    bad["summary"] = {"fewshot/5shot": bad["summary"]["fewshot/fashion_mnist/5shot"]}
    results = _results(0.7, ood={"imagenet_v2": _ood("imagenet_v2", 6, 10)})
    markdown = _report(tmp_path, [_write_run(tmp_path / "runs" / "vit", results, bad)])
    assert "is not fewshot/<dataset>/<s>shot" in capsys.readouterr().err
    assert "### Few-shot linear probe" not in markdown
    assert _rows(_section(markdown, "### Out-of-distribution top-1")) == [
        ["vit", "0.7000", "0.6000 (6/10)"]
    ]


def test_fewshot_file_name_is_the_one_the_command_writes():
    from harness.cli import fewshot

    assert transfer_data.FEWSHOT_FILE == fewshot.FEWSHOT_FILE


def test_claims_report_lists_transfer_per_seed_run(tmp_path):
    root = tmp_path / "suite"
    for seed, mean in ((0, 0.5), (1, 0.625)):
        payload = _fewshot(
            {("fashion_mnist", 1): (mean, 0.0)}, f"python -m harness.fewshot s{seed}"
        )
        _write_run(root / "vmoe" / f"seed_{seed}", _results(0.8), payload)
    # A single-seed held-out-class run answers no claim but is listed here like the others.
    heldout = _fewshot({("fashion_mnist", 1): (0.75, 0.0)}, "python -m harness.fewshot h0")
    _write_run(root / "vmoe_heldout" / "seed_0", _results(0.9), heldout)
    spec = types.SimpleNamespace(
        runs=[("vmoe", "gin/cpu/vmoe.gin", []), ("vmoe_heldout", "gin/cpu/vmoe.gin", [])],
        single_seed_runs=("vmoe_heldout",),
        seeds=2,
        root=str(root),
        report=str(tmp_path / "claims.md"),
        num_epochs=1.0,
        eval_split=None,
    )
    devices = {"count": 1, "kind": "cpu", "platform": "cpu", "cpu_count": 2, "host": "test"}
    text = claims.write_report(spec, {}, "python -m harness.suite demo", devices)
    fewshot = _section(text, "### Few-shot linear probe")
    assert [(row[0], row[4]) for row in _rows(fewshot)] == [
        ("vmoe/seed_0", "0.5000 ± 0.0000"),
        ("vmoe/seed_1", "0.6250 ± 0.0000"),
        ("vmoe_heldout/seed_0", "0.7500 ± 0.0000"),
    ]
    assert re.search(r"\]\(claims_plots/fewshot_vs_shots\.png\)", text)
    assert (tmp_path / "claims_plots" / "fewshot_vs_shots.png").exists()
