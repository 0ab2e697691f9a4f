"""Evaluate weights from any checkpoint and record them as a run directory, as if trained here.

The released ViT and V-MoE checkpoints (and our own runs) are imported strictly into the gin
config's model (harness/checkpoint_formats), evaluated on the config's eval split (and on the
OOD sets of TrainSpec.eval_datasets: harness/transfer/ood_eval.py), and written with the same
files a training run writes: config.gin, an orbax checkpoint of the weights, TensorBoard events and
results.json. So `harness.sweep`, `harness.report` and TensorBoard treat a published model
exactly like one trained here, and its C/k sweep is the published weights'.
"""

import contextlib
import time
from typing import Any

import gin
import jax
import jax.numpy as jnp
from clu import metric_writers

from harness import files, storage
from harness.checkpoint_formats.importer import import_params
from harness.config import gin_config
from harness.config.experiment import Experiment, validate
from harness.data import metadata
from harness.errors import UsageError, one_line
from harness.measure import routing_health
from harness.run_dir import lock as workdir_lock
from harness.run_dir import run_record
from harness.run_dir.occupancy import refuse_occupied
from harness.runtime.checkpointing import Checkpointer
from harness.runtime.steps import TrainState
from harness.train.launch import (
    OPERATIVE_CONFIG_FILE,
    describe_run,
    make_workdir,
    prepare_workdir,
)


def evaluate_checkpoint(
    gin_files: list[str],
    gin_params: list[str],
    checkpoint: str,
    workdir: str,
    format_name: str | None = None,
) -> dict[str, Any]:
    """Imports `checkpoint` into the gin config's model, evaluates it and writes `workdir`;
    returns the results.json payload. Bad input raises UsageError before anything is written,
    and so does a `workdir` that another process holds or that holds another run's results or
    checkpoints (saving our step 0 with keep=1 would prune that run's steps)."""
    # JAX state: after flags and distributed.
    from harness.runtime.sharded_model import ShardedModel
    from harness.train import trainer as trainer_lib
    from harness.transfer import evaluators

    # Checked before the heavy work, then again under the lock, before the first write.
    workdir_lock.check_free(workdir)
    refuse_occupied(workdir)
    config_text = gin_config.parse_gin(gin_files, gin_params)
    try:
        experiment = Experiment.from_gin()
        mesh_shape = validate(experiment, jax.device_count())
        sharded = ShardedModel(experiment, workdir, mesh_shape)
        # Each evaluator is checked ready here, before the import.
        run_evaluators = evaluators.for_experiment(sharded)
    except metadata.DatasetNotFoundError as error:
        raise UsageError(str(error)) from error
    except ValueError as error:
        raise UsageError(one_line(str(error).splitlines()[0])) from error
    abstract = sharded.abstract_state()
    host_params, format_used = import_params(
        checkpoint, abstract.params, model=" ".join(gin_files), format_name=format_name
    )
    print(f"imported {checkpoint} ({format_used})", flush=True)
    params = jax.device_put(host_params, sharded.state_shardings.params)
    make_workdir(workdir)
    lock = workdir_lock.locked(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        refuse_occupied(workdir)  # a run may have started there meanwhile
        prepare_workdir(workdir, config_text, experiment)
        started, clock = run_record.timestamp(), time.perf_counter()
        evaluation = sharded.evaluate(params)
        seconds = time.perf_counter() - clock
        outputs = [evaluator(sharded, params, 0) for evaluator in run_evaluators]
        routing = trainer_lib.routing_summary(evaluation)
        health, layers = routing_health.from_evaluation(
            evaluation.metrics,
            routing.get("expert_load", {}),
            routing_health.describe_router(experiment.model.moe, evaluation=True),
        )
        _save_weights(sharded, params, workdir)
        if jax.process_index() == 0:
            for block, layer in layers.items():
                reason = layer.collapse()
                if reason is not None:
                    print(routing_health.warning_line(block, reason, "on the evaluation data"))
            writer = metric_writers.SummaryWriter(workdir)
            writer.write_hparams(run_record.hparams(experiment))
            trainer_lib.write_evaluation(writer, 0, evaluation)
            # Nothing was trained here, so the layers' health on the evaluation data takes
            # the routing/<block>/... tags a training run fills.
            health_scalars = {}
            for block, layer in layers.items():
                health_scalars.update(layer.tensorboard_scalars(block))
            if health_scalars:
                writer.write_scalars(0, health_scalars)
            for output in outputs:
                if output.scalars:
                    writer.write_scalars(0, output.scalars)
            writer.flush()
        payload = describe_run(gin_files, gin_params, workdir, config_text, sharded, mesh_shape)
        payload["run"]["started"] = started
        payload["run"]["imported_from"] = {"checkpoint": checkpoint, "format": format_used}
        payload.update(
            {
                # Not trained here: no training time, energy or throughput to report.
                "train": {"steps": 0, "wall_seconds": 0.0, "images_per_second": None},
                "eval": {**evaluation.metrics, "eval/wall_seconds": seconds},
                "routing": routing,
            }
        )
        for output in outputs:
            payload.update(output.results)
        if health:
            payload["routing_health"] = health
        if jax.process_index() == 0:
            files.write_json_atomically(storage.join(workdir, run_record.RESULTS_FILE), payload)
            files.write_text_atomically(
                storage.join(workdir, OPERATIVE_CONFIG_FILE), gin.operative_config_str()
            )
        return payload


def _save_weights(sharded: Any, params: Any, workdir: str) -> None:
    """An orbax checkpoint at step 0 in the training layout, so sweep and report restore it.

    The optimizer state is a fresh one: importing does not bring the original's."""
    with sharded.mesh:
        opt_state = jax.jit(sharded.tx.init, out_shardings=sharded.state_shardings.opt_state)(
            params
        )
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)
    checkpointer = Checkpointer(workdir, keep=1)
    checkpointer.save(0, state)
    checkpointer.close()
