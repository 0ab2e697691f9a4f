"""SuiteSpec.single_seed_runs: the held-out-class few-shot runs train one seed, the paper claims
leave them out, and the suites bind them to the pretraining classes with few-shot probes."""

import gin
import pytest

from harness.config import gin_config
from harness.config.experiment import Experiment
from harness.config.suite_spec import DIVERGED_FILE, SuiteSpec, bindings_for, run_dir, seeds_of
from harness.data.fewshot_datasets import FASHION_MNIST_PRETRAIN_CLASSES
from harness.reporting import claims
from harness.suites import runner

# The tiny model of each family in the suites: gin/cpu/<name>.gin.
FAMILIES = ("vit", "vmoe", "widenet", "softmoe", "vit22b")
RUNS = [("vit", "gin/cpu/vit.gin", []), ("vit_heldout", "gin/cpu/vit.gin", [])]


def test_single_seed_runs_train_seed_zero_only(tmp_path, monkeypatch):
    spec = SuiteSpec(root=str(tmp_path), seeds=3, runs=RUNS, single_seed_runs=["vit_heldout"])
    assert list(seeds_of(spec, "vit")) == [0, 1, 2]
    assert list(seeds_of(spec, "vit_heldout")) == [0]
    trained = []
    monkeypatch.setattr(
        runner.launch, "train", lambda files, bindings, workdir: trained.append(workdir)
    )
    runner.train_all(spec)
    assert trained == [
        run_dir(spec, "vit", 0),
        run_dir(spec, "vit", 1),
        run_dir(spec, "vit", 2),
        run_dir(spec, "vit_heldout", 0),
    ]


def test_claims_read_only_the_seeds_a_run_trains(tmp_path):
    spec = SuiteSpec(root=str(tmp_path), seeds=2, runs=RUNS, single_seed_runs=["vit_heldout"])
    # A stray seed_1 of the single-seed run is not one of its seeds.
    for name, seed in [("vit", 0), ("vit", 1), ("vit_heldout", 0), ("vit_heldout", 1)]:
        path = tmp_path / name / f"seed_{seed}"
        path.mkdir(parents=True)
        (path / DIVERGED_FILE).write_text("{}")
    loaded = claims.load(spec)
    assert loaded["vit"].diverged == 2 and loaded["vit_heldout"].diverged == 1


def test_single_seed_runs_must_name_runs():
    with pytest.raises(ValueError, match=r"single_seed_runs has \['vit_held'\]"):
        SuiteSpec(runs=RUNS, single_seed_runs=["vit_held"])


@pytest.mark.parametrize("suite", ["gin/suites/paper_claims.gin", "gin/suites/demo.gin"])
def test_every_family_has_a_one_seed_held_out_class_run(suite):
    gin_config.parse_gin([suite], [])
    spec = SuiteSpec()
    gin.clear_config()
    heldout = {name: (f, extra) for name, f, extra in spec.runs if name.endswith("_heldout")}
    assert sorted(heldout) == sorted(f"{n}_heldout" for n in FAMILIES)
    assert sorted(spec.single_seed_runs) == sorted(heldout)
    for name, (gin_file, extra) in heldout.items():
        gin_config.parse_gin([gin_file], bindings_for(spec, extra, 0))
        experiment = Experiment.from_gin()
        gin.clear_config()
        assert experiment.data.classes == FASHION_MNIST_PRETRAIN_CLASSES, name
        assert experiment.model.vit.num_classes == len(FASHION_MNIST_PRETRAIN_CLASSES), name
        assert experiment.train.fewshot_every_steps > 0, name
        assert experiment.fewshot.datasets == ("fashion_mnist_heldout",), name
        assert experiment.fewshot.shots == (1, 5, 10, 25) and len(experiment.fewshot.seeds) == 3
