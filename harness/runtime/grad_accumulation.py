"""Gradient accumulation (TrainSpec.microbatches): one optimizer update from a batch run as
several micro-batches in sequence.

The forward and backward pass of one micro-batch at a time is what lives in memory, so a step's
activations shrink with the micro-batch while the update is the one of the whole batch: the
gradient of the mean loss is the mean of the micro-batches' gradients, since they are of equal
size. The loop is a `lax.scan`, so the step compiles one micro-batch, whatever their number.

Quantities a layer computes per batch are per micro-batch here and then averaged: MoE auxiliary
losses (importance and load are squared coefficients of variation over the micro-batch, not the
whole batch), routing statistics, and router noise, drawn from a key folded with the
micro-batch's index.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

Batch = dict[str, jax.Array]
# (params, batch, rng) -> ((loss, metrics), grads), as jax.value_and_grad(..., has_aux=True).
LossAndGrad = Callable[[Any, Batch, jax.Array], tuple[tuple[jax.Array, Batch], Any]]


def split_microbatches(array: jax.Array, microbatches: int) -> jax.Array:
    """[B, ...] -> [microbatches, B // microbatches, ...], micro-batch j taking rows j, j + m,
    j + 2m, ... . Interleaved rather than in blocks because the batch is sharded in blocks of
    rows over the devices: this way every device holds its share of every micro-batch, and
    splitting moves no data between devices."""
    rows = array.shape[0]
    if rows % microbatches:
        raise ValueError(f"a batch of {rows} does not split into {microbatches} micro-batches")
    interleaved = array.reshape(rows // microbatches, microbatches, *array.shape[1:])
    return jnp.swapaxes(interleaved, 0, 1)


def accumulating(
    loss_and_grad: LossAndGrad, microbatches: int, max_metrics: Sequence[str] = ()
) -> LossAndGrad:
    """`loss_and_grad` run over `microbatches` micro-batches of the batch, with the loss, the
    gradients and the metrics averaged over them (the metrics in `max_metrics`: their maximum).

    One micro-batch returns `loss_and_grad` itself, so the default step is unchanged.
    """
    if microbatches < 1:
        raise ValueError(f"TrainSpec.microbatches={microbatches} must be >= 1")
    if microbatches == 1:
        return loss_and_grad

    def accumulated(params: Any, batch: Batch, rng: jax.Array):
        parts = {name: split_microbatches(value, microbatches) for name, value in batch.items()}

        def one_microbatch(grad_sum: Any, inputs: tuple[jax.Array, Batch]):
            index, part = inputs
            (loss, metrics), grads = loss_and_grad(params, part, jax.random.fold_in(rng, index))
            return jax.tree_util.tree_map(jnp.add, grad_sum, grads), (loss, metrics)

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        grad_sum, (losses, metrics) = jax.lax.scan(
            one_microbatch, zeros, (jnp.arange(microbatches), parts)
        )
        grads = jax.tree_util.tree_map(lambda total: total / microbatches, grad_sum)
        # Over the micro-batch axis only: a per-expert load vector stays a vector.
        reduced = {
            name: jnp.max(values, axis=0) if name in max_metrics else jnp.mean(values, axis=0)
            for name, values in metrics.items()
        }
        return (jnp.mean(losses), reduced), grads

    return accumulated
