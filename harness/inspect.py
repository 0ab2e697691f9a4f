r"""Size and compute of a gin-configured model, built abstractly (no weights in memory).

  python -m harness.inspect --gin_file=gin/vmoe_h14.gin [--gin_param=B ...] [--json]
      [--mesh=DATA,EXPERT,MODEL] [--noxla_flops]

Prints params_total, params_body, params_active, gflops_per_image and XLA's FLOP count
(definitions in harness/measure.py), and the bytes of weights
each device holds on the given mesh. A table for people; one JSON object with --json.
"""

import json
import time

from absl import app, flags

from harness import config, gin_flags, measure
from harness.errors import UsageError, run_cli
from models import builders, specs

FLAGS = flags.FLAGS
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


def inspect_model(spec: specs.ModelSpec, mesh: list[int], xla_flops: bool = True) -> dict:
    """Returns the inspect record (a flat dict) for one model spec."""
    model_config = builders.build_model(spec, mesh_shape=mesh)
    variables = measure.abstract_variables(model_config, spec)
    counts = measure.count_params(variables, spec)
    record = {
        "family": spec.family,
        "params_total": counts.total,
        "params_body": counts.body,
        "params_active": counts.active,
        "gflops_per_image": round(measure.analytic_gflops_per_image(spec), 4),
        "xla_gflops_per_image": None,
        "mesh": dict(zip(specs.MESH_AXES, mesh, strict=True)),
        "param_bytes_per_device": measure.param_bytes_per_device(variables, mesh, specs.MESH_AXES),
    }
    if xla_flops:
        flops = measure.xla_gflops_per_image(model_config, spec)
        record["xla_gflops_per_image"] = None if flops is None else round(flops, 4)
    return record


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


def main() -> None:
    if not gin_flags.GIN_FILES.value:
        raise UsageError("--gin_file is required; e.g. --gin_file=gin/vit_b16.gin")
    mesh = parse_mesh(FLAGS.mesh)
    config.parse_gin(gin_flags.GIN_FILES.value, gin_flags.GIN_PARAMS.value)
    start = time.perf_counter()
    try:
        spec = specs.ModelSpec()
        record = {"gin_files": gin_flags.GIN_FILES.value}
        record.update(inspect_model(spec, mesh, FLAGS.xla_flops))
    except ValueError as error:  # invalid model settings (k > E, bad placement, ...)
        raise UsageError(str(error)) from error
    record["inspect_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(record) if FLAGS.json else format_table(record))


if __name__ == "__main__":
    app.run(lambda argv: run_cli(main))
