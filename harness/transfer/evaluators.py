"""The evaluators a run can have, by name: each factory reads the run's specs and returns an
evaluator (harness/runtime/evaluator.py) or None when the run does not ask for it. It raises
UsageError (one line) when asked for an evaluation that cannot run, so a run stops before
training.

Adding one is one new module with its factory, and one line here.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.runtime.evaluator import Evaluator
from harness.transfer import fewshot_eval, ood_eval

if TYPE_CHECKING:
    from harness.runtime.sharded_model import ShardedModel

EvaluatorFactory = Callable[..., Evaluator | None]

EVALUATORS: dict[str, EvaluatorFactory] = {
    "fewshot": fewshot_eval.periodic,  # TrainSpec.fewshot_every_steps, FewShotSpec
    "ood": ood_eval.at_end,  # TrainSpec.eval_datasets
}


def for_experiment(model: "ShardedModel", **options: Any) -> list[Evaluator]:
    """The evaluators `model`'s experiment asks for, in EVALUATORS' order."""
    built = (factory(model, **options) for factory in EVALUATORS.values())
    return [evaluator for evaluator in built if evaluator is not None]
