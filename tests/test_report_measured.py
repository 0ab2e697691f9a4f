"""The report's measured side from fake run directories (results.json only, nothing trained):
accuracy vs measured training images/s beside accuracy vs GFLOPs, and codecarbon's kWh beside
the table estimate, each labelled."""

import json
import re

import pytest

from harness.reporting import measured_section, report
from harness.reporting.runs import footprint_of, load_run


def _fake_run(root, name, family, top1, gflops, images_per_second, energy=None) -> str:
    path = root / name
    path.mkdir()
    results = {
        "run": {
            "family": family,
            "gin_files": [f"gin/cpu/{family}.gin"],
            "gin_params": [],
            "devices": {
                "platform": "cpu",
                "kind": "cpu",
                "count": 8,
                "process_count": 1,
                "host": "testhost",
            },
            "versions": {"jax": "0.4.26"},
        },
        "model": {"params_total": 1000, "params_active": 800, "gflops_per_image": gflops},
        "eval": {"eval/top1": top1},
        "train": {"wall_seconds": 1800.0, "images_per_second": images_per_second},
    }
    if energy is not None:
        results["energy"] = energy
    (path / "results.json").write_text(json.dumps(results))
    return str(path)


def _metered(kind, kwh, cpu_method, covers=True):
    return {
        "codecarbon": {
            "kind": kind,
            "kwh": kwh,
            "methods": {"cpu": cpu_method, "ram": "estimate from memory size"},
            "attempts": 2,
            "attempts_metered": 2 if covers else 1,
            "covers_all_attempts": covers,
        }
    }


@pytest.fixture(scope="module")
def report_markdown(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    runs = tmp_path / "runs"
    runs.mkdir()
    dirs = [
        _fake_run(runs, "vit", "vit", 0.81, 0.02, 950.0, _metered("measured", 0.0123, "RAPL")),
        _fake_run(
            runs,
            "vmoe",
            "vmoe",
            0.83,
            0.021,
            410.0,
            _metered("estimated", 0.0456, "estimate from TDP", covers=False),
        ),
        # From before metering, and without a training throughput (evaluated weights).
        _fake_run(runs, "old", "widenet", 0.79, 0.03, 0.0),
    ]
    output = str(tmp_path / "out" / "compare.md")
    report.write_report(dirs, output, "python -m harness.report ...", [], 1)
    with open(output) as f:
        return f.read(), dirs, tmp_path / "out" / "compare_plots"


def _rows(markdown: str, heading: str) -> dict[str, list[str]]:
    section = markdown.split(heading, 1)[1].split("\n#", 1)[0]
    return {
        cells[0]: cells
        for line in section.splitlines()
        if re.match(r"^\| (vit|vmoe|old) \|", line)
        for cells in [[c.strip() for c in line.split("|")[1:-1]]]
    }


def test_accuracy_is_shown_against_measured_training_throughput(report_markdown):
    markdown, _, plots_dir = report_markdown
    rows = _rows(markdown, "### Accuracy vs measured training throughput")
    assert rows["vit"][1:5] == ["vit", "0.0200", "950.0", "0.8100"]
    assert rows["vmoe"][1:5] == ["vmoe", "0.0210", "410.0", "0.8300"]
    assert rows["old"][3] == "n/a"
    assert measured_section.FLOPS_CAVEAT in markdown
    plot = plots_dir / measured_section.THROUGHPUT_PLOT
    assert plot.stat().st_size > 1000
    assert f"compare_plots/{measured_section.THROUGHPUT_PLOT}" in markdown
    # Beside, not instead of, the GFLOPs plot.
    assert (plots_dir / "accuracy_vs_gflops.png").stat().st_size > 1000


def test_codecarbon_kwh_sits_beside_the_table_estimate_labelled(report_markdown):
    markdown, dirs, _ = report_markdown
    rows = _rows(markdown, "### Energy: codecarbon beside the table estimate")
    assert rows["vit"][1] == "1.23e-02"
    assert rows["vit"][2] == "measured (cpu: RAPL, ram: estimate from memory size)"
    assert rows["vmoe"][1] == "4.56e-02"
    assert rows["vmoe"][2].startswith("estimated (cpu: estimate from TDP")
    assert "1 of 2 attempts metered" in rows["vmoe"][2]
    assert rows["old"][1:3] == ["n/a", "not recorded (run from before energy metering)"]
    for path in dirs:
        run = load_run(path)
        assert _rows(markdown, "### Energy")[run.name][3] == f"{footprint_of(run).kwh:.2e}"


def test_a_run_codecarbon_could_not_measure_says_why(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    energy = {"codecarbon": {"kind": "not measured", "kwh": None, "reason": "codecarbon failed"}}
    run = load_run(_fake_run(root, "vit", "vit", 0.8, 0.02, 900.0, energy))
    lines = measured_section.energy_section([run], {"vit": footprint_of(run)})
    row = next(line for line in "\n".join(lines).splitlines() if line.startswith("| vit |"))
    assert "| n/a | not measured: codecarbon failed |" in row
