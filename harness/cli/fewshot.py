r"""Few-shot linear evaluation of a trained run's frozen pre-logits features.

  python -m harness.fewshot RUN_DIR [--datasets=fashion_mnist] [--shots=1,5,10,25] [--seeds=3]
      [--l2_regs=1024] [--data_dir=DIR]

Restores the run's latest checkpoint (rebuilt from RUN_DIR/experiment.json; its gin is never
executed), extracts pre-logits features of each dataset's train and test splits in inference
mode (no dropout, no router noise), fits the closed-form ridge probe on s examples per class
for every seed, scores it on the whole test split, prints mean ± std over seeds per shot count
and dataset, and writes RUN_DIR/fewshot.json (every result, the summary, the method and the
command). Nothing else in RUN_DIR is written. Datasets are the names of
harness/data/fewshot_datasets.py; a probe on the run's own training data is labelled
in-domain, one of classes held out of its training (DataSpec.classes) transfer. With several
--l2_regs, each shot count reports the l2 of best mean rank over all datasets and seeds (V-MoE's
choice).
"""

import sys

from absl import flags

from harness import limits, storage
from harness.cli import app, preflight
from harness.cli import flags as cli_flags
from harness.errors import UsageError

FEWSHOT_FILE = "fewshot.json"
EXAMPLE = "python -m harness.fewshot runs/vit --datasets=fashion_mnist --shots=1,5"

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["fashion_mnist"], "Few-shot datasets (fewshot_datasets.py names).")
flags.DEFINE_list("shots", ["1", "5", "10", "25"], "Training examples per class.")
flags.DEFINE_integer("seeds", 3, "Number of seeds (0..N-1) drawing the shots.")
flags.DEFINE_list("l2_regs", ["1024"], "Ridge l2 strengths; several: best mean rank per shots.")
cli_flags.define_data_dir_flag()  # also the few-shot datasets' data_dir


def _parse_shots(values: list[str]) -> tuple[int, ...]:
    try:
        shots = tuple(int(s) for s in values)
    except ValueError as error:
        raise UsageError(f"--shots={','.join(values)} must be integers, e.g. 1,5,10,25") from error
    if not shots or any(s < 1 for s in shots):
        raise UsageError(f"--shots={','.join(values)} must all be >= 1, e.g. 1,5,10,25")
    return shots


def _parse_l2_regs(values: list[str]) -> tuple[float, ...]:
    try:
        l2_regs = tuple(float(v) for v in values)
    except ValueError as error:
        raise UsageError(f"--l2_regs={','.join(values)} must be numbers, e.g. 1024") from error
    if not l2_regs or any(not 0 < v < float("inf") for v in l2_regs):
        raise UsageError(f"--l2_regs={','.join(values)} must all be finite and > 0")
    return l2_regs


def _command(run_dir: str) -> str:
    parts = ["python -m harness.fewshot", run_dir]
    parts += [f"--datasets={','.join(FLAGS.datasets)}", f"--shots={','.join(FLAGS.shots)}"]
    parts += [f"--seeds={FLAGS.seeds}", f"--l2_regs={','.join(FLAGS.l2_regs)}"]
    if FLAGS.data_dir:
        parts.append(f"--data_dir={FLAGS.data_dir}")
    return " ".join(parts)


def main(args: list[str]) -> None:
    if len(args) != 1:
        raise UsageError(f"pass exactly one RUN_DIR, e.g. {EXAMPLE}")
    run_dir = args[0]
    shots, l2_regs = _parse_shots(FLAGS.shots), _parse_l2_regs(FLAGS.l2_regs)
    if FLAGS.seeds < 1:
        raise UsageError(f"--seeds={FLAGS.seeds} must be >= 1 (big_vision uses 3)")
    limits.check_at_most("seeds", FLAGS.seeds, limits.MAX_SEEDS, "seeds a few-shot run draws")
    from harness.data.fewshot_datasets import FEWSHOT_DATASETS, FewShotSpec

    unknown = [d for d in FLAGS.datasets if d not in FEWSHOT_DATASETS]
    if unknown or not FLAGS.datasets:
        raise UsageError(
            f"--datasets has unknown {unknown}; choose from {sorted(FEWSHOT_DATASETS)}"
        )
    spec = FewShotSpec(
        datasets=tuple(FLAGS.datasets),
        shots=shots,
        l2_regs=l2_regs,
        seeds=tuple(range(FLAGS.seeds)),
        data_dir=FLAGS.data_dir,
    )
    preflight.trained_run_dir(run_dir, FLAGS.data_dir)
    from harness import files
    from harness.runtime import restore
    from harness.transfer import features, fewshot

    run = restore.load_trained(run_dir, FLAGS.data_dir)
    payload, summary = features.evaluate_run(run, spec, _command(run_dir))
    print(payload["method"]["description"])
    for line in payload["method"]["settings"].values():
        print(line)
    print(fewshot.format_table(summary))
    path = storage.join(run_dir, FEWSHOT_FILE)
    files.write_json_atomically(path, payload)
    print(f"fewshot: {path}")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
