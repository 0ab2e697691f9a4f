"""Energy and carbon: the formula against Patterson et al. 2021, device matching, the table."""

import json
import os
import pathlib

import pytest

from harness.measure import carbon
from harness.measure.carbon_defaults import GRID_T5_DATACENTER, GRID_USA, GRID_WORLD_AVERAGE
from harness.reporting import carbon_tables, markdown


def test_t5_figure_from_patterson_2021():
    # T5: 512 TPUv3 chips for 20 days at 310 W average, PUE 1.12, 0.545 kgCO2e/kWh -> 46.7 tCO2e.
    kwh = carbon.energy_kwh(hours=20 * 24, devices=512, avg_watts=310, pue=1.12)
    tonnes = carbon.carbon_kg(kwh, GRID_T5_DATACENTER.kg_per_kwh) / 1000
    assert tonnes == pytest.approx(46.7, rel=0.02)
    assert kwh / 1000 == pytest.approx(85.7, rel=0.02)  # the paper's 85.7 MWh


def test_energy_formula_exact_on_hand_example():
    # 2 h x 4 devices x 250 W x PUE 1.5 / 1000 = 3 kWh; x 0.5 kg/kWh = 1.5 kg.
    assert carbon.energy_kwh(2.0, 4, 250.0, 1.5) == 3.0
    assert carbon.carbon_kg(3.0, 0.5) == 1.5
    assert carbon.energy_kwh(0.0, 1, 100.0, 1.0) == 0.0


@pytest.mark.parametrize(
    ("kind", "row"),
    [
        ("cpu", "CPU"),
        ("TPU v2", "TPUv2"),
        ("TPU v3", "TPUv3"),
        ("TPU v4", "TPUv4"),
        ("TPUv3", "TPUv3"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100"),
        ("NVIDIA H200", "H200"),
        ("TPU v5 lite", "TPUv5e"),
        ("TPU v5e", "TPUv5e"),
        ("TPU v5", "TPUv5p"),
        ("TPU v5p", "TPUv5p"),
    ],
)
def test_device_kinds_map_to_rows(kind, row):
    found, matched = carbon.match_device_kind(kind)
    assert (found.name, matched) == (row, True)


@pytest.mark.parametrize(
    "kind", ["TPU v4 lite", "TPU v6 lite", "NVIDIA RTX A1000", "NVIDIA H2000", "gpu", "tpu", ""]
)
def test_unknown_kinds_fall_back_to_cpu_row(kind):
    found, matched = carbon.match_device_kind(kind)
    assert (found.name, matched) == ("CPU", False)


def test_measured_footprint_uses_wall_time_and_table_power():
    fp = carbon.measured_run_footprint(7200.0, "TPU v3", 8, pue=1.1, grid=0.5)
    assert fp.kind == "measured"
    assert (fp.device, fp.device_count, fp.avg_watts) == ("TPUv3", 8, 283.0)
    assert fp.hours == 2.0
    assert fp.kwh == pytest.approx(2.0 * 8 * 283.0 * 1.1 / 1000)
    assert fp.kg_co2e == pytest.approx(fp.kwh * 0.5)
    assert "measured time x table power" in fp.method
    assert "FALLBACK" not in fp.method


@pytest.mark.parametrize(
    ("kind", "row", "watts"),
    [
        ("cpu", "CPU", 85.0),
        ("NVIDIA H100 80GB HBM3", "H100", 700.0),
        ("NVIDIA A100-SXM4-40GB", "A100", 400.0),
    ],
)
def test_measured_footprint_rows(kind, row, watts):
    fp = carbon.measured_run_footprint(3600.0, kind, 1)
    assert (fp.device, fp.avg_watts) == (row, watts)
    assert fp.pue == carbon.DEFAULT_PUE.pue
    assert fp.grid_kg_per_kwh == carbon.DEFAULT_GRID.kg_per_kwh
    assert fp.kwh == pytest.approx(watts * carbon.DEFAULT_PUE.pue / 1000)


def test_measured_footprint_flags_unknown_kind():
    fp = carbon.measured_run_footprint(3600.0, "Mystery Accelerator 9000", 2)
    assert fp.device == "CPU"
    assert "FALLBACK" in fp.method
    assert "'Mystery Accelerator 9000'" in fp.method


def test_estimated_footprint_hours_from_flops():
    # 123e12 x 0.5 x 10 chips = 6.15e14 FLOP/s; 2.214e18 FLOPs / 6.15e14 = 3600 s = 1 h.
    fp = carbon.estimated_training_footprint(
        2.214e18, "TPUv3", 10, utilisation=0.5, pue=1.0, grid=1.0
    )
    assert fp.kind == "estimated"
    assert fp.utilisation == 0.5
    assert fp.hours == pytest.approx(1.0)
    assert fp.kwh == pytest.approx(10 * 283.0 / 1000)
    assert fp.kg_co2e == pytest.approx(fp.kwh)
    assert "utilisation 0.5" in fp.method
    assert "estimated" in fp.method


def test_estimated_footprint_default_utilisation_is_echoed_and_cpu_marked_rough():
    fp = carbon.estimated_training_footprint(1e15, "CPU", 1)
    assert fp.utilisation == carbon.DEFAULT_UTILISATION
    assert "ROUGH" in fp.method
    with pytest.raises(ValueError, match="not in the power table"):
        carbon.estimated_training_footprint(1e15, "Mystery Accelerator 9000", 1)


def test_markdown_table_has_every_row_with_sources():
    table = carbon_tables.device_table_markdown()
    for row in carbon.DEVICES:
        line = next(line for line in table.splitlines() if line.startswith(f"| {row.name} |"))
        assert row.power_source in line
        assert row.peak_source in line
    full = carbon_tables.defaults_markdown()
    for entry in (*carbon.PUES, *carbon.GRIDS):
        assert markdown.cell(entry.source) in full  # table cells are escaped


def test_required_rows_and_figures():
    rows = {row.name: row for row in carbon.DEVICES}
    assert set(rows) == {
        *("TPUv2", "TPUv3", "TPUv4", "TPUv5e", "TPUv5p"),
        *("V100", "A100", "H100", "H200", "CPU"),
    }
    assert (rows["TPUv3"].avg_watts, rows["TPUv3"].power_kind) == (283.0, "measured-average")
    assert (rows["A100"].avg_watts, rows["A100"].power_kind) == (400.0, "board/TDP")
    assert (rows["H100"].avg_watts, rows["H100"].power_kind) == (700.0, "board/TDP")
    assert rows["H100"].peak_flops == 989e12
    assert rows["CPU"].peak_is_rough
    assert carbon.DEFAULT_PUE.pue == 1.1
    assert (rows["H200"].avg_watts, rows["H200"].peak_flops) == (700.0, 989e12)
    assert (rows["TPUv5e"].peak_flops, rows["TPUv5p"].peak_flops) == (197e12, 459e12)


def test_unpublished_tpu_v5_power_is_a_flagged_proxy_that_overstates():
    # Google publishes no TPU v5 power: the stand-in is the table's largest board power, and
    # every footprint that uses it says so in its method.
    largest = max(row.avg_watts for row in carbon.DEVICES if row.power_kind == "board/TDP")
    for name in ("TPUv5e", "TPUv5p"):
        row = carbon.lookup_device(name)
        assert row.power_kind == "proxy (unpublished)"
        assert row.avg_watts == largest
        assert "no published figure" in row.power_source
        fp = carbon.measured_run_footprint(
            3600.0, "TPU v5 lite" if name == "TPUv5e" else "TPU v5", 4
        )
        assert fp.device == name
        assert "proxy (unpublished)" in fp.method


def test_grid_figures_match_codecarbon_data_files():
    codecarbon = pytest.importorskip("codecarbon")
    data = pathlib.Path(codecarbon.__file__).parent / "data" / "private_infra"
    per_source = json.loads((data / "carbon_intensity_per_source.json").read_text())
    assert GRID_WORLD_AVERAGE.kg_per_kwh == per_source["world_average"] / 1000
    mix = json.loads((data / "global_energy_mix.json").read_text())
    assert GRID_USA.kg_per_kwh == pytest.approx(mix["USA"]["carbon_intensity"] / 1000)


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: carbon.energy_kwh(-1.0, 1, 100.0, 1.1), "hours"),
        (lambda: carbon.energy_kwh(1.0, 0, 100.0, 1.1), "devices"),
        (lambda: carbon.energy_kwh(1.0, 1, 100.0, 0.9), "pue"),
        (lambda: carbon.carbon_kg(1.0, -0.1), "grid_kg_per_kwh"),
        (lambda: carbon.measured_run_footprint(-5.0, "cpu", 1), "wall_seconds"),
        (lambda: carbon.measured_run_footprint(5.0, "cpu", 0), "device_count"),
        (lambda: carbon.estimated_training_footprint(1e18, "TPUv3", 1, 0.0), "utilisation"),
        (lambda: carbon.estimated_training_footprint(1e18, "TPUv3", 1, 1.5), "utilisation"),
        (lambda: carbon.estimated_training_footprint(1e18, "TPUv3", 0), "device_count"),
        (lambda: carbon.estimated_training_footprint(-1.0, "TPUv3", 1), "total_train_flops"),
    ],
)
def test_invalid_inputs_raise_one_line_value_error(call, named):
    with pytest.raises(ValueError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(named)


def test_codecarbon_offline_tracks_without_writing_files(tmp_path, monkeypatch):
    pytest.importorskip("codecarbon")
    monkeypatch.chdir(tmp_path)
    with carbon.track_with_codecarbon("USA") as reading:
        sum(range(10_000))
    # Only the shape is checked: codecarbon's numbers depend on this machine.
    assert reading.kwh is not None and reading.kwh >= 0
    assert reading.kg_co2e is not None and reading.kg_co2e >= 0
    assert reading.duration_s is not None and reading.duration_s >= 0
    assert "OfflineEmissionsTracker" in reading.method
    assert os.listdir(tmp_path) == []


def test_codecarbon_writes_csv_only_where_asked(tmp_path, monkeypatch):
    pytest.importorskip("codecarbon")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "carbon"
    with carbon.track_with_codecarbon("FRA", output_dir=out):
        pass
    assert os.listdir(tmp_path) == ["carbon"]
    assert os.listdir(out) == ["emissions.csv"]
    with pytest.raises(ValueError, match="country_iso_code"), carbon.track_with_codecarbon("XXX"):
        pass
