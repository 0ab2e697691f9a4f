"""A run's transfer results read back as data: few-shot probes, out-of-distribution top-1 and
shape bias.

Few-shot results can be in two places: RUN_DIR/fewshot.json, written by
`python -m harness.fewshot RUN_DIR`, and results.json's "fewshot" section, written by the
periodic evaluator during training. Both hold the same payload. When both exist the file wins:
it is the explicit, later command. The report says which one it used. Out-of-distribution top-1
("ood") and shape bias ("shape_bias") are sections of results.json.

Everything here is JSON. A malformed section costs that section (with a warning), never the
report.
"""

import dataclasses
from typing import Any

from harness import storage
from harness.reporting.runs import Run, warn
from harness.run_dir import bounded, names
from harness.run_dir.results_schema import is_fraction, is_number

# The file `python -m harness.fewshot` writes into a run directory (harness/cli/fewshot.py; a
# test pins the two names together, since reporting may not import a command).
FEWSHOT_FILE = names.FEWSHOT_FILE
FROM_FILE = FEWSHOT_FILE
FROM_RESULTS = 'results.json["fewshot"]'
NOT_RECORDED = "not recorded"


@dataclasses.dataclass(frozen=True)
class FewShotRow:
    """Accuracy over seeds of one dataset at one shot count."""

    dataset: str
    setting: str  # 'in-domain', 'transfer', or NOT_RECORDED
    shots: int
    mean: float
    std: float
    num_seeds: int
    l2_reg: float


@dataclasses.dataclass(frozen=True)
class FewShot:
    """A run's few-shot payload: where it came from, how it was measured, its rows."""

    source: str  # FROM_FILE or FROM_RESULTS
    command: str
    description: str
    settings: list[str]  # one line per dataset: why it is in-domain or transfer
    rows: list[FewShotRow]


@dataclasses.dataclass(frozen=True)
class OodResult:
    name: str
    top1: float
    correct: int
    counted: int
    tfds_name: str
    split: str


@dataclasses.dataclass(frozen=True)
class ShapeBias:
    shape_bias: float
    shape_hits: int
    texture_hits: int
    conflict_images: int


@dataclasses.dataclass(frozen=True)
class RunTransfer:
    """Everything the transfer section shows of one run."""

    name: str
    in_distribution_top1: float
    command: str  # the command that wrote the run's results.json
    fewshot: FewShot | None
    ood: list[OodResult]
    shape_bias: ShapeBias | None


def _finite(value: Any, where: str) -> float:
    if not is_number(value):
        raise ValueError(f"{where}={value!r} is not a finite number")
    return float(value)


def _fewshot_rows(payload: dict[str, Any]) -> list[FewShotRow]:
    datasets = payload["method"]["datasets"]
    rows = []
    for tag, row in payload["summary"].items():
        # 'fewshot/<dataset>/<s>shot'; split from the right, so the dataset keeps any '/'.
        dataset, _, shot_text = tag.removeprefix("fewshot/").rpartition("/")
        if not dataset or not shot_text.endswith("shot"):
            raise ValueError(f"summary tag {tag!r} is not fewshot/<dataset>/<s>shot")
        for key, check in (("mean", is_fraction), ("std", is_number), ("l2_reg", is_number)):
            if not check(row[key]):
                raise ValueError(f"summary {tag!r} has {key}={row[key]!r}, not a finite value")
        rows.append(
            FewShotRow(
                dataset=dataset,
                setting=str(datasets.get(dataset, {}).get("setting", NOT_RECORDED)),
                shots=int(shot_text.removesuffix("shot")),
                mean=float(row["mean"]),
                std=float(row["std"]),
                num_seeds=int(row["num_seeds"]),
                l2_reg=float(row["l2_reg"]),
            )
        )
    order = {name: index for index, name in enumerate(dict.fromkeys(r.dataset for r in rows))}
    return sorted(rows, key=lambda r: (order[r.dataset], r.shots))


def _parse_fewshot(payload: Any, source: str, fallback_command: str) -> FewShot:
    method = payload["method"]
    return FewShot(
        source=source,
        # The periodic evaluator's payload is written by the training command itself.
        command=payload.get("command") or fallback_command,
        description=method.get("description", ""),
        settings=[str(line) for line in method.get("settings", {}).values()],
        rows=_fewshot_rows(payload),
    )


def read_fewshot(run: Run, fallback_command: str) -> FewShot | None:
    """RUN_DIR/fewshot.json if it is readable, else results.json's section, else None."""
    path = storage.join(run.path, FEWSHOT_FILE)
    if storage.exists(path):
        try:
            data = bounded.read_json_object(path)
            return _parse_fewshot(data, FROM_FILE, fallback_command)
        except bounded.UnreadableFile as error:
            warn(f"ignoring {path}: corrupt or incomplete ({error})")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            warn(f"ignoring {path}: corrupt or incomplete ({error!r})")
    if "fewshot" not in run.results:
        return None
    try:
        return _parse_fewshot(run.results["fewshot"], FROM_RESULTS, fallback_command)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        warn(f"ignoring {run.path}'s {FROM_RESULTS}: incomplete ({error!r})")
        return None


def read_ood(run: Run) -> list[OodResult]:
    section = run.results.get("ood")
    if not section:
        return []
    try:
        return [
            OodResult(
                name=name,
                top1=_finite(entry["top1"], f"ood.{name}.top1"),
                correct=int(entry["correct"]),
                counted=int(entry["counted"]),
                tfds_name=str(entry["tfds_name"]),
                split=str(entry["split"]),
            )
            for name, entry in section.items()
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        warn(f'ignoring {run.path}\'s results.json["ood"]: incomplete ({error!r})')
        return []


def read_shape_bias(run: Run) -> ShapeBias | None:
    section = run.results.get("shape_bias")
    if not section:
        return None
    try:
        return ShapeBias(
            shape_bias=_finite(section["shape_bias"], "shape_bias.shape_bias"),
            shape_hits=int(section["shape_hits"]),
            texture_hits=int(section["texture_hits"]),
            conflict_images=int(section["conflict_images"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        warn(f'ignoring {run.path}\'s results.json["shape_bias"]: incomplete ({error!r})')
        return None


def read_transfer(run: Run, command: str, name: str | None = None) -> RunTransfer:
    """The transfer results of `run`, shown under `name` (default: the run's name).

    `command` is the one that wrote the run's results.json; it stands in for a results.json
    few-shot payload without a command of its own.
    """
    return RunTransfer(
        name=name or run.name,
        in_distribution_top1=run.top1,
        command=command,
        fewshot=read_fewshot(run, command),
        ood=read_ood(run),
        shape_bias=read_shape_bias(run),
    )
