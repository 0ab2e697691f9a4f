"""A planted router collapse in a tiny V-MoE: training prints one warning per collapsed layer,
TensorBoard and results.json carry the health per layer, `harness.evaluate` on the run's
checkpoint reports the same on the evaluation data, and the report shows it."""

import contextlib
import io
import json
import os
import re

import gin
import jax
import numpy as np
import pytest
from flax import traverse_util

from harness.reporting import report
from harness.reporting.runs import load_run
from harness.run_dir import events
from harness.train import evaluate_checkpoint as evaluate
from harness.train import launch
from harness.train import trainer as trainer_lib

SHORT = [
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=4",
    "TrainSpec.log_every_steps=1",
    "DataSpec.eval_split='test[:64]'",
    # Small enough that the planted router stays where it was put.
    "OptimizerSpec.learning_rate=1e-6",
    "OptimizerSpec.warmup_steps=0",
]
MOE_BLOCKS = ("block_01", "block_03")  # gin/cpu/vmoe.gin: Every-2 of 4 blocks, 8 experts, top-2
EXPERTS = 8


def plant_collapse(params: dict) -> dict:
    """Every token's top-2 becomes experts 0 and 1 in every MoE layer: the pre-MoE LayerNorm
    adds 10 along dimension 0 to every token, and only experts 0 and 1 score that dimension,
    so their logits (about 100 and 90) dwarf the rest (0) whatever the token."""
    flat = traverse_util.flatten_dict(params, sep="/")
    planted = dict(flat)
    for path, value in flat.items():
        if path.endswith("ff_layer/moe/router"):
            router = np.zeros(value.shape, np.float32)
            router[0, 0], router[0, 1] = 10.0, 9.0
            planted[path] = jax.device_put(router, value.sharding)
            bias_path = path.replace("moe/router", "layer_norm/bias")
            bias = np.zeros(flat[bias_path].shape, np.float32)
            bias[0] = 10.0
            planted[bias_path] = jax.device_put(bias, flat[bias_path].sharding)
    return traverse_util.unflatten_dict(planted, sep="/")


@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("runs") / "collapsed")
    original = trainer_lib.Trainer.init_state

    def planted_init_state(self):
        state = original(self)
        return state.replace(params=plant_collapse(state.params))

    trainer_lib.Trainer.init_state = planted_init_state
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            payload = launch.train(["gin/cpu/vmoe.gin"], SHORT, workdir)
    finally:
        trainer_lib.Trainer.init_state = original
        gin.clear_config()
    return workdir, payload, out.getvalue()


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning: routing collapse")]


@pytest.mark.slow
def test_training_warns_once_per_collapsed_layer_and_records_health(collapsed_run):
    workdir, payload, output = collapsed_run
    lines = _warnings(output)
    # Once per layer, at the first logged step, although every logged step is collapsed.
    assert lines == [
        f"warning: routing collapse in {block}: 6 of 8 experts dead (load share < 0.0125) "
        "(at step 1)"
        for block in MOE_BLOCKS
    ]
    health = payload["routing_health"]
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["routing_health"] == health
    assert health["first_collapse_step"] == {block: 1 for block in MOE_BLOCKS}
    assert health["source"] == "training, mean load over logged steps 1..4"
    assert health["router"] == "top_k k=2 C=1.05 BPR"  # gin/cpu/vmoe.gin
    for block in MOE_BLOCKS:
        layer = health["layers"][block]
        np.testing.assert_allclose(layer["load"], [0.5, 0.5] + [0.0] * 6, atol=1e-6)
        assert layer["dead_experts"] == [2, 3, 4, 5, 6, 7]
        assert layer["router_entropy_normalised"] < 1e-3
        assert layer["collapse"].startswith("6 of 8 experts dead")
    scalars = events.read_scalars(workdir)
    for block in MOE_BLOCKS:
        assert scalars[f"routing/{block}/dead_experts"] == [(s, 6.0) for s in (1, 2, 3, 4)]
        assert [v for _, v in scalars[f"routing/{block}/load/expert_00"]] == pytest.approx(
            [0.5] * 4
        )
        assert f"routing/{block}/entropy" in scalars
        assert f"routing/{block}/dropped_fraction" in scalars
    # The vectors went to per-expert tags, not to the raw train metrics.
    assert not any(tag.startswith("train/routing/expert_load") for tag in scalars)


@pytest.mark.slow
def test_evaluate_reports_the_same_health_on_the_evaluation_data(collapsed_run, tmp_path, capsys):
    workdir, _, _ = collapsed_run
    out = str(tmp_path / "evaluated")
    try:
        payload = evaluate.evaluate_checkpoint(["gin/cpu/vmoe.gin"], SHORT, workdir, out)
    finally:
        gin.clear_config()
    assert _warnings(capsys.readouterr().out) == [
        f"warning: routing collapse in {block}: 6 of 8 experts dead (load share < 0.0125) "
        "(on the evaluation data)"
        for block in MOE_BLOCKS
    ]
    health = payload["routing_health"]
    assert (health["source"], health["router"]) == ("evaluation data", "top_k k=2 C=1.05 BPR")
    assert health["layers"]["block_01"]["dead_experts"] == [2, 3, 4, 5, 6, 7]
    # Eval uses BPR with C=1.05 on 2 of 8 experts: most choices overflow capacity.
    assert health["layers"]["block_01"]["dropped_fraction"] > 0.5
    assert events.read_scalars(out)["routing/block_03/dead_experts"] == [(0, 6.0)]


@pytest.mark.slow
def test_report_shows_the_collapsed_layers(collapsed_run, tmp_path):
    workdir, _, _ = collapsed_run
    output = str(tmp_path / "report.md")
    markdown = report.render([load_run(workdir)], {}, output, "python -m harness.report")
    section = markdown.split("### collapsed: routing health per MoE layer", 1)[1]
    for block in MOE_BLOCKS:
        assert re.search(rf"\| {block} \| 8 \| 0\.500 \| 6 \(2, 3, 4, 5, 6, 7\) \|", section)
    assert (tmp_path / "report_plots" / "collapsed_routing_health.png").stat().st_size > 1000
