"""One process of the multi-process test: trains a few steps of a tiny V-MoE through the real
input pipeline (embedded Fashion-MNIST) on a given mesh and prints the global batch size and
each step's loss, for each mesh in turn (one process start serves them all).

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT MESH...   (MESH like 1,1,2)

With NUM_PROCESSES=1 it is the reference: one process whose devices (set XLA_FLAGS to as many as
the mesh has) stand in for one process each. It reads every input shard those processes would
read and puts each shard's rows where that process would, so it sees the very same global
batches as the multi-process run.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

GLOBAL_BATCH = 16
STEPS = 2


def main() -> None:
    process_id, num_processes, port = (int(a) for a in sys.argv[1:4])
    if num_processes > 1:
        jax.config.update("jax_cpu_enable_gloo_collectives", True)
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=process_id,
        )
    for mesh in sys.argv[4:]:
        print(f"MESH {mesh}", flush=True)
        _train(mesh.split(","), num_processes)


def _train(mesh: list[str], num_processes: int) -> None:
    import gin

    from harness.config import gin_config
    from harness.config.experiment import Experiment, validate
    from harness.data import pipeline
    from harness.runtime import batch_layout
    from harness.train import trainer

    gin.clear_config()
    gin_config.parse_gin(
        ["gin/cpu/vmoe.gin"],
        [
            "TrainSpec.num_epochs=None",
            f"TrainSpec.num_steps={STEPS}",
            f"DataSpec.batch_size={GLOBAL_BATCH}",
            "DataSpec.shuffle_buffer=64",
            "OptimizerSpec.warmup_steps=0",  # so the second step's loss shows the first update
            "VitSpec.num_layers=2",
            "MoeSpec.num_experts=2",
            *(
                f"MeshSpec.{axis}={size}"
                for axis, size in zip(("data", "expert", "model"), mesh, strict=True)
            ),
        ],
    )
    experiment = Experiment.from_gin()
    run = trainer.Trainer(experiment, "/unused", validate(experiment, jax.device_count()))
    if num_processes > 1:
        batches = run.train_batches(0)
    else:
        batches = _as_if_one_process_per_device(run, pipeline, batch_layout)
    state = run.init_state()
    with run.mesh:
        for _ in range(STEPS):
            batch = run.global_batch(next(batches), run.batch_shardings)
            state, metrics = run.train_step(state, batch)
            print(f"BATCH {batch['label'].shape[0]}", flush=True)
            print(f"LOSS {float(metrics['train/loss']):.8f}", flush=True)


def _as_if_one_process_per_device(run, pipeline, batch_layout):
    sharding = run.batch_shardings["label"]
    devices = len(run.mesh.devices.flat)
    shards = [batch_layout.input_shard(sharding, p, lambda d: d.id) for p in range(devices)]
    streams = {
        s.index: pipeline.train_batches(
            run.experiment.data, s.index, s.count, seed=run.experiment.train.seed
        )
        for s in shards
    }
    while True:
        read = {index: next(stream) for index, stream in streams.items()}
        merged = {}
        for key in ("image", "label"):
            value = np.zeros((GLOBAL_BATCH, *read[0][key].shape[1:]), read[0][key].dtype)
            for s in shards:
                value[s.rows(GLOBAL_BATCH)] = read[s.index][key]
            merged[key] = value
        yield merged


if __name__ == "__main__":
    main()
