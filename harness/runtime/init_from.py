"""Fine-tuning's (or upcycling's) starting point: a pretrained body, a new zero head
(TrainSpec.init_from).

The weights come from a run directory of ours (read through its experiment.json and its orbax
checkpoint; its gin is never parsed) or a released checkpoint (the harness/checkpoint_formats
readers).
Every parameter is copied by path, strictly, with two exceptions that transfer requires, as
vision_transformer, big_vision and V-MoE fine-tune:

- the classification head is replaced for the new class count and zero-initialised (kernel
  and bias), so the fine-tuned model starts from uniform predictions;
- the position embedding is resampled to the new patch grid when the resolution differs
  (harness/checkpoint_formats/posemb.py: bilinear over the grid, the class-token row kept apart).

A dense checkpoint for a sparse model (V-MoE) is upcycled instead (harness/runtime/upcycle.py):
each MoE block's experts are tiled from its dense MLP, the routers keep the model's own
initialisation, and the head is kept when the class counts match (upcycling continues
pretraining on the same labels), else replaced as above. TrainSpec.init_from_head='keep' or
'new' says so for either path (a dense run continued on its own labels keeps its head).

Anything else that does not fit (another shape, a missing or an extra tensor) is one line
naming the parameter and both shapes. This runs only on a fresh start: a fine-tuning run
resumes from its own checkpoints, never from the pretrained weights again.
"""

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from harness import files, storage
from harness.checkpoint_formats import detect, importer, orbax_run, posemb, tree_mapping
from harness.config.experiment_file import load_experiment
from harness.errors import UsageError, one_line
from harness.run_dir import checkpoint_steps, checksums, names
from harness.runtime import upcycle
from harness.runtime.steps import TrainState
from models import scan_layout

HEAD_PREFIX = "head/"
RECORD_FILE = names.INIT_FROM_FILE  # what the run started from, for results.json on every attempt


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Host params shaped like the fine-tuned model, and where they came from (JSON data)."""

    params: dict[str, Any]
    record: dict[str, Any]


def _is_head(path: str) -> bool:
    return path.startswith(HEAD_PREFIX)


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    return traverse_util.unflatten_dict(dict(flat), sep=tree_mapping.SEPARATOR)


def _shapes(tree: Mapping[str, Any]) -> dict[str, list[int]]:
    return {k: list(np.shape(v)) for k, v in sorted(tree.items())}


def _describe_run_dir(path: str) -> tuple[dict[str, Any], int]:
    """What a pretrained run directory was (from experiment.json) and its latest step, after
    checking that step's files against their checksums."""
    experiment = load_experiment(path)  # refuses a config.gin that imports code
    steps = checkpoint_steps.saved_steps(path)
    if not steps:
        raise UsageError(
            f"TrainSpec.init_from={path!r} has no checkpoint; train it with harness.run first"
        )
    step_dir = storage.join(path, orbax_run.CHECKPOINT_DIR, str(steps[-1]))
    try:
        checksums.verify(step_dir)
    except ValueError as error:
        raise UsageError(
            f"TrainSpec.init_from={path!r}: checkpoint {step_dir} is damaged ({one_line(error)}); "
            "give another run directory"
        ) from error
    vit = experiment.model.vit
    upstream = {
        "family": experiment.model.family,
        "dataset": experiment.data.dataset,
        "num_classes": vit.num_classes,
        "image_size": vit.image_size,
        "patch_size": vit.patch_size,
    }
    return upstream, steps[-1]


def load_pretrained(
    path: str,
    abstract_params: Mapping[str, Any],
    *,
    model: str,
    format_name: str | None = None,
    log: posemb.Log = posemb.log_to_stderr,
    fresh_init: upcycle.FreshInit | None = None,
    head: str | None = None,
) -> Pretrained:
    """Reads `path` into the fine-tuned model's tree: pretrained body, zero head. A dense
    checkpoint for a sparse model is upcycled (harness/runtime/upcycle.py) and keeps its head
    when the class counts match.

    Args:
      path: A run directory of ours, a vision_transformer or big_vision .npz, or a V-MoE
        checkpoint prefix (local or gs://).
      abstract_params: The fine-tuned model's params (only shapes and dtypes are used).
      model: What the model was built from, named in errors.
      format_name: One of harness.checkpoint_formats.FORMATS to skip detection; None detects.
      log: Receives the line saying the position embedding was resampled, if it was, and
        the line saying what upcycling copied, tiled and freshly initialised.
      fresh_init: The model's own initial values for given paths (the routers upcycling
        cannot copy); needed only to upcycle.
      head: TrainSpec.init_from_head: None (fine-tuning: new; upcycling: kept if it fits),
        'keep' (must fit) or 'new'.

    Raises:
      UsageError: One line for an unreadable or damaged checkpoint, or one that does not fit
        the model outside the head and the position embedding's grid.
    """
    chosen = detect.check_format_name(format_name) if format_name else detect.path_format(path)
    upstream, step = _describe_run_dir(path) if chosen == detect.RUN else (None, None)
    chosen, (tensors, sources) = importer.read_checkpoint(path, format_name, step)
    # Everything below works per block whatever the model's layout; a scanned model's
    # stacks are assembled at the end (models/scan_layout.py).
    model_wanted = tree_mapping.flat_paths(abstract_params)
    wanted = scan_layout.to_blocks(model_wanted)
    old_head = {k: v for k, v in tensors.items() if _is_head(k)}
    body = {k: v for k, v in tensors.items() if not _is_head(k)}
    resampled: list[str] = []

    def log_and_keep(line: str) -> None:
        resampled.append(line)
        log(line)

    importer.fit_position_embedding(body, wanted, log_and_keep)
    body_wanted = {k: v for k, v in wanted.items() if not _is_head(k)}
    wanted_head = {k: v for k, v in wanted.items() if _is_head(k)}
    upcycled = None
    if upcycle.is_dense_to_sparse(body, body_wanted):
        if fresh_init is None:
            raise TypeError("upcycling a dense checkpoint needs fresh_init for the routers")
        upcycled = upcycle.upcycle(body, body_wanted, fresh_init, checkpoint=path)
        body = upcycled.tensors
    filled = tree_mapping.fill_tree(
        _unflatten(body_wanted),
        body,
        checkpoint=path,
        model=model,
        source_names=sources,
    )
    # Upcycling continues pretraining on the same labels (the paper's setting), so a head
    # that fits is the dense model's; a new class count is fine-tuning: a new zero head.
    head_fits = _shapes(old_head) == _shapes(wanted_head)
    if head == "keep" and not head_fits:
        raise UsageError(
            f"TrainSpec.init_from_head='keep' but {path}'s head {_shapes(old_head)} does not "
            f"fit the model's {_shapes(wanted_head)}; use init_from_head=None for a new head"
        )
    head_kept = head_fits and (head == "keep" or (head is None and upcycled is not None))
    new_head = {
        k: np.asarray(old_head[k], v.dtype) if head_kept else np.zeros(v.shape, v.dtype)
        for k, v in wanted_head.items()
    }
    blocks = {**tree_mapping.flat_paths(filled), **new_head}
    params = _unflatten(scan_layout.to_layout(blocks, model_wanted)[0])
    if upcycled is not None:
        kept = "copied" if head_kept else "new and zero"
        log(upcycle.summary(upcycled, storage.absolute(path), kept))
    record = {
        "checkpoint": storage.absolute(path),
        "format": chosen,
        "step": step,
        "upstream": upstream,
        "head": {
            "checkpoint": _shapes(old_head),
            "model": _shapes(new_head),
            "init": "copied" if head_kept else "zeros",
        },
        "position_embedding": resampled[0] if resampled else "copied unchanged",
    }
    if upcycled is not None:
        record["upcycled"] = upcycle.record(upcycled)
    return Pretrained(params=params, record=record)


def load_for(sharded: Any) -> Pretrained:
    """`load_pretrained` for a ShardedModel's experiment and model (untyped: sharded_model.py
    imports this module)."""
    train = sharded.experiment.train
    return load_pretrained(
        train.init_from,
        sharded.abstract_state().params,
        model="the fine-tuning model (gin)",
        format_name=train.init_from_format,
        fresh_init=sharded.fresh_params,
        head=train.init_from_head,
    )


def initial_state(sharded: Any, pretrained: Pretrained) -> TrainState:
    """Step 0 of a fine-tuning run: the pretrained params placed on the model's mesh and a
    fresh optimiser state (the pretraining's moments belong to another objective)."""
    params = jax.device_put(pretrained.params, sharded.state_shardings.params)
    with sharded.mesh:
        opt_state = jax.jit(sharded.tx.init, out_shardings=sharded.state_shardings.opt_state)(
            params
        )
    step = jax.device_put(jnp.zeros((), jnp.int32), sharded.state_shardings.step)
    return TrainState(step=step, params=params, opt_state=opt_state)


def write_record(workdir: str, pretrained: Pretrained) -> None:
    """RUN_DIR/init_from.json, written at the fresh start only (a workdir without checkpoints
    holds nothing trained, so a record left by an earlier start is stale and replaced)."""
    files.write_json_atomically(storage.join(workdir, RECORD_FILE), pretrained.record)


def read_record(workdir: str) -> dict[str, Any] | None:
    """What `write_record` wrote, for results.json["run"]["init_from"]; None if unreadable."""
    try:
        return json.loads(storage.read_text(storage.join(workdir, RECORD_FILE)))
    except (OSError, ValueError):
        return None
