"""Default device power, peak FLOP/s, PUE and grid carbon intensity, each with its source.

Data only; the arithmetic lives in harness/carbon.py. Every figure carries the name of the paper,
datasheet or data file it comes from, so a report can print the table next to the numbers it
produced. Figures were taken from the named sources, not from the internet at run time.
"""

from dataclasses import dataclass
from typing import Literal

# "measured-average": mean power drawn while training, measured by the source.
# "board/TDP": the vendor's board power or thermal design power, an upper bound on the average.
# "proxy (unpublished)": the vendor publishes no power figure; a stated stand-in is used.
PowerKind = Literal["measured-average", "board/TDP", "proxy (unpublished)"]


@dataclass(frozen=True)
class DevicePower:
    """One device type: average power and peak FLOP/s, each with its source.

    `unit` says what one device counts as, so that `device_count` means the same thing the
    power figure was quoted for (a TPU chip, a GPU board, a CPU socket).
    """

    name: str
    unit: str
    avg_watts: float
    power_kind: PowerKind
    power_source: str
    peak_flops: float  # per device, FLOP/s
    peak_precision: str
    peak_source: str
    peak_is_rough: bool = False


@dataclass(frozen=True)
class PueDefault:
    name: str
    pue: float
    source: str


@dataclass(frozen=True)
class GridIntensity:
    name: str
    kg_per_kwh: float
    source: str


TERA = 1e12

# Patterson et al. 2021 is "Carbon Emissions and Large Neural Network Training" (arXiv 2104.10350).
# Its per-processor figures are system power per processor (chip plus its share of host, memory,
# network and fans), which is why the V100 average there is above the V100's 300 W board power.
_PATTERSON = "Patterson et al. 2021, Carbon Emissions and Large Neural Network Training"

DEVICES: tuple[DevicePower, ...] = (
    DevicePower(
        name="TPUv2",
        unit="chip",
        avg_watts=221.0,
        power_kind="measured-average",
        power_source=f"{_PATTERSON}, processor averages table (system power per chip)",
        peak_flops=46 * TERA,
        peak_precision="bf16 dense",
        peak_source="Jouppi et al. 2020, A Domain-Specific Supercomputer for Training DNNs (CACM)",
    ),
    DevicePower(
        name="TPUv3",
        unit="chip",
        avg_watts=283.0,
        power_kind="measured-average",
        power_source=f"{_PATTERSON}, processor averages table (system power per chip)",
        peak_flops=123 * TERA,
        peak_precision="bf16 dense",
        peak_source="Jouppi et al. 2020, A Domain-Specific Supercomputer for Training DNNs (CACM)",
    ),
    DevicePower(
        name="TPUv4",
        unit="chip",
        # No training-average figure on the same basis as TPUv2/v3 is in the sources above, so
        # the chip maximum is used: it overstates energy rather than understating it.
        avg_watts=192.0,
        power_kind="board/TDP",
        power_source="Google Cloud TPU v4 documentation (192 W maximum per chip, chip only)",
        peak_flops=275 * TERA,
        peak_precision="bf16 dense",
        peak_source="Google Cloud TPU v4 documentation; Jouppi et al. 2023, TPU v4 (ISCA)",
    ),
    DevicePower(
        name="TPUv5e",
        unit="chip",
        # Google publishes no power figure for any TPU v5 chip. The largest board power in this
        # table (H100/H200 SXM, 700 W) stands in, so energy is overstated, never understated.
        avg_watts=700.0,
        power_kind="proxy (unpublished)",
        power_source="no published figure; stand-in: NVIDIA H100/H200 SXM max board power 700 W",
        peak_flops=197 * TERA,
        peak_precision="bf16",
        peak_source="Google Cloud TPU v5e documentation (peak compute per chip, bf16)",
    ),
    DevicePower(
        name="TPUv5p",
        unit="chip",
        avg_watts=700.0,
        power_kind="proxy (unpublished)",
        power_source="no published figure; stand-in: NVIDIA H100/H200 SXM max board power 700 W",
        peak_flops=459 * TERA,
        peak_precision="bf16",
        peak_source="Google Cloud TPU v5p documentation (peak compute per chip, bf16)",
    ),
    DevicePower(
        name="V100",
        unit="GPU",
        avg_watts=325.0,
        power_kind="measured-average",
        power_source=f"{_PATTERSON}, processor averages table (system power per GPU)",
        peak_flops=125 * TERA,
        peak_precision="fp16 tensor core, dense",
        peak_source="NVIDIA Tesla V100 datasheet (SXM2)",
    ),
    DevicePower(
        name="A100",
        unit="GPU",
        avg_watts=400.0,
        power_kind="board/TDP",
        power_source="NVIDIA A100 datasheet, SXM4 max board power 400 W",
        peak_flops=312 * TERA,
        peak_precision="bf16 tensor core, dense",
        peak_source="NVIDIA A100 datasheet (SXM4)",
    ),
    DevicePower(
        name="H100",
        unit="GPU",
        avg_watts=700.0,
        power_kind="board/TDP",
        power_source="NVIDIA H100 datasheet, SXM5 max board power 700 W",
        # The datasheet's headline 1,979 TFLOP/s is with 2:4 sparsity; dense is half of it.
        peak_flops=989 * TERA,
        peak_precision="bf16 tensor core, dense",
        peak_source="NVIDIA H100 datasheet (SXM5)",
    ),
    DevicePower(
        name="H200",
        unit="GPU",
        avg_watts=700.0,
        power_kind="board/TDP",
        power_source="NVIDIA H200 datasheet, SXM max TDP up to 700 W (configurable)",
        # Same Hopper tensor cores as the H100: the headline 1,979 TFLOP/s is with sparsity.
        peak_flops=989 * TERA,
        peak_precision="bf16 tensor core, dense",
        peak_source="NVIDIA H200 datasheet (SXM)",
    ),
    DevicePower(
        name="CPU",
        # Per socket, not per core: JAX shows a host's CPU as devices that do not map to cores
        # (XLA can split one socket into N virtual devices), so the socket is the honest unit.
        unit="socket",
        avg_watts=85.0,
        power_kind="board/TDP",
        power_source="codecarbon 3.3.2 default CPU TDP when the model is unknown "
        "(POWER_CONSTANT in codecarbon/external/hardware.py), per socket",
        # Rough: a server socket with tens of cores and wide SIMD does a few fp32 TFLOP/s at
        # best and much less in practice; 1 TFLOP/s keeps the order of magnitude, no more.
        peak_flops=1 * TERA,
        peak_precision="fp32, rough",
        peak_source="rough stated figure: order of magnitude for one server socket, no datasheet",
        peak_is_rough=True,
    ),
)

# An unknown device kind in a measured run falls back to this row, flagged in the result.
FALLBACK_DEVICE = "CPU"

PUE_GOOGLE = PueDefault(
    name="Google datacenters",
    pue=1.1,
    source=f"{_PATTERSON} (Google fleet-average PUE, about 1.1)",
)
PUE_TYPICAL = PueDefault(
    name="typical datacenter",
    pue=1.58,
    source="Uptime Institute Global Data Center Survey 2023 (industry average PUE 1.58)",
)
PUES: tuple[PueDefault, ...] = (PUE_GOOGLE, PUE_TYPICAL)

GRID_T5_DATACENTER = GridIntensity(
    name="Google datacenter where T5 was trained",
    kg_per_kwh=0.545,
    source=f"{_PATTERSON}, T5 row (net tCO2e per MWh)",
)
# codecarbon ships this figure in codecarbon/data/private_infra/carbon_intensity_per_source.json
# ("world_average": 475 gCO2e/kWh), citing the IEA Global Energy & CO2 Status Report 2019.
GRID_WORLD_AVERAGE = GridIntensity(
    name="world average",
    kg_per_kwh=0.475,
    source="IEA Global Energy & CO2 Status Report 2019, as shipped in codecarbon 3.3.2 "
    "(data/private_infra/carbon_intensity_per_source.json, world_average)",
)
# codecarbon/data/private_infra/global_energy_mix.json, entry USA: 369.473 gCO2e/kWh, year 2023.
GRID_USA = GridIntensity(
    name="United States average (2023)",
    kg_per_kwh=0.369473,
    source="codecarbon 3.3.2 data/private_infra/global_energy_mix.json, USA, year 2023",
)
GRIDS: tuple[GridIntensity, ...] = (GRID_T5_DATACENTER, GRID_WORLD_AVERAGE, GRID_USA)

DEFAULT_PUE = PUE_GOOGLE
# Where a run happened is usually unknown to the harness, so the world average is the default.
DEFAULT_GRID = GRID_WORLD_AVERAGE

# Fraction of peak FLOP/s that large transformer training sustains. Reported model FLOPs
# utilisation ranges from about 0.2 (GPT-3 on V100s) to about 0.46 (PaLM on TPUv4, Chowdhery et
# al. 2022); 0.4 assumes a well-tuned run and is always echoed in the result.
DEFAULT_UTILISATION = 0.4
