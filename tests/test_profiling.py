"""TrainSpec.profile_steps: which steps are traced, bad windows refused in one line, and a tiny
run that leaves a trace where TensorBoard's profile tab looks for it."""

import glob
import os
import sys
import types

import gin
import jax
import pytest

from harness.config import gin_config
from harness.config.experiment import Experiment, validate
from harness.config.experiment_file import spec_from_data
from harness.config.train_spec import TrainSpec
from harness.run_dir.events import read_scalars
from harness.train import profiling, trainer


@pytest.fixture
def calls(monkeypatch):
    """Records the profiler's start and stop calls instead of tracing."""
    seen = []
    monkeypatch.setattr(profiling.profiler, "start", lambda logdir: seen.append(("start", logdir)))
    monkeypatch.setattr(profiling.profiler, "stop", lambda: seen.append(("stop",)))
    return seen


def _drive(profiler: profiling.StepProfiler, steps: range, seen: list) -> list:
    """Which steps ran while a trace was open."""
    traced = []
    with profiler:
        for step in steps:
            profiler.before_step(step)
            if profiler.running:
                traced.append(step)
            profiler.after_step(step, jax.numpy.zeros(()))
    assert seen.count(("stop",)) == seen.count(("start", "wd")) <= 1
    return traced


def test_the_window_is_traced_once_into_the_workdir(calls):
    traced = _drive(profiling.StepProfiler("wd", (3, 2), enabled=True), range(1, 10), calls)
    assert traced == [3, 4]
    assert calls == [("start", "wd"), ("stop",)]


def test_a_resumed_attempt_traces_the_rest_of_the_window(calls):
    assert _drive(profiling.StepProfiler("wd", (3, 4), True), range(5, 10), calls) == [5, 6]


def test_a_window_past_the_end_is_closed_when_training_ends(calls):
    assert _drive(profiling.StepProfiler("wd", (4, 10), True), range(1, 6), calls) == [4, 5]
    assert calls[-1] == ("stop",)


def test_only_the_chief_traces_and_none_means_off(calls):
    assert _drive(profiling.StepProfiler("wd", (1, 2), enabled=False), range(1, 4), calls) == []
    assert _drive(profiling.StepProfiler("wd", None, enabled=True), range(1, 4), calls) == []
    assert calls == []


@pytest.mark.parametrize("window", [(0, 5), (3, 0), (3,), (1.5, 2), (True, 2)])
def test_a_bad_window_is_one_line_naming_it(window):
    with pytest.raises(ValueError, match=r"TrainSpec.profile_steps=.* must be \(first step"):
        TrainSpec(profile_steps=window)


def test_the_window_survives_experiment_json_as_a_list():
    spec = spec_from_data(TrainSpec, {"profile_steps": [10, 5]}, "train")
    assert spec.profile_steps == (10, 5)


def test_a_window_after_the_last_step_is_refused():
    with pytest.raises(ValueError, match=r"starts after the run's last step \(20\)"):
        profiling.check_window((21, 2), total_steps=20)
    profiling.check_window((20, 5), total_steps=20)  # ends past the run: the rest is traced


@pytest.mark.slow
def test_a_tiny_run_writes_a_trace_for_tensorboard(tmp_path):
    try:
        gin_config.parse_gin(
            ["gin/cpu/vit.gin"],
            [
                "VitSpec.num_layers=1",
                "TrainSpec.num_epochs=None",
                "TrainSpec.num_steps=3",
                "TrainSpec.profile_steps=(2, 1)",
                "DataSpec.eval_split='test[:200]'",
            ],
        )
        experiment = Experiment.from_gin()
    finally:
        gin.clear_config()
    assert experiment.train.profile_steps == (2, 1)
    run = trainer.Trainer(experiment, str(tmp_path), validate(experiment, jax.device_count()))
    run.run()
    traces = glob.glob(os.path.join(tmp_path, "plugins", "profile", "*", "*.xplane.pb"))
    assert len(traces) == 1
    assert os.path.getsize(traces[0]) > 1000
    # TensorBoard events are still written after the trace (jax's tracer must not break them).
    assert [step for step, _ in read_scalars(str(tmp_path))["train/loss"]] == [1, 3]
    # The profile tab's own converter (tensorboard-plugin-profile, in the lock) reads it.
    from tensorboard_plugin_profile.convert import raw_to_tool_data

    data, content_type = raw_to_tool_data.xspace_to_tool_data(traces, "overview_page^", {})
    assert content_type == "application/json" and len(data) > 100


def test_tensorflows_trace_switch_is_restored_after_jax_replaces_it(monkeypatch):
    module = types.ModuleType(profiling._TF_TRACE_MODULE)
    switch = module.enabled = lambda: False
    monkeypatch.setitem(sys.modules, profiling._TF_TRACE_MODULE, module)
    with profiling._tensorflow_trace_kept():
        module.enabled = True  # what jaxlib 0.4.26's tracer does
    assert module.enabled is switch
