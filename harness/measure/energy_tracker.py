"""Metered energy of training: codecarbon's offline tracker around each training attempt.

codecarbon reads energy counters where the machine exposes them (RAPL on Intel/AMD CPUs under
/sys/class/powercap, NVML on NVIDIA GPUs). Where it cannot (a container without RAPL access is
typical) it silently falls back to a TDP-based estimate; that case is detected from the power
source it chose and labelled "estimated", never passed off as a measurement. RAM is always
codecarbon's estimate from the memory size.

The tracker runs on the chief process only, so a multi-host run meters the chief's host alone
(the section says so). It never reaches the network (OfflineEmissionsTracker with a fixed
country; only its kWh are kept, carbon comes from the harness's own grid table), writes no file
(codecarbon's CSV is not requested), installs no signal handler (allow_multiple_runs skips its
lock, whose handlers would replace the trainer's pre-emption guard) and never fails a run: any
error becomes a "not measured" section with the reason.
"""

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

from harness.errors import one_line
from harness.measure import carbon

# Only the kWh are kept, so the country only satisfies codecarbon's offline tracker.
TRACKER_COUNTRY = "USA"
# codecarbon samples power in a background thread this often; energy counters (RAPL, NVML) are
# integrated exactly whatever the interval, so a long one keeps the overhead negligible.
MEASURE_POWER_SECS = 15.0

EnergyKind = Literal["measured", "partly measured", "estimated", "not measured"]

# codecarbon's power sources that read an energy counter, and their names in results.json.
_METERED = {
    "intel_rapl": "RAPL",
    "intel_power_gadget": "Intel Power Gadget",
    "windows_emi": "Windows EMI",
    "NvidiaGPUDevice": "NVML",
    "AMDGPUDevice": "AMD SMI",
    "AppleSiliconChip": "powermetrics",
}
# Sources that scale a table figure instead of reading a counter.
_ESTIMATED = {
    "constant": "estimate from TDP (50% of the CPU's TDP)",
    "cpu_load": "estimate from TDP x CPU load",
    "RAM": "estimate from memory size",
}


def describe_sources(sources: dict[str, str]) -> tuple[EnergyKind, dict[str, str]]:
    """The kind of figure codecarbon's power sources give, and each component's method.

    'measured' when every compute component (CPU, GPU) reads a counter, 'estimated' when none
    does (codecarbon's TDP fallback), 'partly measured' otherwise. RAM, always an estimate, does
    not decide the kind but is listed."""
    methods = {}
    metered = []
    for component, source in sorted(sources.items()):
        parts = source.split("+")
        if all(part in _METERED for part in parts):
            methods[component] = "+".join(_METERED[part] for part in parts)
            if component != "ram":
                metered.append(True)
        else:
            methods[component] = _ESTIMATED.get(source, f"codecarbon source {source!r}")
            if component != "ram":
                metered.append(False)
    if metered and all(metered):
        return "measured", methods
    if any(metered):
        return "partly measured", methods
    return "estimated", methods


def not_measured(reason: str) -> dict[str, Any]:
    return {"kind": "not measured", "kwh": None, "reason": reason}


class AttemptEnergy:
    """The energy section of one attempt; `section` is filled when the tracked block exits."""

    def __init__(self) -> None:
        self.section: dict[str, Any] = not_measured("the attempt did not finish tracking")


@contextlib.contextmanager
def track_attempt(enabled: bool) -> Iterator[AttemptEnergy]:
    """Meters the block with codecarbon when `enabled` (the chief process). Never raises from
    codecarbon: a tracker that cannot start or stop leaves a 'not measured' section naming why.
    Exceptions of the block itself propagate unchanged, after the section is filled."""
    energy = AttemptEnergy()
    if not enabled:
        energy.section = not_measured("not the chief process")
        yield energy
        return
    tracking = contextlib.ExitStack()
    reading = None
    try:
        reading = tracking.enter_context(
            carbon.track_with_codecarbon(
                TRACKER_COUNTRY, measure_power_secs=MEASURE_POWER_SECS, log_level="critical"
            )
        )
    except Exception as error:  # codecarbon missing or broken: train anyway
        energy.section = not_measured(f"codecarbon could not start ({one_line(error)})")
    try:
        yield energy
    finally:
        if reading is not None:
            try:
                tracking.close()
            except Exception as error:
                energy.section = not_measured(f"codecarbon failed ({one_line(error)})")
            else:
                energy.section = attempt_section(reading)


def attempt_section(reading: carbon.CodecarbonReading) -> dict[str, Any]:
    """One attempt's codecarbon reading as results data."""
    if reading.kwh is None:
        return not_measured("codecarbon produced no reading")
    kind, methods = describe_sources(reading.power_sources)
    return {
        "kind": kind,
        "kwh": reading.kwh,
        "duration_s": reading.duration_s,
        "methods": methods,
        "watts": {"cpu": reading.cpu_watts, "gpu": reading.gpu_watts, "ram": reading.ram_watts},
        "tool": reading.method,
    }


def run_energy(attempts: list[dict[str, Any]], process_count: int) -> dict[str, Any]:
    """The codecarbon figure of a run: its attempts' kWh summed. Attempts without a reading
    (killed, or from before metering) are counted, not guessed, and `covers_all_attempts` says
    whether the sum is complete; the kind is the weakest of the attempts' kinds."""
    sections = [a["energy"] for a in attempts if isinstance(a.get("energy"), dict)]
    read = [s for s in sections if s.get("kwh") is not None]
    summary: dict[str, Any] = {
        "attempts": len(attempts),
        "attempts_metered": len(read),
        "hosts_metered": f"the chief's host only, of {process_count} process(es)"
        if process_count > 1
        else "the one host",
    }
    if not read:
        reasons = sorted({s.get("reason", "") for s in sections} - {""})
        reason = "; ".join(reasons) or "no attempt was tracked"
        return {**not_measured(reason), **summary}
    order: list[EnergyKind] = ["measured", "partly measured", "estimated"]
    kind = max((s["kind"] for s in read), key=order.index)
    kwh = sum(s["kwh"] for s in read)
    methods: dict[str, set[str]] = {}
    for section in read:
        for component, method in section["methods"].items():
            methods.setdefault(component, set()).add(method)
    return {
        "kind": kind,
        "kwh": kwh,
        # codecarbon's own carbon uses its country; the harness's grid keeps figures comparable.
        "kg_co2e": carbon.carbon_kg(kwh, carbon.DEFAULT_GRID),
        "grid": f"{carbon.DEFAULT_GRID.kg_per_kwh:g} kgCO2e/kWh ({carbon.DEFAULT_GRID.name})",
        "covers_all_attempts": len(read) == len(attempts),
        "duration_s": sum(s["duration_s"] or 0.0 for s in read),
        "methods": {c: " / ".join(sorted(m)) for c, m in sorted(methods.items())},
        "tool": read[-1]["tool"],
        **summary,
    }


def results_section(
    attempts: list[dict[str, Any]], devices: dict[str, Any], wall_seconds: float
) -> dict[str, Any]:
    """results.json's 'energy': codecarbon's figure beside the harness's table figure (wall
    time x the device's table power), each with its kind and method."""
    table = carbon.run_footprint(wall_seconds, devices)
    return {
        "codecarbon": run_energy(attempts, int(devices["process_count"])),
        "table": {
            "kind": "estimated",
            "kwh": table.kwh,
            "kg_co2e": table.kg_co2e,
            "method": table.method,
        },
    }
