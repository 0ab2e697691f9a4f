"""The shape of the JSON files a run directory holds, as the report reads them.

A shared run directory may hold anything a JSON parser accepts (issue 26: a results.json
without 'train', a string top-1, versions as a list, a heatmap that is not a matrix, a block
name with '/', a sweep point without top1, an infinite few-shot value; each was a traceback).
Readers check here first: a malformed field the run cannot be shown without is `Malformed`
(the report skips the run with one warning); an optional section that is malformed is dropped
with one warning and the rest of the run is shown.
"""

import math
from collections.abc import Callable
from typing import Any

from harness.errors import UsageError


class Malformed(UsageError):
    """A JSON value is not what the harness writes there; the message names the field."""


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, which JSON readers would take for 0 or 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_text(value: Any) -> bool:
    return isinstance(value, str)


def is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_text_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def is_fraction(value: Any) -> bool:
    return is_number(value) and 0 <= value <= 1


def field(data: Any, path: str, check: Callable[[Any], bool], what: str) -> Any:
    """data[a][b]... for `path` 'a.b...' (a key may hold '/', as 'eval/top1'), checked."""
    value = data
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise Malformed(f"has no {path}")
        value = value[key]
    if not check(value):
        raise Malformed(f"has {path}={_short(value)}, not {what}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# What the report shows of every run; without any of these the run is skipped.
RESULTS_FIELDS = (
    ("run.family", is_text, "a family name"),
    ("run.gin_files", is_text_list, "a list of file names"),
    ("run.gin_params", is_text_list, "a list of bindings"),
    ("run.versions", is_text_map, "a map of package versions"),
    ("run.devices.count", is_count, "a device count"),
    ("run.devices.process_count", is_count, "a process count"),
    ("run.devices.kind", is_text, "a device kind"),
    ("run.devices.platform", is_text, "a platform name"),
    ("run.devices.host", is_text, "a host name"),
    ("eval.eval/top1", is_fraction, "an accuracy in [0, 1]"),
    ("model.params_total", is_count, "a parameter count"),
    ("model.params_active", is_count, "a parameter count"),
    ("model.gflops_per_image", is_number, "a finite number"),
    ("train.wall_seconds", lambda v: is_number(v) and v >= 0, "a time in seconds"),
)


def check_results(payload: Any) -> None:
    """Raises Malformed naming the first field the report needs that is missing or wrong."""
    for path, check, what in RESULTS_FIELDS:
        field(payload, path, check, what)


def optional_problem(payload: dict[str, Any], section: str) -> str | None:
    """What is wrong with results.json's optional `section` ('energy', 'routing',
    'train.images_per_second'), or None when it is absent or well-formed."""
    checks = {"energy": _check_energy, "routing": _check_routing}
    try:
        if section == "train.images_per_second":
            value = payload["train"].get("images_per_second")
            if value is not None and not (is_number(value) and value > 0):
                raise Malformed(f"has {section}={_short(value)}, not a positive rate")
        elif payload.get(section) is not None:
            checks[section](payload[section])
    except Malformed as error:
        return str(error)
    return None


def _check_energy(energy: Any) -> None:
    measured = field({"energy": energy}, "energy", lambda v: isinstance(v, dict), "a map")
    codecarbon = measured.get("codecarbon")
    if not isinstance(codecarbon, dict) or codecarbon.get("kwh") is None:
        return  # shown as not recorded / not measured
    section = {"energy": energy}
    field(section, "energy.codecarbon.kwh", lambda v: is_number(v) and v >= 0, "kWh")
    field(section, "energy.codecarbon.kind", is_text, "a text")
    if "methods" in codecarbon:
        field(section, "energy.codecarbon.methods", is_text_map, "a map of methods")
    for key in ("attempts", "attempts_metered"):
        if key in codecarbon:
            field(section, f"energy.codecarbon.{key}", is_count, "a count")


def safe_name(name: Any) -> bool:
    """A name that may become part of a file name in the report's plots folder."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 100
        and name not in (".", "..")
        and not any(c in name for c in "/\\\0")
    )


def _is_matrix(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(row, list) and len(row) == len(value[0]) > 0 for row in value)
        and all(is_number(x) and x >= 0 for row in value for x in row)
    )


def _check_routing(routing: Any) -> None:
    section = {"routing": routing}
    field(section, "routing", lambda v: isinstance(v, dict), "a map")
    for key in ("expert_class_counts", "expert_load"):
        blocks = routing.get(key) or {}
        field({key: blocks}, key, lambda v: isinstance(v, dict), "a map of blocks")
        for block, value in blocks.items():
            if not safe_name(block):
                raise Malformed(f"has routing.{key} block {_short(block)}, not a plain name")
            if key == "expert_class_counts" and not _is_matrix(value):
                raise Malformed(f"has routing.{key}.{block}, not a matrix of counts")
            if key == "expert_load" and not (
                isinstance(value, list) and all(is_number(x) for x in value)
            ):
                raise Malformed(f"has routing.{key}.{block}, not a list of numbers")


SWEEP_POINT_FIELDS = (
    ("routing", is_text, "a routing name"),
    ("k", is_count, "a k"),
    ("capacity_factor", lambda v: is_number(v) and v > 0, "a capacity factor"),
    ("top1", is_fraction, "an accuracy in [0, 1]"),
    ("dropped_fraction", is_fraction, "a fraction"),
    ("gflops_per_image", is_number, "a finite number"),
    ("ms_per_batch_p50", is_number, "a time in ms"),
)


def check_sweep(payload: Any) -> None:
    """Raises Malformed naming the first field of sweep.json the report cannot show."""
    for path in ("trained_routing.k", "trained_routing.capacity_factor"):
        field(payload, path, is_number, "a number")
    field(payload, "trained_routing.batch_priority", lambda v: isinstance(v, bool), "true/false")
    field(payload, "checkpoint_step", is_count, "a step")
    field(payload, "timing_method", is_text, "a text")
    field(payload, "command", is_text, "a command")
    points = field(payload, "points", lambda v: isinstance(v, list) and v, "a list of points")
    for index, point in enumerate(points):
        for name, check, what in SWEEP_POINT_FIELDS:
            field({f"points[{index}]": point}, f"points[{index}].{name}", check, what)
        per_image = point.get("per_image_processed")
        if per_image is not None:
            field(per_image, "std", is_number, "a finite number")
