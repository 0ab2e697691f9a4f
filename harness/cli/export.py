r"""Export a trained run's weights for other code bases: timm (PyTorch), vision_transformer, V-MoE.

  python -m harness.export RUN_DIR --format=FORMAT --output=PATH [--step=N] [--overwrite]

FORMAT is one of:
  vit_npz      a dense ViT as a google-research/vision_transformer .npz (the original
               release's names, which timm's `vision_transformer._load_weights` reads);
               PATH ends with .npz.
  vmoe         google-research/vmoe's sharded checkpoint, PATH.index + PATH.data-nnnnn-of-NNNNN,
               which vmoe's `partitioned.restore_checkpoint` reads; dense ViTs and V-MoEs.
  safetensors  timm's VisionTransformer state dict (vit_* names and layouts), V-MoE blocks
               as `blocks.i.mlp.router.weight` and `blocks.i.mlp.experts.e.fc1/fc2.*`; the
               file's metadata holds timm's model kwargs; PATH ends with .safetensors.

The weights are the run's latest checkpoint (or --step), read as data: experiment.json says
what the model is and the checkpoint's checksums are verified; nothing in RUN_DIR is executed
or written. Every file appears whole or not at all. An existing output is replaced only with
--overwrite, and only if it is a regular file. `harness.evaluate` and `TrainSpec.init_from`
read every format back.
"""

from absl import flags

from harness.cli import app
from harness.cli import flags as cli_flags
from harness.errors import UsageError

# Spelled out so that --help imports no exporter (harness/exports/model_support.py FORMATS).
FORMATS = ("vit_npz", "vmoe", "safetensors")
EXAMPLE = "python -m harness.export runs/vit --format=safetensors -o exports/vit.safetensors"

FLAGS = flags.FLAGS
cli_flags.define_output_flag("File to write (for --format=vmoe: the checkpoint prefix).")
flags.adopt_module_key_flags(cli_flags)
flags.DEFINE_enum("format", None, FORMATS, "What to write: vit_npz, vmoe or safetensors.")
flags.DEFINE_integer("step", None, "Checkpoint step to export; default: the latest.")
flags.DEFINE_bool("overwrite", False, "Replace an existing output file (regular files only).")


def main(args: list[str]) -> None:
    if len(args) != 1:
        raise UsageError(f"pass exactly one RUN_DIR, e.g. {EXAMPLE}")
    if not FLAGS.format:
        raise UsageError(f"--format is required, one of {', '.join(FORMATS)}; e.g. {EXAMPLE}")
    if not FLAGS.output:
        raise UsageError(f"--output (-o) is required; e.g. {EXAMPLE}")
    from harness.exports.export import export_run

    written = export_run(
        args[0], FLAGS.format, FLAGS.output, step=FLAGS.step, overwrite=FLAGS.overwrite
    )
    for path in written:
        print(f"export: {path}")


if __name__ == "__main__":
    app.run(main)
