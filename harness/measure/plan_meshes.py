"""The meshes the memory plan compiles the train step on. No JAX here: harness.inspect asks
for that many simulated CPU devices before JAX starts (XLA reads the count once).
"""

import math
from collections.abc import Sequence

# Under FSDP the step compiles at these data-axis sizes and the temporaries are fitted as
# fixed + split / data through both (harness/measure/step_temporaries.py).
FSDP_DATA_SIZES = (2, 4)


def compile_meshes(mesh: Sequence[int], shard_params_over_data: bool) -> list[tuple[int, int, int]]:
    """Without FSDP the data axis only replicates the step, so it compiles with data=1."""
    _, expert, model = mesh
    if shard_params_over_data and mesh[0] > 1:
        return [(data, expert, model) for data in FSDP_DATA_SIZES]
    return [(1, expert, model)]


def device_count(mesh: Sequence[int], shard_params_over_data: bool) -> int:
    """Simulated CPU devices the plan of `mesh` compiles on."""
    return max(math.prod(m) for m in compile_meshes(mesh, shard_params_over_data))
