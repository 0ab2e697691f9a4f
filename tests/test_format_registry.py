"""A new checkpoint format is one reader module and one registration
(harness/checkpoint_formats/registry.py). This file is that module: a toy JSON format, a
{our param path: nested list} map, detected by its '.weights.json' suffix and read strictly
into our tree like every other format."""

import json

import numpy as np
import pytest

from harness.checkpoint_formats import detect, registry
from harness.checkpoint_formats.importer import import_params
from harness.config.train_spec import TrainSpec

SUFFIX = ".weights.json"


def convert(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with open(path) as f:
        data = json.load(f)
    return {name: np.asarray(value, np.float32) for name, value in data.items()}, {}


@pytest.fixture
def json_format(monkeypatch):
    entry = registry.CheckpointFormat(__name__, "a toy JSON map", lambda p: p.endswith(SUFFIX))
    monkeypatch.setitem(registry.FORMATS, "toy_json", entry)


def test_a_registered_format_is_detected_and_imported(json_format, tmp_path):
    path = tmp_path / f"model{SUFFIX}"
    path.write_text(json.dumps({"head/w": [[1.0, 2.0]], "head/b": [0.5]}))
    abstract = {"head": {"w": np.zeros((1, 2), np.float32), "b": np.zeros(1, np.float32)}}
    assert detect.path_format(str(path)) == "toy_json"
    params, chosen = import_params(str(path), abstract, model="toy")
    assert chosen == "toy_json"
    assert import_params(str(path), abstract, model="toy", format_name="toy_json")[1] == "toy_json"
    np.testing.assert_array_equal(params["head"]["w"], [[1.0, 2.0]])
    np.testing.assert_array_equal(params["head"]["b"], [0.5])
    # The spec accepts the new name as it parses; an unknown one is still one line.
    assert TrainSpec(init_from=str(path), init_from_format="toy_json").init_from_format
    with pytest.raises(ValueError, match=r"'onnx' is unknown; use one of .*'toy_json'"):
        TrainSpec(init_from=str(path), init_from_format="onnx")
