"""The protocol the trainer runs evaluations through, besides its own pass over the eval split.

An evaluator is given the model, the weights and the step, and returns what to log and what
to keep. The trainer calls it every `every_steps` steps (0: never during training) and once
more after the last step unless it just ran there; the last call's `results` become sections
of results.json. Which evaluators a run has is configuration: harness/transfer/evaluators.py
maps each name to the factory that builds one from the run's specs, or declines.
"""

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the model type only: evaluators are built after it, by its owner
    from harness.runtime.sharded_model import ShardedModel


@dataclasses.dataclass(frozen=True)
class EvalOutput:
    """scalars: TensorBoard scalars at the step. results: top-level results.json sections."""

    scalars: dict[str, float]
    results: dict[str, Any]


class Evaluator(Protocol):
    every_steps: int

    def __call__(self, model: "ShardedModel", params: Any, step: int) -> EvalOutput: ...


def due(evaluator: Evaluator, step: int, last: bool) -> bool:
    """Whether the trainer runs `evaluator` after `step` (`last`: the final step)."""
    return last or bool(evaluator.every_steps and step % evaluator.every_steps == 0)
