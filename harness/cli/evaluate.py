r"""Evaluate a released or trained checkpoint on the gin config's data; write a run directory.

  python -m harness.evaluate --gin_file=gin/vmoe_b16.gin --checkpoint=PATH --workdir=DIR
      [--gin_param=...] [--eval_split=validation] [--format=vit_npz]
      [--eval_datasets=imagenet_v2,imagenet_r,imagenet_a,imagenet_sketch,imagenet2012_real,shape_bias]

PATH is a run directory of ours, a google-research/vision_transformer or big_vision .npz, a
V-MoE reference checkpoint (its prefix or .index file), or a .safetensors file that
harness.export wrote; local or gs://. The format is chosen by what PATH holds unless --format
names one. Every checkpoint tensor must find its place in
the model and every weight must be loaded, or the command stops with one line. The run
directory it writes (results.json with top-1 and routing statistics, TensorBoard events, the
config, the weights) is read by `harness.sweep` and `harness.report` like a trained run.
--eval_datasets adds out-of-distribution top-1 (results.json "ood") and the Geirhos shape bias
(results.json "shape_bias") of a 1000-class ImageNet model; each set must be prepared in TFDS.
"""

from absl import flags

from harness.cli import app, preflight
from harness.cli import flags as cli_flags
from harness.config import experiment
from harness.data.eval_datasets import EVAL_DATASETS, check_eval_datasets
from harness.errors import UsageError
from harness.run_dir import lock as workdir_lock
from harness.run_dir.occupancy import refuse_occupied

FORMATS = ("run", "vit_npz", "big_vision_npz", "vmoe", "safetensors")

FLAGS = flags.FLAGS
cli_flags.define_gin_flags()
cli_flags.define_workdir_flag("Run directory to write: config, weights, events, results.json.")
flags.adopt_module_key_flags(cli_flags)
flags.DEFINE_string("checkpoint", None, "Checkpoint to evaluate: run dir, .npz or V-MoE prefix.")
flags.DEFINE_enum("format", None, FORMATS, "Checkpoint format; default: detected from PATH.")
flags.DEFINE_string("eval_split", None, "TFDS split to evaluate on; default: the config's.")
flags.DEFINE_list(
    "eval_datasets",
    [],
    f"OOD sets to evaluate a 1000-class ImageNet model on, of: {', '.join(EVAL_DATASETS)}.",
)


def main(args: list[str]) -> None:
    app.no_positional(args, "--gin_file=gin/vit_b16.gin --checkpoint=PATH --workdir=DIR")
    for name in ("gin_file", "checkpoint", "workdir"):
        if not FLAGS[name].value:
            raise UsageError(f"--{name} is required; see --help")
    # Before the heavy imports; evaluate_checkpoint checks again under the workdir's lock.
    workdir_lock.check_free(FLAGS.workdir)
    refuse_occupied(FLAGS.workdir)
    gin_params = cli_flags.gin_params()
    if FLAGS.eval_split:
        gin_params.append(f"DataSpec.eval_split={FLAGS.eval_split!r}")
    if FLAGS.eval_datasets:
        try:
            check_eval_datasets(FLAGS.eval_datasets, "--eval_datasets")
        except ValueError as error:
            raise UsageError(str(error)) from error
        gin_params.append(f"TrainSpec.eval_datasets={tuple(FLAGS.eval_datasets)!r}")
    # A bad binding, value or path is one line before JAX, TensorFlow or the model code loads.
    experiment.parse_experiment(cli_flags.gin_files(), gin_params)
    preflight.existing_checkpoint(FLAGS.checkpoint, format_name=FLAGS.format)
    from harness.train import evaluate_checkpoint

    payload = evaluate_checkpoint.evaluate_checkpoint(
        cli_flags.gin_files(), gin_params, FLAGS.checkpoint, FLAGS.workdir, FLAGS.format
    )
    for name, row in payload.get("ood", {}).items():
        print(f"{name}: top-1 {row['top1']:.4f} ({row['correct']}/{row['counted']})")
    if "shape_bias" in payload:
        print(f"shape bias {payload['shape_bias']['shape_bias']:.4f}")
    print(f"top-1 {payload['eval']['eval/top1']:.4f}; results: {FLAGS.workdir}/results.json")


if __name__ == "__main__":
    app.run(main)
