"""The accelerators a plan can be made for, one JAX device each, with their vendors' figures.

Memory is memory_plan.CHIPS's; peak FLOP/s and power are harness/measure/carbon_defaults.py's
rows (the figures the report's energy and carbon estimates use), divided by the JAX devices
per row unit (a TPU v3 chip is 2 cores, each its own JAX device). Interconnect is the vendor's
stated per-chip bandwidth for the chip-to-chip links (TPU ICI, NVLink within one node); an
all-reduce or all-to-all sustains less, and GPUs across nodes go over a slower network, so
the time it gives is a lower bound on communication.
"""

import dataclasses

from harness.measure.carbon_defaults import DEVICES, DevicePower

GIB = 2**30
GB = 10**9


@dataclasses.dataclass(frozen=True)
class PlanDevice:
    flag: str  # the --device value
    chip: str  # memory_plan.CHIPS name
    power_row: str  # carbon_defaults.DEVICES name
    per_unit: int  # JAX devices per power_row unit (TPU v3: 2 cores per chip)
    memory_bytes: int
    interconnect_bytes_per_s: float  # per JAX device
    interconnect_source: str

    @property
    def power(self) -> DevicePower:
        return next(d for d in DEVICES if d.name == self.power_row)

    @property
    def peak_flops(self) -> float:
        return self.power.peak_flops / self.per_unit

    @property
    def watts(self) -> float:
        return self.power.avg_watts / self.per_unit

    @property
    def unit_name(self) -> str:
        """What one accelerator-day counts: the JAX device."""
        return self.chip


PLAN_DEVICES: tuple[PlanDevice, ...] = (
    PlanDevice(
        "tpuv3-core",
        "TPU v3 core",
        "TPUv3",
        2,
        16 * GIB,
        4 * 656e9 / 8 / 2,
        "Jouppi et al. 2020 (CACM): TPU v3 ICI 4 links of 656 Gbit/s per chip, halved per core",
    ),
    PlanDevice(
        "tpuv4",
        "TPU v4 chip",
        "TPUv4",
        1,
        32 * GIB,
        2400e9 / 8,
        "Google Cloud TPU v4 documentation: interchip interconnect 2400 Gbit/s per chip",
    ),
    PlanDevice(
        "tpuv5e",
        "TPU v5e chip",
        "TPUv5e",
        1,
        16 * GB,
        1600e9 / 8,
        "Google Cloud TPU v5e documentation: interchip interconnect 1600 Gbit/s per chip",
    ),
    PlanDevice(
        "a100-40gb",
        "A100 40GB",
        "A100",
        1,
        40 * GB,
        600e9,
        "NVIDIA A100 datasheet: NVLink 600 GB/s (within one node)",
    ),
    PlanDevice(
        "a100-80gb",
        "A100 80GB",
        "A100",
        1,
        80 * GB,
        600e9,
        "NVIDIA A100 datasheet: NVLink 600 GB/s (within one node)",
    ),
    PlanDevice(
        "h100-80gb",
        "H100 80GB",
        "H100",
        1,
        80 * GB,
        900e9,
        "NVIDIA H100 datasheet (SXM5): NVLink 900 GB/s (within one node)",
    ),
)
DEVICE_FLAGS = tuple(d.flag for d in PLAN_DEVICES)


def plan_device(flag: str) -> PlanDevice:
    """The device named by `flag`; ValueError (one line) naming the choices otherwise."""
    for device in PLAN_DEVICES:
        if device.flag == flag:
            return device
    raise ValueError(f"--device={flag} is unknown; use one of {', '.join(DEVICE_FLAGS)}")
