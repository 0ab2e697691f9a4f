"""Energy and carbon of training runs: one formula, a sourced defaults table, two kinds of figure.

    kWh    = hours x devices x avg_watts x PUE / 1000
    kgCO2e = kWh x grid kgCO2e/kWh

A "measured" footprint uses the run's real wall time times the table's power for its device: the
time is measured, the power is not (no power meter is read). An "estimated" footprint is for
paper-size configs that are not trained here: hours = FLOPs / (peak FLOP/s x utilisation), with
the utilisation a stated assumption. Every Footprint carries `kind` and a one-line `method` so a
report never shows a number without saying which it is.

`track_with_codecarbon` wraps codecarbon's OfflineEmissionsTracker for a live process; it is a
separate reading (codecarbon's own power model), not mixed into the table arithmetic.
"""

import contextlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.measure.carbon_defaults import (
    DEFAULT_GRID,
    DEFAULT_PUE,
    DEFAULT_UTILISATION,
    DEVICES,
    FALLBACK_DEVICE,
    GRIDS,
    PUES,
    DevicePower,
    GridIntensity,
    PueDefault,
)

__all__ = [
    "DEFAULT_GRID",
    "DEFAULT_PUE",
    "DEFAULT_UTILISATION",
    "DEVICES",
    "GRIDS",
    "PUES",
    "CodecarbonReading",
    "DevicePower",
    "Footprint",
    "GridIntensity",
    "PueDefault",
    "carbon_kg",
    "energy_kwh",
    "estimated_training_footprint",
    "lookup_device",
    "match_device_kind",
    "measured_run_footprint",
    "power_sources",
    "run_footprint",
    "track_with_codecarbon",
]

FootprintKind = Literal["measured", "estimated"]


@dataclass(frozen=True)
class Footprint:
    """Energy and carbon of one run, with every input echoed and how it was computed."""

    kwh: float
    kg_co2e: float
    hours: float
    device: str
    device_count: int
    avg_watts: float
    pue: float
    grid_kg_per_kwh: float
    kind: FootprintKind
    method: str
    # Only for estimated footprints: the assumed fraction of peak FLOP/s.
    utilisation: float | None = None


# --- validation: one line naming the value, as ValueError ---------------------------------------


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    value = _finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _positive(name: str, value: float) -> float:
    value = _finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def _device_count(value: int, name: str = "device_count") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _pue(value: float | PueDefault) -> float:
    pue = value.pue if isinstance(value, PueDefault) else value
    pue = _finite("pue", pue)
    # PUE is total facility energy over IT energy, so it cannot be below 1.
    if pue < 1.0:
        raise ValueError(f"pue must be >= 1.0, got {pue!r}")
    return pue


def _grid(value: float | GridIntensity) -> float:
    kg = value.kg_per_kwh if isinstance(value, GridIntensity) else value
    return _non_negative("grid_kg_per_kwh", kg)


def _utilisation(value: float) -> float:
    value = _finite("utilisation", value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"utilisation must be in (0, 1], got {value!r}")
    return value


# --- the arithmetic ------------------------------------------------------------------------------


def energy_kwh(hours: float, devices: int, avg_watts: float, pue: float) -> float:
    """kWh = hours x devices x avg_watts x PUE / 1000."""
    hours = _non_negative("hours", hours)
    devices = _device_count(devices, "devices")
    avg_watts = _positive("avg_watts", avg_watts)
    return hours * devices * avg_watts * _pue(pue) / 1000.0


def carbon_kg(kwh: float, grid_kg_per_kwh: float) -> float:
    """kgCO2e = kWh x grid carbon intensity (kgCO2e/kWh)."""
    return _non_negative("kwh", kwh) * _grid(grid_kg_per_kwh)


# --- device matching -----------------------------------------------------------------------------

_BY_NAME = {row.name.lower(): row for row in DEVICES}

# JAX device_kind strings seen in practice: 'cpu'; 'TPU v2', 'TPU v3', 'TPU v4' (and 'TPU v4 lite',
# an inference chip); 'TPU v5 lite' (v5e) and 'TPU v5' (v5p); 'Tesla V100-SXM2-16GB',
# 'NVIDIA A100-SXM4-40GB', 'NVIDIA A100-PCIE-40GB', 'NVIDIA H100 80GB HBM3', 'NVIDIA H100 PCIe',
# 'NVIDIA H200'. The TPU patterns are anchored at both ends so 'TPU v4 lite' does not match
# TPUv4. GPU model numbers must not be followed by a digit so 'RTX A1000' is not an A100.
_TPU = re.compile(r"^tpu\s*v([234])$")
_TPU_V5E = re.compile(r"^tpu\s*v5\s*(lite|e)$")
_TPU_V5P = re.compile(r"^tpu\s*v5\s*p?$")
_GPU = re.compile(r"(?<![a-z0-9])([vah]100|h200)(?![0-9])")


def match_device_kind(device_kind_or_platform: str) -> tuple[DevicePower, bool]:
    """Maps a JAX device kind (or platform name, or a table row name) to a table row.

    Matching is on the lower-cased string: 'cpu' (JAX's CPU device kind and platform) -> CPU;
    'tpu v2' / 'tpu v3' / 'tpu v4' exactly (spaces optional) -> TPUv2/3/4; 'tpu v5 lite' or
    'tpu v5e' -> TPUv5e; 'tpu v5' or 'tpu v5p' -> TPUv5p; a standalone 'v100', 'a100', 'h100'
    or 'h200' anywhere in the string -> that GPU row (PCIe boards map to the SXM row,
    which overstates their power). Anything else, including a bare platform such as 'gpu' or
    'tpu' that names no generation, returns the CPU fallback row and False.
    """
    text = str(device_kind_or_platform).strip().lower()
    if text in _BY_NAME:
        return _BY_NAME[text], True
    if text == "cpu":
        return _BY_NAME["cpu"], True
    tpu = _TPU.match(text)
    if tpu:
        return _BY_NAME[f"tpuv{tpu.group(1)}"], True
    if _TPU_V5E.match(text):
        return _BY_NAME["tpuv5e"], True
    if _TPU_V5P.match(text):
        return _BY_NAME["tpuv5p"], True
    gpu = _GPU.search(text)
    if gpu:
        return _BY_NAME[gpu.group(1)], True
    return _BY_NAME[FALLBACK_DEVICE.lower()], False


def lookup_device(device: str | DevicePower) -> DevicePower:
    """A table row by name or JAX device kind; unknown names raise instead of falling back."""
    if isinstance(device, DevicePower):
        return device
    row, matched = match_device_kind(device)
    if not matched:
        names = ", ".join(row.name for row in DEVICES)
        raise ValueError(f"device {device!r} is not in the power table ({names})")
    return row


def _grid_label(grid: float | GridIntensity) -> str:
    if isinstance(grid, GridIntensity):
        return f"{grid.kg_per_kwh:g} kgCO2e/kWh ({grid.name})"
    return f"{grid:g} kgCO2e/kWh"


def _pue_label(pue: float | PueDefault) -> str:
    if isinstance(pue, PueDefault):
        return f"PUE {pue.pue:g} ({pue.name})"
    return f"PUE {pue:g}"


# --- footprints ----------------------------------------------------------------------------------


def measured_run_footprint(
    wall_seconds: float,
    device_kind_or_platform: str,
    device_count: int,
    pue: float | PueDefault = DEFAULT_PUE,
    grid: float | GridIntensity = DEFAULT_GRID,
) -> Footprint:
    """Footprint of a run the harness made: measured wall time x table power (not metered power).

    `device_kind_or_platform` is JAX's `device.device_kind` (or `device.platform`); see
    `match_device_kind`. An unknown kind uses the CPU row and says FALLBACK in `method`.
    `device_count` counts the row's unit: TPU chips, GPUs, or CPU sockets. For CPU runs pass the
    number of sockets (hosts), not `len(jax.devices())`: XLA's forced host device count splits
    one socket into virtual devices that draw no extra power.
    """
    seconds = _non_negative("wall_seconds", wall_seconds)
    count = _device_count(device_count)
    row, matched = match_device_kind(device_kind_or_platform)
    hours = seconds / 3600.0
    kwh = energy_kwh(hours, count, row.avg_watts, _pue(pue))
    kg = carbon_kg(kwh, _grid(grid))
    if matched:
        match_note = f"device kind {device_kind_or_platform!r} -> {row.name}"
    else:
        match_note = (
            f"FALLBACK: device kind {device_kind_or_platform!r} is not in the table, "
            f"using the {row.name} row"
        )
    method = (
        f"measured time x table power (not metered): {seconds:.1f} s wall time x {count} "
        f"{row.name} {row.unit}(s) x {row.avg_watts:g} W ({row.power_kind}, {row.power_source}) "
        f"x {_pue_label(pue)} x {_grid_label(grid)}; {match_note}"
    )
    return Footprint(
        kwh=kwh,
        kg_co2e=kg,
        hours=hours,
        device=row.name,
        device_count=count,
        avg_watts=row.avg_watts,
        pue=_pue(pue),
        grid_kg_per_kwh=_grid(grid),
        kind="measured",
        method=method,
    )


def run_footprint(wall_seconds: float, devices: dict[str, Any]) -> Footprint:
    """`measured_run_footprint` of a run from results.json's 'devices' record."""
    # CPU power is per socket: JAX's CPU "devices" may be simulated slices of one socket, so a
    # CPU run counts one socket per process.
    count = devices["process_count"] if devices["platform"] == "cpu" else devices["count"]
    return measured_run_footprint(wall_seconds, devices["kind"], count)


def estimated_training_footprint(
    total_train_flops: float,
    device: str | DevicePower,
    device_count: int,
    utilisation: float = DEFAULT_UTILISATION,
    pue: float | PueDefault = DEFAULT_PUE,
    grid: float | GridIntensity = DEFAULT_GRID,
) -> Footprint:
    """Footprint of a config that is not trained: hours = FLOPs / (peak x utilisation x devices).

    `total_train_flops` is the whole run's FLOPs (all steps, forward and backward, all devices);
    `device` is a table row or its name (unknown names raise). `utilisation` is the assumed
    fraction of the row's peak FLOP/s actually sustained; it is echoed in the result.
    """
    flops = _non_negative("total_train_flops", total_train_flops)
    row = lookup_device(device)
    count = _device_count(device_count)
    used = _utilisation(utilisation)
    hours = flops / (row.peak_flops * used * count) / 3600.0
    kwh = energy_kwh(hours, count, row.avg_watts, _pue(pue))
    kg = carbon_kg(kwh, _grid(grid))
    rough = ", ROUGH peak figure" if row.peak_is_rough else ""
    method = (
        f"estimated from FLOPs: {flops:.3g} FLOPs / ({count} {row.name} x "
        f"{row.peak_flops:.3g} FLOP/s {row.peak_precision} peak{rough} x assumed utilisation "
        f"{used:g}) = {hours:.3g} h, x {row.avg_watts:g} W ({row.power_kind}) "
        f"x {_pue_label(pue)} x {_grid_label(grid)}"
    )
    return Footprint(
        kwh=kwh,
        kg_co2e=kg,
        hours=hours,
        device=row.name,
        device_count=count,
        avg_watts=row.avg_watts,
        pue=_pue(pue),
        grid_kg_per_kwh=_grid(grid),
        kind="estimated",
        method=method,
        utilisation=used,
    )


# --- codecarbon ----------------------------------------------------------------------------------


@dataclass
class CodecarbonReading:
    """What codecarbon measured for the tracked block; filled in when the block exits."""

    country_iso_code: str
    kwh: float | None = None
    kg_co2e: float | None = None
    duration_s: float | None = None
    cpu_watts: float | None = None
    gpu_watts: float | None = None
    ram_watts: float | None = None
    method: str = ""
    # Where codecarbon takes each component's power from, e.g. {'cpu': 'intel_rapl', 'gpu':
    # 'NvidiaGPUDevice', 'ram': 'RAM'}; see `power_sources`.
    power_sources: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def track_with_codecarbon(
    country_iso_code: str,
    output_dir: str | os.PathLike[str] | None = None,
    measure_power_secs: float = 15.0,
    log_level: str = "error",
) -> Iterator[CodecarbonReading]:
    """Tracks the block with codecarbon's OfflineEmissionsTracker; no network is used.

    The reading is codecarbon's own: its power model (RAPL or NVML where readable, otherwise its
    CPU TDP table and a RAM estimate) and the grid intensity of `country_iso_code` (3 letters,
    e.g. 'USA') from its bundled energy-mix data. Nothing is written unless `output_dir` is given,
    in which case codecarbon's emissions.csv goes there. The yielded reading is filled on exit,
    also when the block raises.
    """
    # Imported here: codecarbon pulls in pandas and is optional for the rest of the module.
    import codecarbon
    from codecarbon.input import DataSource
    from codecarbon.output_methods.base_output import OutputMethod

    code = str(country_iso_code).upper()
    if code not in DataSource().get_global_energy_mix_data():
        raise ValueError(f"country_iso_code {country_iso_code!r} is not in codecarbon's data")
    _positive("measure_power_secs", measure_power_secs)

    with contextlib.ExitStack() as stack:
        if output_dir is None:
            # codecarbon insists on an existing output_dir even with no output; a throwaway
            # directory guarantees nothing lands in the caller's working directory.
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="codecarbon-"))
            methods: list[OutputMethod] = []
        else:
            directory = os.fspath(output_dir)
            os.makedirs(directory, exist_ok=True)
            methods = [OutputMethod.CSV]
        # codecarbon applies `log_level` only after its first log lines; set it first.
        logging.getLogger("codecarbon").setLevel(log_level.upper())
        tracker = codecarbon.OfflineEmissionsTracker(
            country_iso_code=code,
            output_dir=directory,
            output_methods=methods,
            measure_power_secs=measure_power_secs,
            # True skips codecarbon's cross-process lock file.
            allow_multiple_runs=True,
            log_level=log_level,
        )
        reading = CodecarbonReading(country_iso_code=code)
        block_failed = False
        tracker.start()
        reading.power_sources = power_sources(tracker)
        try:
            yield reading
        except BaseException:
            block_failed = True
            raise
        finally:
            tracker.stop()
            # codecarbon swallows its own exceptions and logs them, so a failed run shows up
            # only as a missing result. The block's own exception, if any, takes precedence.
            data = getattr(tracker, "final_emissions_data", None)
            if data is not None:
                _fill_reading(reading, data, codecarbon.__version__)
            elif not block_failed:
                raise RuntimeError("codecarbon produced no emissions data (see its log above)")


def power_sources(tracker: Any) -> dict[str, str]:
    """Which power source codecarbon chose for each component: 'cpu' -> the CPU's mode
    ('intel_rapl' reads RAPL counters; 'constant' and 'cpu_load' scale a TDP), 'gpu' -> the
    device class ('NvidiaGPUDevice' reads NVML), 'ram' -> 'RAM' (always its estimate from the
    memory size). codecarbon has no public API for this, so it is read from its 3.3.2 internals
    (`_hardware`, `CPU._mode`); anything unrecognised is left out, never guessed."""
    sources: dict[str, str] = {}
    for hardware in getattr(tracker, "_hardware", None) or []:
        kind = type(hardware).__name__
        if kind == "CPU":
            sources["cpu"] = str(getattr(hardware, "_mode", "unknown"))
        elif kind == "GPU":
            devices = getattr(getattr(hardware, "devices", None), "devices", None) or []
            names = sorted({type(device).__name__ for device in devices})
            sources["gpu"] = "+".join(names) or "unknown"
        elif kind == "RAM":
            sources["ram"] = "RAM"
        else:  # Apple silicon, Raspberry Pi, ...: codecarbon's own readers
            sources[kind.lower()] = kind
    return sources


def _fill_reading(reading: CodecarbonReading, data: Any, version: str) -> None:
    # `data` is codecarbon's EmissionsData: energy in kWh, emissions in kg, powers in W.
    reading.kwh = float(data.energy_consumed)
    reading.kg_co2e = float(data.emissions)
    reading.duration_s = float(data.duration)
    reading.cpu_watts = float(data.cpu_power)
    reading.gpu_watts = float(data.gpu_power)
    reading.ram_watts = float(data.ram_power)
    reading.method = (
        f"codecarbon {version} OfflineEmissionsTracker, country {reading.country_iso_code}, "
        f"tracking mode {data.tracking_mode}: codecarbon's power model and bundled grid "
        "intensity, not the harness table"
    )
