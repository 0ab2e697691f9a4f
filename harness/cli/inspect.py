r"""Size and compute of a gin-configured model, built abstractly (no weights in memory).

  python -m harness.inspect --gin_file=gin/vmoe_h14.gin [--gin_param=B ...] [--json]
      [--mesh=DATA,EXPERT,MODEL] [--noxla_flops]

Prints params_total, params_body, params_active, gflops_per_image and XLA's FLOP count
(definitions in harness/measure/params_flops.py), and the bytes of weights each device holds
on the given mesh. A table for people; one JSON object with --json.
"""

import json
import time

from absl import flags

from harness.cli import app
from harness.cli import flags as cli_flags
from harness.errors import UsageError

FLAGS = flags.FLAGS
cli_flags.define_gin_flags()
flags.adopt_module_key_flags(cli_flags)
flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
flags.DEFINE_string("mesh", "1,1,1", "Mesh sizes DATA,EXPERT,MODEL for bytes per device.")
flags.DEFINE_bool("xla_flops", True, "Also report XLA's FLOP count of the lowered forward.")


def parse_mesh(text: str) -> list[int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(
            f"--mesh={text} is not three positive sizes; use DATA,EXPERT,MODEL like 1,8,1"
        )
    return [int(p) for p in parts]


def format_table(record: dict) -> str:
    width = max(len(k) for k in record)
    lines = []
    for key, value in record.items():
        if isinstance(value, int) and not isinstance(value, bool):
            text = f"{value:,}"
        elif value is None:
            text = "not computed"
        else:
            text = str(value)
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def main(args: list[str]) -> None:
    app.no_positional(args, "--gin_file=gin/vit_b16.gin")
    if not cli_flags.gin_files():
        raise UsageError("--gin_file is required; e.g. --gin_file=gin/vit_b16.gin")
    mesh = parse_mesh(FLAGS.mesh)
    from harness import gin_config
    from harness.train.experiment import check_mesh_fits_model
    from models.specs import ModelSpec

    gin_config.parse_gin(cli_flags.gin_files(), cli_flags.gin_params())
    start = time.perf_counter()
    try:
        spec = ModelSpec()
        check_mesh_fits_model(spec, tuple(mesh))
        from harness.measure import model_summary  # praxis and JAX: only for a valid model

        record = {"gin_files": cli_flags.gin_files()}
        record.update(model_summary.inspect_model(spec, mesh, FLAGS.xla_flops))
    except ValueError as error:  # invalid model settings (k > E, bad placement, ...)
        raise UsageError(str(error).splitlines()[0]) from error
    record["inspect_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(record) if FLAGS.json else format_table(record))


if __name__ == "__main__":
    app.run(main)
