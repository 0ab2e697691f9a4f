"""Chooses the importer by what a path holds, so the user names a checkpoint, not its format."""

from harness import storage
from harness.checkpoint_formats import big_vision_npz, orbax_run, timm_safetensors, vmoe_reference
from harness.errors import UsageError

RUN = "run"
VIT_NPZ = "vit_npz"
BIG_VISION_NPZ = "big_vision_npz"
VMOE = "vmoe"
SAFETENSORS = "safetensors"
FORMATS = (RUN, VIT_NPZ, BIG_VISION_NPZ, VMOE, SAFETENSORS)

FORMAT_HELP = (
    f"{RUN}: a run directory with checkpoints/ (ours); {VIT_NPZ}: a vision_transformer .npz; "
    f"{BIG_VISION_NPZ}: a big_vision .npz; {VMOE}: a V-MoE PREFIX (with PREFIX.index); "
    f"{SAFETENSORS}: a timm state dict as python -m harness.export writes it"
)


def npz_format(names: set[str]) -> str:
    """big_vision's layout has marks of its own (train-state prefix, scanned blocks, posemb
    outside the encoder); anything else is read as vision_transformer's."""
    if big_vision_npz.looks_like(names):
        return BIG_VISION_NPZ
    return VIT_NPZ


def path_format(path: str) -> str:
    """The format of `path` by its shape alone, with 'npz' standing for either npz format
    (telling them apart needs the names inside; see `npz_format`)."""
    if path.endswith(".npz"):
        return "npz"
    if path.endswith(timm_safetensors.SUFFIX):
        return SAFETENSORS
    if path.endswith(vmoe_reference.INDEX_SUFFIX) or storage.exists(
        path + vmoe_reference.INDEX_SUFFIX
    ):
        return VMOE
    if orbax_run.is_run_dir(path):
        return RUN
    if not storage.exists(path):
        raise UsageError(f"checkpoint {path} does not exist; check the path")
    raise UsageError(f"cannot tell the checkpoint format of {path}; give one of: {FORMAT_HELP}")


def check_format_name(name: str) -> str:
    if name not in FORMATS:
        raise UsageError(f"checkpoint format {name!r} is unknown; use one of {FORMATS}")
    return name
