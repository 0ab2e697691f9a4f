"""Which models each export format can hold, checked from the spec before any weight is read.

A format that cannot express a model exactly is refused in one line rather than written
approximately: a file that loads and computes something else is worse than no file.
"""

from harness.errors import UsageError
from models.specs import ModelSpec

VIT_NPZ = "vit_npz"
VMOE = "vmoe"
SAFETENSORS = "safetensors"
FORMATS = (VIT_NPZ, VMOE, SAFETENSORS)
FORMAT_HELP = (
    f"{VIT_NPZ}: a dense ViT as a vision_transformer .npz (timm's _load_weights reads it); "
    f"{VMOE}: V-MoE's PREFIX.index + PREFIX.data-* checkpoint; "
    f"{SAFETENSORS}: timm's vit_* state dict, V-MoE experts and routers added"
)
# Routers whose only weight is vmoe's bias-free Router/dense kernel [D, E].
DENSE_KERNEL_ROUTERS = ("top_k", "expert_choice")


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise UsageError(f"--format={name} is unknown; use one of {', '.join(FORMATS)}")
    return name


def check_model(spec: ModelSpec, format_name: str, run_dir: str) -> None:
    """Raises UsageError (one line) if `format_name` cannot hold the run's model exactly."""
    family = spec.family
    if family not in ("vit", "vmoe"):
        raise UsageError(
            f"{run_dir} is a {family} model; export writes dense ViTs and V-MoEs only (the "
            f"formats' code bases have no {family} blocks)"
        )
    if family == "vmoe" and spec.moe.router not in DENSE_KERNEL_ROUTERS:
        raise UsageError(
            f"{run_dir} routes with MoeSpec.router={spec.moe.router!r}, whose weights V-MoE's "
            f"layout has no names for; export supports routers {DENSE_KERNEL_ROUTERS}"
        )
    if format_name == VIT_NPZ and family != "vit":
        raise UsageError(
            f"{run_dir} is a V-MoE; the vision_transformer .npz holds dense ViTs only: use "
            f"--format={VMOE} or --format={SAFETENSORS}"
        )
    if format_name == SAFETENSORS and spec.vit.pre_logits:
        raise UsageError(
            f"{run_dir} has a pre-logits layer, which timm's VisionTransformer lacks (its "
            f"checkpoint_filter_fn drops one); use --format={VIT_NPZ} or --format={VMOE}"
        )
