"""Issue 26: the report on a run directory with a malformed field skips that run, or drops
that section, with one warning line, and writes the report for the rest; it never stops on a
traceback (each case below was one)."""

import json
import math
import os

import pytest

from harness.reporting import report
from tests import run_dir_fixtures

SWEEP = {
    "trained_routing": {"k": 1, "capacity_factor": 1.0, "batch_priority": False},
    "checkpoint_step": 2,
    "timing_method": "t",
    "command": "python -m harness.sweep run",
    "points": [
        {
            "routing": "vanilla",
            "k": 1,
            "capacity_factor": 1.0,
            "top1": 0.5,
            "dropped_fraction": 0.0,
            "gflops_per_image": 0.01,
            "ms_per_batch_p50": 1.0,
        }
    ],
}
FEWSHOT = {
    "method": {"datasets": {"fashion_mnist": {"setting": "in-domain"}}},
    "summary": {
        "fewshot/fashion_mnist/5shot": {"mean": 0.5, "std": 0.1, "num_seeds": 3, "l2_reg": 1024.0}
    },
    "command": "python -m harness.fewshot run",
}


def _set(data: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data[key]
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()
ROUTING = {"expert_class_counts": {"block_0": [[1, 2], [3, 4]]}, "expert_load": {}}

# (results.json edit, what the one warning names): the run is skipped.
SKIPPED = {
    "no train section": ("train", _DELETE, "has no train.wall_seconds"),
    "string top-1": ("eval.eval/top1", "0.9", "eval/top1='0.9'"),
    "string params": ("model.params_total", "1e6", "params_total='1e6'"),
    "string wall time": ("train.wall_seconds", "10", "wall_seconds='10'"),
    "no devices": ("run.devices", _DELETE, "has no run.devices"),
    "no wall time": ("train.wall_seconds", _DELETE, "has no train.wall_seconds"),
    "versions a list": ("run.versions", ["jax"], "run.versions=['jax']"),
    "infinite top-1": ("eval.eval/top1", math.inf, "eval/top1=inf"),
}
# (results.json edit, what the one warning names): the section is dropped, the run shown.
DROPPED = {
    "heatmap not a matrix": (
        "routing",
        {"expert_class_counts": {"block_0": [[1, 2], [3]]}},
        "not a matrix",
    ),
    "block name with '/'": (
        "routing",
        {"expert_class_counts": {"../../escaped": [[1, 2], [3, 4]]}},
        "not a plain name",
    ),
    "energy kwh a string": ("energy", {"codecarbon": {"kwh": "x", "kind": "m"}}, "kwh"),
}


def _report(tmp_path, edit_run) -> str:
    good = run_dir_fixtures.minimal_run(tmp_path / "good")
    bad = run_dir_fixtures.minimal_run(tmp_path / "bad")
    edit_run(bad)
    output = str(tmp_path / "out" / "r.md")
    report.write_report([good, bad], output, "python -m harness.report good bad -o r.md", [], 1)
    with open(output) as f:
        return f.read()


def _warnings(capsys) -> list[str]:
    """The harness's own stderr lines (a library may log there too)."""
    err = capsys.readouterr().err.splitlines()
    return [line for line in err if line.startswith(("warning: ", "error: "))]


def _edit_results(run_dir: str, path: str, value) -> None:
    results_path = os.path.join(run_dir, "results.json")
    with open(results_path) as f:
        results = json.load(f)
    _set(results, path, value)
    with open(results_path, "w") as f:
        json.dump(results, f)


@pytest.mark.parametrize("case", list(SKIPPED))
def test_a_run_missing_what_the_report_needs_is_skipped_with_one_warning(tmp_path, capsys, case):
    path, value, named = SKIPPED[case]
    text = _report(tmp_path, lambda d: _edit_results(d, path, value))
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "skipping" in warnings[0] and named in warnings[0], warnings
    assert "# Comparison: good\n" in text  # the report goes on with the good run only


@pytest.mark.parametrize("case", list(DROPPED))
def test_a_malformed_optional_section_is_dropped_with_one_warning(tmp_path, capsys, case):
    path, value, named = DROPPED[case]
    text = _report(tmp_path, lambda d: _edit_results(d, path, value))
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and path in warnings[0] and named in warnings[0], warnings
    assert "# Comparison: good, bad\n" in text
    assert not os.path.exists(tmp_path / "escaped_experts.png")
    assert not [n for n in os.listdir(tmp_path / "out" / "r_plots") if "experts" in n]


def test_a_well_formed_heatmap_is_drawn(tmp_path, capsys):
    _report(tmp_path, lambda d: _edit_results(d, "routing", ROUTING))
    assert _warnings(capsys) == []
    assert "bad_block_0_experts.png" in os.listdir(tmp_path / "out" / "r_plots")


def _write(run_dir: str, name: str, payload) -> None:
    with open(os.path.join(run_dir, name), "w") as f:
        f.write(json.dumps(payload))  # allow_nan: Infinity, as a hostile file may hold


@pytest.mark.parametrize(
    "name, payload, named",
    [
        ("sweep.json", {**SWEEP, "points": [{**SWEEP["points"][0], "top1": None}]}, "top1"),
        (
            "sweep.json",
            {**SWEEP, "points": [{k: v for k, v in SWEEP["points"][0].items() if k != "top1"}]},
            "has no points[0].top1",
        ),
        (
            "fewshot.json",
            {
                **FEWSHOT,
                "summary": {
                    "fewshot/fashion_mnist/5shot": {
                        **FEWSHOT["summary"]["fewshot/fashion_mnist/5shot"],
                        "mean": math.inf,
                    }
                },
            },
            "mean=inf",
        ),
        (
            "fewshot.json",
            {
                **FEWSHOT,
                "summary": {
                    "fewshot/fashion_mnist/5shot": {
                        **FEWSHOT["summary"]["fewshot/fashion_mnist/5shot"],
                        "std": math.nan,
                    }
                },
            },
            "std=nan",
        ),
    ],
    ids=["sweep top1 null", "sweep point without top1", "few-shot inf", "few-shot nan"],
)
def test_a_malformed_sweep_or_fewshot_file_is_ignored_with_one_warning(
    tmp_path, capsys, name, payload, named
):
    text = _report(tmp_path, lambda d: _write(d, name, payload))
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and name in warnings[0] and named in warnings[0], warnings
    assert "# Comparison: good, bad\n" in text


def test_well_formed_sweep_and_fewshot_files_are_shown(tmp_path, capsys):
    def plant(run_dir):
        _write(run_dir, "sweep.json", SWEEP)
        _write(run_dir, "fewshot.json", FEWSHOT)

    text = _report(tmp_path, plant)
    assert _warnings(capsys) == []
    assert "inference-time routing sweep" in text and "python -m harness.fewshot run" in text


@pytest.mark.parametrize("kind", ["FIFO", "symlink to /dev/zero"])
def test_a_planted_event_file_costs_the_curves_with_one_warning(tmp_path, capsys, kind):
    def plant(run_dir):
        path = os.path.join(run_dir, "events.out.tfevents.1.host")
        if kind == "FIFO":
            os.mkfifo(path)
        else:
            os.symlink("/dev/zero", path)

    text = _report(tmp_path, plant)
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "no training curves" in warnings[0], warnings
    assert "not a regular file" in warnings[0]
    assert "# Comparison: good, bad\n" in text
