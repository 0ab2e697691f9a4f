"""One process of the multi-host test: trains one step on a fixed global batch and prints
the loss. Run as `python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

GLOBAL_BATCH = 16


def main() -> None:
    process_id, num_processes, port = (int(a) for a in sys.argv[1:4])
    if num_processes > 1:
        jax.config.update("jax_cpu_enable_gloo_collectives", True)
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=process_id,
        )
    from harness import gin_config
    from harness.train import trainer
    from harness.train.experiment import Experiment, validate

    gin_config.parse_gin(
        ["gin/cpu/vmoe.gin"],
        [
            "TrainSpec.num_epochs=None",
            "TrainSpec.num_steps=10",
            f"DataSpec.batch_size={GLOBAL_BATCH}",
            f"DataSpec.eval_batch_size={GLOBAL_BATCH}",
            "MoeSpec.num_experts=2",
        ],
    )
    experiment = Experiment.from_gin()
    mesh_shape = validate(experiment, jax.device_count())
    run = trainer.Trainer(experiment, workdir="/unused", mesh_shape=mesh_shape)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (GLOBAL_BATCH, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, GLOBAL_BATCH).astype(np.int32)
    local = GLOBAL_BATCH // num_processes
    mine = slice(process_id * local, (process_id + 1) * local)
    batch = run.global_batch({"image": images[mine], "label": labels[mine]}, run.batch_shardings)
    state = run.init_state()
    with run.mesh:
        _, metrics = run.train_step(state, batch)
    print(f"LOSS {float(metrics['train/loss']):.8f}", flush=True)


if __name__ == "__main__":
    main()
