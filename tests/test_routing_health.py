"""Routing health (harness/measure/routing_health.py): the definitions on hand-made routers,
the statistics the MoE layers sow for them, and the tracker's window and one-time warning."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from praxis import base_layer, pax_fiddle

from harness.measure import routing_health
from models.moe import expert_choice, soft_routing
from models.moe.layers import SparseMoe
from models.specs import MoeSpec
from models.stats import STATS

D, H = 8, 16


def _layer(num_experts: int, **spec_fields: Any) -> SparseMoe:
    spec = MoeSpec(**{"num_experts": num_experts, "capacity_factor": 1.0, **spec_fields})
    config = pax_fiddle.Config(
        SparseMoe, name="moe", input_dims=D, hidden_dims=H, num_experts=num_experts, spec=spec
    )
    return base_layer.instantiate(config)


def _stats(layer: SparseMoe, params: Any, x: jax.Array) -> dict[str, np.ndarray]:
    """The layer's sown stats in eval mode (no router noise)."""
    context = base_layer.JaxContext.HParams(do_eval=True)
    with base_layer.JaxContext.new_context(hparams=context):
        _, collections = layer.apply({"params": params}, x, mutable=[STATS])
    return {name: np.asarray(value[0]) for name, value in collections[STATS].items()}


def _params(layer: SparseMoe, x: jax.Array) -> dict[str, Any]:
    rngs = {"params": jax.random.PRNGKey(1), "random": jax.random.PRNGKey(2)}
    return dict(layer.init(rngs, x)["params"])


def _tokens(seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), (2, 16, D))


@pytest.mark.parametrize("num_experts", [2, 8])
def test_uniform_router_has_entropy_log_e_and_no_dead_experts(num_experts: int) -> None:
    layer = _layer(num_experts, num_selected_experts=1)
    x = _tokens()
    params = _params(layer, x)
    params["router"] = jnp.zeros_like(params["router"])  # every token: softmax = 1/E
    stats = _stats(layer, params, x)
    assert stats["router_entropy"] == pytest.approx(math.log(num_experts), rel=1e-5)
    health = routing_health.LayerHealth(
        load=[1.0 / num_experts] * num_experts, router_entropy=float(stats["router_entropy"])
    )
    assert health.router_entropy_normalised == pytest.approx(1.0, rel=1e-5)
    assert health.load_entropy == pytest.approx(1.0)
    assert health.dead_experts == []
    assert health.collapse() is None


def test_collapsed_router_sends_every_token_to_expert_0_and_is_called_collapsed() -> None:
    num_experts = 8
    layer = _layer(num_experts, num_selected_experts=1, capacity_factor=float(num_experts))
    x = _tokens()
    params = _params(layer, x)
    # A router that scores expert 0 far above the rest for every token: x @ W is large for
    # e=0 because W[:, 0] follows the tokens' common direction (all-positive inputs).
    x = jnp.abs(x)
    router = np.zeros((D, num_experts), np.float32)
    router[:, 0] = 50.0
    params["router"] = jnp.asarray(router)
    stats = _stats(layer, params, x)
    load = stats["expert_load"]
    np.testing.assert_allclose(load, np.eye(num_experts)[0], atol=1e-6)
    assert stats["router_entropy"] < 1e-3
    assert stats["dropped_fraction"] == pytest.approx(0.0)  # capacity E: room for everyone
    health = routing_health.LayerHealth(
        load=load.tolist(), router_entropy=float(stats["router_entropy"])
    )
    assert health.dead_experts == list(range(1, num_experts))
    assert health.collapse() == "7 of 8 experts dead (load share < 0.0125)"
    assert health.to_json()["dead_experts"] == list(range(1, num_experts))


def test_one_dominant_expert_collapses_by_load_entropy_without_dead_experts() -> None:
    shares = [0.9] + [0.1 / 7] * 7  # each minor expert 0.0143 > the 0.0125 dead threshold
    health = routing_health.LayerHealth(load=shares)
    assert health.dead_experts == []
    expected = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1 / 7)) / math.log(8)
    assert health.load_entropy == pytest.approx(expected)
    assert health.collapse().startswith("load entropy 0.25")


def test_a_few_dead_experts_are_listed_but_not_a_collapse() -> None:
    shares = np.full(8, 1 / 6)
    shares[[2, 5]] = 0.0
    health = routing_health.LayerHealth(load=shares.tolist())
    assert health.dead_experts == [2, 5]
    assert health.collapse() is None


def test_expert_choice_spread_is_0_for_identical_picks_and_1_for_disjoint_ones() -> None:
    tokens, experts, capacity = 16, 4, 4
    same = expert_choice.selection_spread(jnp.float32(capacity / tokens), tokens, experts, 4)
    disjoint = expert_choice.selection_spread(jnp.float32(1.0), tokens, experts, capacity)
    assert float(same) == pytest.approx(0.0)
    assert float(disjoint) == pytest.approx(1.0)
    collapsed = routing_health.LayerHealth(load=[0.25] * 4, expert_choice_spread=float(same))
    assert "the experts pick the same tokens" in collapsed.collapse()


def test_expert_choice_layer_reports_spread_from_its_picks() -> None:
    layer = _layer(4, router="expert_choice", num_selected_experts=1, noise_std=0.0)
    x = _tokens()
    params = _params(layer, x)
    # Every expert ranks the tokens by the same score: all four pick the same 4 of 16 tokens.
    params["router"] = jnp.ones_like(params["router"])
    stats = _stats(layer, params, x)
    assert stats["unrouted_fraction"] == pytest.approx(1 - 4 / 16)
    assert stats["expert_choice_spread"] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(stats["expert_load"], np.full(4, 0.25), rtol=1e-6)


def test_soft_dispatch_entropy_is_1_for_uniform_slots_and_0_for_one_token_slots() -> None:
    groups, tokens, experts, slots = 2, 8, 4, 2
    uniform = jnp.full((groups, tokens, experts, slots), 1.0 / tokens)
    one_token = jax.nn.one_hot(jnp.zeros((groups, experts, slots), jnp.int32), tokens, axis=1)
    assert float(soft_routing.dispatch_entropy(uniform)) == pytest.approx(1.0, rel=1e-5)
    assert float(soft_routing.dispatch_entropy(one_token)) == pytest.approx(0.0, abs=1e-6)


def test_soft_layer_reports_its_combine_entropy_and_dispatch_entropy() -> None:
    layer = _layer(4, router="soft", slots_per_expert=2)
    x = _tokens()
    params = _params(layer, x)
    params["router_scale"] = jnp.zeros_like(params["router_scale"])  # all logits 0
    stats = _stats(layer, params, x)
    assert stats["router_entropy"] == pytest.approx(math.log(4), rel=1e-5)
    assert stats["slot_dispatch_entropy"] == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(stats["expert_load"], np.full(4, 0.25), rtol=1e-5)


def _interval(load: list[float], entropy: float) -> dict[str, Any]:
    return {
        "train/loss": 1.0,
        "train/routing/expert_load/block_01": np.asarray(load),
        "train/routing/router_entropy/block_01": entropy,
        "train/routing/dropped_fraction/block_01": 0.1,
    }


def test_tracker_averages_a_window_and_warns_once_when_a_layer_collapses() -> None:
    experts = 4
    healthy, collapsed = [0.25] * experts, [1.0, 0.0, 0.0, 0.0]
    tracker = routing_health.HealthTracker()
    lines = []
    step = 0
    for _ in range(routing_health.WINDOW_LOGS):
        step += 10
        scalars = _interval(healthy, math.log(experts))
        written, warnings = tracker.observe(step, scalars)
        lines += warnings
    # The vectors and health scalars left the logged scalars; dropped stays where it was.
    assert set(scalars) == {"train/loss", "train/routing/dropped_fraction/block_01"}
    assert written["routing/block_01/entropy"] == pytest.approx(1.0)
    assert written["routing/block_01/load/expert_03"] == pytest.approx(0.25)
    assert written["routing/block_01/dead_experts"] == 0.0
    # One collapsed interval is not enough: averaged over the window, expert 1 keeps 4/5 of
    # its healthy share. It is dead once the window's mean falls below 0.1/E = 0.025.
    collapsed_logs = 0
    while not lines:
        step += 10
        collapsed_logs += 1
        written, warnings = tracker.observe(step, _interval(collapsed, 0.0))
        lines += warnings
    healthy_logs = routing_health.WINDOW_LOGS - collapsed_logs
    assert healthy_logs * 0.25 / routing_health.WINDOW_LOGS < 0.1 / experts
    assert (healthy_logs + 1) * 0.25 / routing_health.WINDOW_LOGS >= 0.1 / experts
    assert lines == [
        f"warning: routing collapse in block_01: 3 of 4 experts dead (load share < 0.025) "
        f"(at step {step})"
    ]
    assert written["routing/block_01/collapsed"] == 1.0
    for _ in range(3):  # still collapsed: no new line
        step += 10
        assert tracker.observe(step, _interval(collapsed, 0.0))[1] == []
    summary = tracker.summary("top_k k=1 C=1.0 vanilla")
    assert summary["router"] == "top_k k=1 C=1.0 vanilla"
    assert summary["first_collapse_step"] == {"block_01": step - 30}
    layer = summary["layers"]["block_01"]
    assert layer["dead_experts"] == [1, 2, 3]
    assert layer["dropped_fraction"] == pytest.approx(0.1)
    assert layer["router_entropy"] == 0.0


def test_logged_interval_averages_load_vectors_element_wise() -> None:
    from harness.train.trainer import MetricsInterval

    interval = MetricsInterval()
    interval.add({"train/loss": 1.0, "train/routing/expert_load/block_01": np.array([1.0, 0.0])})
    interval.add({"train/loss": 3.0, "train/routing/expert_load/block_01": np.array([0.5, 0.5])})
    scalars = interval.mean_and_reset()
    assert scalars["train/loss"] == 2.0 and isinstance(scalars["train/loss"], float)
    np.testing.assert_allclose(scalars["train/routing/expert_load/block_01"], [0.75, 0.25])


def test_a_dense_model_has_no_routing_health() -> None:
    tracker = routing_health.HealthTracker()
    assert tracker.observe(1, {"train/loss": 1.0}) == ({}, [])
    assert tracker.summary("top_k k=2 C=1.05 BPR") == {}
    assert routing_health.from_evaluation({"eval/top1": 0.5}, {}, "soft") == ({}, {})


def test_router_description_names_vanilla_or_bpr_and_the_eval_values() -> None:
    moe = MoeSpec(capacity_factor=1.05, batch_priority=False, eval_batch_priority=True)
    assert routing_health.describe_router(moe, evaluation=False) == "top_k k=2 C=1.05 vanilla"
    eval_moe = MoeSpec(eval_capacity_factor=0.5, eval_num_selected_experts=1, batch_priority=True)
    assert routing_health.describe_router(eval_moe, evaluation=True) == "top_k k=1 C=0.5 BPR"
    assert routing_health.describe_router(moe, evaluation=True).endswith("BPR")


def _run(routing_health_payload: Any, name: str = "moe_run") -> Any:
    from harness.reporting.runs import Run

    results = {"routing_health": routing_health_payload}
    return Run(name=name, path=f"/runs/{name}", results=results, sweep=None, scalars={})


def _section(run: Any, tmp_path: Any) -> list[str]:
    from harness.reporting.routing_health_section import routing_health_section

    return routing_health_section(run, str(tmp_path), "plots")


def test_report_shows_a_table_row_and_a_heatmap_per_layer(tmp_path: Any) -> None:
    healthy = routing_health.LayerHealth(load=[0.25] * 4, router_entropy=math.log(4) / 2)
    dead = routing_health.LayerHealth(
        load=[0.5, 0.5, 0.0, 0.0], router_entropy=0.0, dropped_fraction=0.125
    )
    payload = {
        "source": "training, mean load over logged steps 1..4",
        "router": "top_k k=2 C=1.05 BPR",
        "layers": {"block_01": healthy.to_json(), "block_03": dead.to_json()},
    }
    lines = _section(_run(payload), tmp_path)
    text = "\n".join(lines)
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in text.splitlines()
        if line.startswith("| block")
    }
    assert set(rows) == {"block_01", "block_03"}
    assert "| 4 | 0.250 | 0 | 1.000 | 0.500 |" in rows["block_01"]
    assert rows["block_01"].endswith("| no |")
    assert "| 2 (2, 3) | 0.500 | 0.000 | 0.125 |" in rows["block_03"]
    assert "2 of 4 experts dead (load share &lt; 0.025)" in rows["block_03"]
    assert "training, mean load over logged steps 1..4 with top_k k=2 C=1.05 BPR" in text
    assert "![load per expert per layer](plots/moe_run_routing_health.png)" in text
    png = tmp_path / "moe_run_routing_health.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "payload, expected",
    [
        ("not an object", "routing_health is malformed"),
        ({"layers": []}, "routing_health is malformed"),
        ({"layers": {"block_01": {"load": "0.5"}}}, "layer 'block_01': load is not a list"),
        ({"layers": {"block_01": {"load": [0.5, True]}}}, "bool, not a number"),
        ({"layers": {"block_01": {"load": [0.5, float("nan")]}}}, "outside"),
        ({"layers": {"block_01": {"load": [1.0], "dead_experts": [7]}}}, "not an expert index"),
        ({"layers": {"block_01": {"load": [1.0], "collapse": "x" * 1000}}}, "at most 300"),
    ],
)
def test_malformed_routing_health_is_skipped_with_a_warning(
    payload: Any, expected: str, tmp_path: Any, capsys: Any
) -> None:
    assert _section(_run(payload), tmp_path) == []
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and expected in err
    assert not list(tmp_path.iterdir())


def test_float32_rounding_just_outside_0_and_1_is_accepted(tmp_path: Any, capsys: Any) -> None:
    layer = routing_health.LayerHealth(load=[0.5, 0.5]).to_json()
    layer["unrouted_fraction"] = -3.7e-9  # 1 - mean(1.0) in float32
    layer["load"] = [1.0 + 1e-7, -1e-9]
    text = "\n".join(_section(_run({"layers": {"block_01": layer}}), tmp_path))
    assert "| block_01 | 2 | 1.000 |" in text and "| 0.000 |" in text
    assert capsys.readouterr().err == ""


def test_one_bad_layer_is_skipped_and_run_values_are_escaped(tmp_path: Any, capsys: Any) -> None:
    good = routing_health.LayerHealth(load=[0.5, 0.5]).to_json()
    good["collapse"] = "<script>alert(1)</script> | ![x](http://e)"
    payload = {"source": "# heading", "layers": {"block_01": good, "block_02": {"load": []}}}
    text = "\n".join(_section(_run(payload), tmp_path))
    assert "block_02" not in text and "block_02" in capsys.readouterr().err
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "\\| \\!\\[x\\](http://e)" in text
    assert "Measured on \\# heading." in text
