"""`python -m harness.fewshot` on a real tiny run: fewshot.json's contents, accuracies above
chance, nothing else in the run directory touched; and usage errors as one line."""

import json
import os
import subprocess
import sys

import gin
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from harness.cli import fewshot as fewshot_cli
from harness.data import fewshot_datasets
from harness.data.fewshot_datasets import FewShotDataset
from harness.errors import UsageError
from harness.runtime import restore
from harness.runtime.steps import apply_model
from harness.train import launch
from harness.transfer import features, fewshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = [
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=8",
    "DataSpec.eval_split='test[:512]'",
]


def _mtimes(run_dir: str) -> dict[str, int]:
    found = {}
    for folder, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, run_dir)] = os.stat(path).st_mtime_ns
    return found


def _run_main(args: list[str], argv: list[str]) -> None:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["fewshot", *argv])
    fewshot_cli.main(args)


@pytest.mark.slow
def test_fewshot_on_a_tiny_run(tmp_path, monkeypatch, capsys):
    run_dir = str(tmp_path / "vit")
    launch.train(["gin/cpu/vit.gin"], SHORT, run_dir)
    gin.clear_config()
    # Slices keep feature extraction to seconds; the protocol is the same on whole splits.
    monkeypatch.setitem(
        fewshot_datasets.FEWSHOT_DATASETS,
        "fashion_mnist",
        FewShotDataset("fashion_mnist", "train[:3000]", "test[:1000]"),
    )
    before = _mtimes(run_dir)
    _run_main([run_dir], ["--datasets=fashion_mnist", "--shots=1,5", "--seeds=2"])
    printed = capsys.readouterr().out
    after = _mtimes(run_dir)
    assert after.pop("fewshot.json")
    assert after == before  # Nothing else in the run directory was written.

    with open(os.path.join(run_dir, "fewshot.json")) as f:
        payload = json.load(f)
    assert set(payload) == {"command", "method", "results", "summary"}
    assert payload["command"].startswith(f"python -m harness.fewshot {run_dir} ")
    method = payload["method"]
    assert method["datasets"]["fashion_mnist"]["setting"] == "in-domain"
    assert "in-domain" in method["settings"]["fashion_mnist"]
    assert method["shots"] == [1, 5] and method["seeds"] == [0, 1]
    assert len(payload["results"]) == 2 * 2  # shots x seeds, one l2
    for result in payload["results"]:
        assert 0.0 <= result["accuracy"] <= 1.0
    summary = payload["summary"]
    assert set(summary) == {fewshot.fewshot_tag("fashion_mnist", s) for s in (1, 5)}
    for row in summary.values():
        assert row["num_seeds"] == 2 and row["l2_reg"] == 1024.0
        assert row["mean"] > 0.1, summary  # 10 classes: chance is 0.1
    assert summary["fewshot/fashion_mnist/5shot"]["std"] >= 0.0
    # The printed table: a header, then one 'mean ± std' row per shot count.
    table = printed[printed.index("shots") :].splitlines()
    assert table[0].split() == ["shots", "fashion_mnist"]
    assert [line.split()[0] for line in table[1:3]] == ["1", "5"]
    mean = summary["fewshot/fashion_mnist/1shot"]["mean"]
    assert f"{mean:.4f} ±" in table[1]
    assert np.isfinite(mean)

    # The features are the classifier head's input: the head applied to them gives the logits.
    run = restore.load_trained(run_dir)
    images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, *run.sharded.image_shape)))
    model = run.sharded.model
    pooled = features.pre_logits(model, run.params, images)
    logits, _ = apply_model(model, run.params, images, rng=None)
    head = run.params["head"]
    assert pooled.shape == (4, run.sharded.experiment.model.vit.model_dims)
    np.testing.assert_allclose(
        pooled @ head["linear"]["w"] + head["bias"]["b"], logits, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--shots=0"], "--shots=0 must all be >= 1"),
        (["--seeds=0"], "--seeds=0 must be >= 1"),
        (["--datasets=no_such_set"], "unknown"),
    ],
)
def test_bad_flags_are_usage_errors(tmp_path, argv, match):
    with pytest.raises(UsageError, match=match):
        _run_main([str(tmp_path)], argv)


def test_a_directory_without_a_run_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"no experiment\.json"):
        _run_main([str(tmp_path)], [])
    (tmp_path / "experiment.json").write_text("{}")
    with pytest.raises(UsageError, match="no checkpoint"):
        _run_main([str(tmp_path)], [])
    assert sorted(os.listdir(tmp_path)) == ["experiment.json"]


def test_shots_zero_is_one_line_and_exit_2(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "harness.fewshot", str(tmp_path), "--shots=0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert process.returncode == 2, process.stderr
    assert len(process.stderr.splitlines()) == 1, process.stderr
    assert process.stderr.startswith("error: --shots=0")
