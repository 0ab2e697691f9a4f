"""The inspect record of a model spec: parameters, FLOPs and weight bytes per device, computed
abstractly (no weights in memory), as `python -m harness.inspect` and the suite print them."""

import dataclasses
from typing import Any

from harness.measure import params_flops
from harness.measure.weight_memory import Weights
from models import builders
from models.specs import MESH_AXES, ModelSpec


def inspect_model(
    spec: ModelSpec, mesh: list[int], xla_flops: bool = True, shard_params_over_data: bool = False
) -> dict[str, Any]:
    """Returns the inspect record (a flat dict) for one model spec; its weight bytes per device
    are split as the trainer splits them, over 'data' too under FSDP."""
    model_config = builders.build_model(spec, mesh_shape=mesh)
    variables = params_flops.abstract_variables(model_config, spec)
    counts = params_flops.count_params(variables, spec)
    record = {
        "family": spec.family,
        "params_total": counts.total,
        "params_body": counts.body,
        "params_active": counts.active,
        "gflops_per_image": round(params_flops.analytic_gflops_per_image(spec), 4),
        "xla_gflops_per_image": None,
        "mesh": dict(zip(MESH_AXES, mesh, strict=True)),
        "param_bytes_per_device": Weights.of_variables(variables).bytes_per_device(
            mesh, shard_params_over_data
        ),
    }
    if xla_flops:
        # XLA counts a scanned stack's loop body once, not once per layer; the unrolled model
        # does the same arithmetic, so count that.
        unrolled = dataclasses.replace(spec, vit=dataclasses.replace(spec.vit, scan_layers=False))
        flops = params_flops.xla_gflops_per_image(builders.build_model(unrolled, mesh), unrolled)
        record["xla_gflops_per_image"] = None if flops is None else round(flops, 4)
    return record
