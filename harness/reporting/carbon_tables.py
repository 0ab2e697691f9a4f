"""The energy and carbon assumptions (device power, PUE, grid intensity) as markdown tables,
each row with its source, for a report's appendix."""

from collections.abc import Sequence

from harness.measure.carbon_defaults import DEFAULT_UTILISATION, DEVICES, GRIDS, PUES, DevicePower
from harness.reporting.markdown import table


def device_table_markdown(devices: Sequence[DevicePower] = DEVICES) -> str:
    """The device power table as markdown, one row per device with its sources."""
    header = (
        "Device",
        "Unit",
        "Avg W",
        "Power kind",
        "Power source",
        "Peak TFLOP/s",
        "Precision",
        "Peak source",
    )
    rows = [
        (
            row.name,
            row.unit,
            f"{row.avg_watts:g}",
            row.power_kind,
            row.power_source,
            f"{row.peak_flops / 1e12:g}" + (" (rough)" if row.peak_is_rough else ""),
            row.peak_precision,
            row.peak_source,
        )
        for row in devices
    ]
    return table(header, rows)


def defaults_markdown() -> str:
    """Device, PUE and grid tables with sources, and the formula, for a report's appendix."""
    pue_rows = [(row.name, f"{row.pue:g}", row.source) for row in PUES]
    grid_rows = [(row.name, f"{row.kg_per_kwh:g}", row.source) for row in GRIDS]
    return "\n\n".join(
        (
            "kWh = hours x devices x avg_watts x PUE / 1000; kgCO2e = kWh x grid kgCO2e/kWh. "
            "Measured figures use real wall time x table power; estimated figures use "
            f"FLOPs / (peak x utilisation), default utilisation {DEFAULT_UTILISATION:g}.",
            device_table_markdown(),
            table(("Datacenter", "PUE", "Source"), pue_rows),
            table(("Grid", "kgCO2e/kWh", "Source"), grid_rows),
        )
    )
