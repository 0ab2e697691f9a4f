"""codecarbon around a training attempt: the method it used is labelled (counters vs its TDP
fallback), a failing codecarbon never fails a run, non-chief processes do not track, and a
resumed run sums its attempts. codecarbon's tracker is replaced by a fake that reports chosen
hardware and energy, so no test depends on this machine's RAPL or GPUs."""

import json
import os
import sys
import types

import gin
import pytest

from harness.measure import carbon, energy_tracker
from harness.train import launch

codecarbon = pytest.importorskip("codecarbon")


# codecarbon's hardware classes are recognised by name, as in codecarbon 3.3.2.
class CPU:
    def __init__(self, mode: str) -> None:
        self._mode = mode


class RAM:
    pass


class NvidiaGPUDevice:
    pass


class GPU:
    def __init__(self) -> None:
        self.devices = types.SimpleNamespace(devices=[NvidiaGPUDevice(), NvidiaGPUDevice()])


def _emissions(kwh: float, seconds: float) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        energy_consumed=kwh,
        emissions=kwh * 0.4,
        duration=seconds,
        cpu_power=30.0,
        gpu_power=0.0,
        ram_power=5.0,
        tracking_mode="machine",
    )


@pytest.fixture
def fake_tracker(monkeypatch):
    """Installs a fake OfflineEmissionsTracker; returns the list of trackers it creates."""
    created = []

    def install(hardware, data, fail_start=False):
        class FakeTracker:
            def __init__(self, **kwargs):
                self.kwargs = kwargs
                self._hardware = hardware
                self.final_emissions_data = None
                created.append(self)

            def start(self):
                if fail_start:
                    raise OSError("permission denied: /sys/class/powercap")

            def stop(self):
                self.final_emissions_data = data

        monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", FakeTracker)
        return created

    return install


def _track(enabled: bool = True) -> dict:
    with energy_tracker.track_attempt(enabled) as energy:
        pass
    return energy.section


def test_rapl_counters_are_labelled_measured(fake_tracker, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    created = fake_tracker([CPU("intel_rapl"), RAM()], _emissions(0.002, 120.0))
    section = _track()
    assert section["kind"] == "measured"
    assert section["kwh"] == 0.002
    assert section["duration_s"] == 120.0
    assert section["methods"] == {"cpu": "RAPL", "ram": "estimate from memory size"}
    # Offline, fixed country, quiet, no output file, no lock (whose signal handlers would
    # replace the trainer's pre-emption guard).
    kwargs = created[0].kwargs
    assert kwargs["country_iso_code"] == energy_tracker.TRACKER_COUNTRY
    assert kwargs["output_methods"] == []
    assert kwargs["allow_multiple_runs"] is True
    assert kwargs["log_level"] == "critical"
    assert os.listdir(tmp_path) == []


def test_the_tdp_fallback_is_labelled_an_estimate(fake_tracker):
    fake_tracker([CPU("constant"), RAM()], _emissions(0.001, 60.0))
    section = _track()
    assert section["kind"] == "estimated"
    assert section["methods"]["cpu"].startswith("estimate from TDP")


def test_nvml_with_a_tdp_cpu_is_partly_measured(fake_tracker):
    fake_tracker([CPU("cpu_load"), GPU(), RAM()], _emissions(0.5, 600.0))
    section = _track()
    assert section["kind"] == "partly measured"
    assert section["methods"]["gpu"] == "NVML"
    assert section["methods"]["cpu"] == "estimate from TDP x CPU load"


def test_a_codecarbon_that_cannot_start_is_not_measured_and_the_block_still_runs(fake_tracker):
    fake_tracker([CPU("intel_rapl")], None, fail_start=True)
    ran = []
    with energy_tracker.track_attempt(True) as energy:
        ran.append(True)
    assert ran == [True]
    assert energy.section["kind"] == "not measured"
    assert energy.section["kwh"] is None
    assert "powercap" in energy.section["reason"]


def test_a_codecarbon_without_a_reading_is_not_measured(fake_tracker):
    fake_tracker([CPU("intel_rapl")], None)
    section = _track()
    assert section["kind"] == "not measured"
    assert "no emissions data" in section["reason"]


def test_a_missing_codecarbon_is_not_measured(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import codecarbon -> ImportError
    section = _track()
    assert section["kind"] == "not measured"
    assert "could not start" in section["reason"]


def test_the_blocks_own_error_propagates_with_the_energy_it_used(fake_tracker):
    fake_tracker([CPU("intel_rapl")], _emissions(0.003, 30.0))
    with pytest.raises(KeyError, match="boom"), energy_tracker.track_attempt(True) as energy:
        raise KeyError("boom")
    assert energy.section["kwh"] == 0.003


def test_non_chief_processes_do_not_track(fake_tracker):
    created = fake_tracker([CPU("intel_rapl")], _emissions(0.002, 1.0))
    section = _track(enabled=False)
    assert created == []
    assert section == {"kind": "not measured", "kwh": None, "reason": "not the chief process"}


def _attempt(kwh: float | None, kind: str = "measured") -> dict:
    if kwh is None:
        return {"from_step": 0}  # killed before its reading was recorded
    methods = {"cpu": "RAPL" if kind == "measured" else "estimate from TDP (50% of the CPU's TDP)"}
    return {
        "energy": {"kind": kind, "kwh": kwh, "duration_s": 10.0, "methods": methods, "tool": "t"}
    }


def test_a_resumed_run_sums_its_metered_attempts_and_says_what_is_missing():
    total = energy_tracker.run_energy(
        [_attempt(0.001), _attempt(None), _attempt(0.004, "estimated")], process_count=1
    )
    assert total["kwh"] == pytest.approx(0.005)
    assert total["duration_s"] == 20.0
    assert total["kind"] == "estimated"  # the weakest attempt decides
    assert total["attempts"] == 3
    assert total["attempts_metered"] == 2
    assert total["covers_all_attempts"] is False
    assert total["kg_co2e"] == pytest.approx(0.005 * carbon.DEFAULT_GRID.kg_per_kwh)
    assert total["methods"]["cpu"] == "RAPL / estimate from TDP (50% of the CPU's TDP)"


def test_a_multi_host_run_says_only_the_chief_host_is_metered():
    total = energy_tracker.run_energy([_attempt(0.001)], process_count=4)
    assert "chief's host only, of 4" in total["hosts_metered"]


def test_results_put_codecarbon_beside_the_table_estimate():
    devices = {"platform": "cpu", "kind": "cpu", "count": 8, "process_count": 1}
    section = energy_tracker.results_section([_attempt(0.002)], devices, wall_seconds=3600.0)
    assert section["codecarbon"]["kind"] == "measured"
    assert section["codecarbon"]["kwh"] == 0.002
    table = carbon.run_footprint(3600.0, devices)
    assert section["table"] == {
        "kind": "estimated",
        "kwh": table.kwh,
        "kg_co2e": table.kg_co2e,
        "method": table.method,
    }
    # One CPU socket for an hour at the table's power and default PUE.
    cpu = carbon.lookup_device("CPU")
    assert table.kwh == pytest.approx(cpu.avg_watts * carbon.DEFAULT_PUE.pue / 1000)


def test_no_attempt_tracked_is_not_measured_with_the_reason():
    section = energy_tracker.run_energy(
        [{"energy": energy_tracker.not_measured("not the chief process")}], process_count=1
    )
    assert section["kind"] == "not measured"
    assert section["reason"] == "not the chief process"


@pytest.mark.slow
def test_a_training_run_records_its_energy_in_results_and_attempts(fake_tracker, tmp_path):
    fake_tracker([CPU("intel_rapl"), RAM()], _emissions(0.0015, 9.0))
    workdir = str(tmp_path / "run")
    tiny = [
        "VitSpec.num_layers=1",
        "TrainSpec.num_epochs=None",
        "TrainSpec.num_steps=2",
        "DataSpec.eval_split='test[:200]'",
    ]
    try:
        payload = launch.train(["gin/cpu/vit.gin"], tiny, workdir)
    finally:
        gin.clear_config()
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["energy"] == payload["energy"]
    measured = payload["energy"]["codecarbon"]
    assert (measured["kind"], measured["kwh"], measured["methods"]["cpu"]) == (
        "measured",
        0.0015,
        "RAPL",
    )
    assert measured["covers_all_attempts"] is True
    with open(os.path.join(workdir, "attempts.json")) as f:
        assert json.load(f)["attempts"][0]["energy"]["kwh"] == 0.0015
    assert payload["energy"]["table"]["kwh"] > 0
