"""The papers' training runs: hardware, batch, images seen, and the accelerator-days they report.

Data only. `reported_days` is in the device's unit (TPU v3 core-days for TPUv3), as the paper's
table gives it; None where a paper reports no cost. Sources (as gathered in the project's design
brief, /work/shared/DESIGN.md, "Interop, upcycling and paper costs"):
- V-MoE: Riquelme et al. 2021, "Scaling Vision with Sparse Mixture of Experts", main results
  table (JFT-300M upstream; TPUv3-core-days per model).
- WideNet: Xue et al. 2022, "Go Wider Instead of Deeper": "We pretrain our models on 256 TPUv3
  cores", ImageNet-1k, batch 4096, 300 epochs; no cost reported.
The JFT schedules (7 epochs for S, B and L models, 14 for H/14 and V-MoE-15B, batch 4096)
follow the ViT paper's appendix (Dosovitskiy et al. 2021, JFT-300M pre-training) as recalled,
not re-read here: `schedule_source` marks them "assumed" so a reader confirms them before
trusting a ratio. The V-MoE paper's core counts per model are not stated; 256 cores is assumed
for every run (accelerator-days do not depend on it, only the communication share does).
"""

import dataclasses

JFT_300M_IMAGES = 303_000_000  # Dosovitskiy et al. 2021, Sec. 4.1: JFT, 18k classes, 303M images
IMAGENET_1K_TRAIN_IMAGES = 1_281_167
VMOE_TABLE = "Riquelme et al. 2021 (V-MoE), main results table, TPUv3-core-days"
JFT_SCHEDULE = "assumed: JFT-300M, {epochs} epochs at batch 4096 (ViT paper appendix, as recalled)"
WIDENET_SCHEDULE = "Xue et al. 2022 (WideNet): 256 TPUv3 cores, ImageNet-1k, batch 4096, 300 epochs"


@dataclasses.dataclass(frozen=True)
class PaperRun:
    config: str  # gin/NAME.gin (or gin/ablations/NAME.gin)
    device: str  # harness/measure/plan_devices.py flag
    devices: int
    global_batch: int
    images_seen: int
    schedule_source: str
    reported_days: float | None
    reported_source: str

    @property
    def steps(self) -> int:
        return -(-self.images_seen // self.global_batch)


def _jft(config: str, epochs: int, days: float | None) -> PaperRun:
    return PaperRun(
        config,
        "tpuv3-core",
        256,
        4096,
        epochs * JFT_300M_IMAGES,
        JFT_SCHEDULE.format(epochs=epochs),
        days,
        VMOE_TABLE if days is not None else "not reported",
    )


def _widenet(config: str) -> PaperRun:
    images = 300 * IMAGENET_1K_TRAIN_IMAGES
    return PaperRun(config, "tpuv3-core", 256, 4096, images, WIDENET_SCHEDULE, None, "not reported")


PAPER_RUNS: tuple[PaperRun, ...] = (
    _jft("vit_b16", 7, 95.0),
    _jft("vit_l16", 7, 650.0),
    _jft("vit_h14", 14, 2390.0),
    _jft("vmoe_b16", 7, 200.0),
    _jft("vmoe_l16", 7, 1210.0),
    _jft("vmoe_h14_last5", 14, 2740.0),
    _jft("vmoe_15b", 14, 16800.0),
    _widenet("widenet_b"),
    _widenet("widenet_l"),
    _widenet("widenet_h"),
)


def paper_run(config: str) -> PaperRun | None:
    return next((run for run in PAPER_RUNS if run.config == config), None)
