"""Sparse upcycling (TrainSpec.init_from with a dense checkpoint for a V-MoE config).

Equality at step 0 holds exactly where it holds mathematically (harness/runtime/upcycle.py):
with identical experts an MoE block outputs (sum of the token's combine weights) * MLP(x),
so the upcycled V-MoE computes the dense ViT's logits when those weights sum to 1 for every
token: top_k with k = E and capacity for every token (C >= 1), or expert_choice whose experts
each take the whole group (k * C >= E). V-MoE does not renormalise the selected gates, so
with k < E the block is scaled by the kept gates' sum and the logits differ.
"""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from praxis import base_layer

from harness.checkpoint_formats import tree_mapping
from harness.config import gin_config
from harness.config.experiment import Experiment
from harness.config.experiment_file import write_experiment
from harness.config.train_spec import MeshSpec, OptimizerSpec, TrainSpec
from harness.data.spec import DataSpec
from harness.errors import UsageError
from harness.runtime import init_from, upcycle
from harness.runtime.checkpointing import Checkpointer
from harness.runtime.steps import TrainState, apply_model
from harness.train import trainer
from models import builders, specs
from tests import checkpoint_writers as writers
from tests import reference_vit

DENSE = specs.VitSpec(
    image_size=8,
    patch_size=4,
    num_channels=1,
    num_classes=12,
    model_dims=16,
    num_layers=2,
    mlp_dims=32,
    num_heads=2,
)
EXPERTS = 4
GROUP_IMAGES = 2
MOE_BLOCK = "encoder/x_layers_1/ff_layer"  # every_2 on 2 blocks: block 1 is the MoE
DENSE_MLP = {
    f"{MOE_BLOCK}/moe/{leaf}": f"{MOE_BLOCK}/{src}" for leaf, src in upcycle.EXPERT_SOURCES.items()
}
ROUTER = f"{MOE_BLOCK}/moe/router"
FLOAT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def _sparse(**moe: object) -> specs.ModelSpec:
    settings = {
        "num_experts": EXPERTS,
        "num_selected_experts": EXPERTS,
        "capacity_factor": 1.0,
        "group_images": GROUP_IMAGES,
        "placement": "every_2",
        **moe,
    }
    return specs.ModelSpec(family="vmoe", vit=DENSE, moe=specs.MoeSpec(**settings))


def _model(model_spec: specs.ModelSpec) -> base_layer.BaseLayer:
    return base_layer.instantiate(builders.build_model(model_spec))


def _rngs(seed: int) -> dict:
    return {base_layer.PARAMS: jax.random.PRNGKey(seed), base_layer.RANDOM: jax.random.PRNGKey(1)}


def _images(model_spec: specs.ModelSpec, count: int = 2 * GROUP_IMAGES) -> jax.Array:
    vit = model_spec.vit
    shape = (count, vit.image_size, vit.image_size, vit.num_channels)
    return jax.random.normal(jax.random.PRNGKey(5), shape)


def _init(model_spec: specs.ModelSpec, seed: int) -> dict:
    model = _model(model_spec)
    return model.init(_rngs(seed), _images(model_spec, GROUP_IMAGES))[base_layer.PARAMS]


def _abstract(model_spec: specs.ModelSpec) -> dict:
    return jax.eval_shape(lambda: _init(model_spec, 0))


def _fresh_from(model_spec: specs.ModelSpec, seed: int) -> upcycle.FreshInit:
    """The sparse model's own initial values at `seed`, as Trainer.fresh_params gives them."""
    flat = tree_mapping.flat_paths(jax.device_get(_init(model_spec, seed)))
    return lambda paths: {path: flat[path] for path in paths}


def _save_run(run_dir: str, vit: specs.VitSpec, seed: int = 3) -> dict:
    """A dense run directory as harness.run leaves it; returns its params, flat, on the host."""
    model_spec = specs.ModelSpec(family="vit", vit=vit)
    params = _init(model_spec, seed)
    state = TrainState(step=jnp.asarray(7), params=params, opt_state={"count": jnp.asarray(1)})
    checkpointer = Checkpointer(run_dir, keep=1)
    checkpointer.save(7, state)
    checkpointer.close()
    experiment = Experiment(
        model=model_spec,
        train=TrainSpec(),
        mesh=MeshSpec(),
        optimizer=OptimizerSpec(),
        data=DataSpec(dataset="fashion_mnist"),
    )
    write_experiment(run_dir, experiment)
    return tree_mapping.flat_paths(jax.device_get(params))


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory) -> tuple[str, dict]:
    run_dir = str(tmp_path_factory.mktemp("dense"))
    return run_dir, _save_run(run_dir, DENSE)


def _upcycle(run_dir: str, model_spec: specs.ModelSpec, lines: list[str] | None = None):
    log = lines.append if lines is not None else (lambda _: None)
    return init_from.load_pretrained(
        run_dir,
        _abstract(model_spec),
        model="sparse.gin",
        log=log,
        fresh_init=_fresh_from(model_spec, seed=11),
    )


def _tree(flat: dict) -> dict:
    return traverse_util.unflatten_dict(
        {k: jnp.asarray(v) for k, v in flat.items()}, sep=tree_mapping.SEPARATOR
    )


# --- What each parameter becomes. ---


def test_experts_are_the_dense_mlp_the_router_is_the_models_own_init_the_rest_copied(
    dense_run,
):
    run_dir, saved = dense_run
    model_spec = _sparse()
    flat = tree_mapping.flat_paths(_upcycle(run_dir, model_spec).params)
    own_init = tree_mapping.flat_paths(jax.device_get(_init(model_spec, seed=11)))
    assert flat.keys() == own_init.keys()
    for expert, dense in DENSE_MLP.items():
        assert flat[expert].shape == (EXPERTS, *saved[dense].shape)
        for e in range(EXPERTS):
            np.testing.assert_array_equal(flat[expert][e], saved[dense], err_msg=expert)
    np.testing.assert_array_equal(flat[ROUTER], own_init[ROUTER])
    assert np.std(flat[ROUTER]) > 0  # a Gaussian draw, not zeros
    copied = flat.keys() - DENSE_MLP.keys() - {ROUTER}
    assert copied == saved.keys() - set(DENSE_MLP.values())  # head included: 12 classes match
    for name in copied:
        np.testing.assert_array_equal(flat[name], saved[name], err_msg=name)


def test_one_line_and_the_record_name_what_was_copied_tiled_and_fresh(dense_run):
    run_dir, saved = dense_run
    lines: list[str] = []
    record = _upcycle(run_dir, _sparse(), lines).record
    assert len(lines) == 1 and "\n" not in lines[0]
    copied = len(saved) - len(DENSE_MLP) - 2  # the head is reported apart
    for part in (
        f"copied {copied} tensors",
        f"tiled {len(DENSE_MLP)} dense MLP tensors into {EXPERTS} identical experts",
        MOE_BLOCK,
        "freshly initialised 1 (moe/router)",
        "head copied",
    ):
        assert part in lines[0], part
    upcycled = record["upcycled"]
    assert upcycled["num_experts"] == EXPERTS
    assert upcycled["tiled"] == dict(sorted(DENSE_MLP.items()))
    assert upcycled["fresh"] == [ROUTER]
    assert len(upcycled["copied"]) == copied
    assert record["head"]["init"] == "copied"


def test_another_class_count_gets_a_new_zero_head_as_in_fine_tuning(dense_run):
    run_dir, _ = dense_run
    model_spec = dataclasses.replace(_sparse(), vit=dataclasses.replace(DENSE, num_classes=10))
    lines: list[str] = []
    pretrained = _upcycle(run_dir, model_spec, lines)
    flat = tree_mapping.flat_paths(pretrained.params)
    assert flat["head/linear/w"].shape == (16, 10) and not flat["head/linear/w"].any()
    assert pretrained.record["head"]["init"] == "zeros"
    assert "head new and zero" in lines[0]


def test_init_from_head_keeps_or_replaces_the_head_on_request(dense_run):
    run_dir, saved = dense_run
    dense_spec = specs.ModelSpec(family="vit", vit=DENSE)
    continued = init_from.load_pretrained(run_dir, _abstract(dense_spec), model="d", head="keep")
    flat = tree_mapping.flat_paths(continued.params)
    np.testing.assert_array_equal(flat["head/linear/w"], saved["head/linear/w"])
    assert continued.record["head"]["init"] == "copied"
    replaced = init_from.load_pretrained(
        run_dir, _abstract(_sparse()), model="s", fresh_init=_fresh_from(_sparse(), 11), head="new"
    )
    assert not tree_mapping.flat_paths(replaced.params)["head/linear/w"].any()
    other_classes = specs.ModelSpec(family="vit", vit=dataclasses.replace(DENSE, num_classes=10))
    with pytest.raises(UsageError, match="init_from_head='keep'") as caught:
        init_from.load_pretrained(run_dir, _abstract(other_classes), model="d", head="keep")
    assert "\n" not in str(caught.value)


# --- Step 0: the dense model's logits, exactly where the combine weights sum to 1. ---


@pytest.mark.parametrize(
    "moe",
    [
        {"router": "top_k", "num_selected_experts": EXPERTS, "capacity_factor": 1.0},
        {"router": "top_k", "num_selected_experts": EXPERTS, "batch_priority": True},
        {"router": "expert_choice", "num_selected_experts": 2, "capacity_factor": 2.0},
    ],
    ids=["top_k_k=E", "top_k_k=E_bpr", "expert_choice_kC=E"],
)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_upcycled_logits_equal_the_dense_models_when_every_token_gets_weight_one(
    dense_run, moe, training
):
    run_dir, saved = dense_run
    model_spec = _sparse(**moe)
    upcycled = _upcycle(run_dir, model_spec).params
    images = _images(model_spec)
    rng = jax.random.PRNGKey(9) if training else None  # training: router noise on
    dense_logits, _ = apply_model(
        _model(specs.ModelSpec(family="vit", vit=DENSE)),
        _tree(saved),
        images,
        rng,
    )
    sparse_logits, _ = apply_model(_model(model_spec), upcycled, images, rng)
    np.testing.assert_allclose(sparse_logits, dense_logits, **FLOAT_TOLERANCE)


def test_with_fewer_experts_per_token_the_unrenormalised_gates_change_the_logits(dense_run):
    run_dir, saved = dense_run
    # k=2 of 4 with room for every token: nothing dropped, yet each token's weight is the sum
    # of its two largest gates, about 2/4 under a fresh router.
    model_spec = _sparse(num_selected_experts=2, capacity_factor=2.0)
    images = _images(model_spec)
    dense_logits, _ = apply_model(
        _model(specs.ModelSpec(family="vit", vit=DENSE)), _tree(saved), images, None
    )
    upcycled = _upcycle(run_dir, model_spec).params
    sparse_logits, _ = apply_model(_model(model_spec), upcycled, images, None)
    gap = np.max(np.abs(np.asarray(sparse_logits) - np.asarray(dense_logits)))
    assert gap > 1e3 * FLOAT_TOLERANCE["atol"]


# --- What cannot be upcycled: one line. ---


@pytest.mark.parametrize(
    "model_spec, named",
    [
        (
            _sparse(expert_mlp_dims=64),
            f"experts {MOE_BLOCK}/moe/bi [4, 64] cannot be tiled from the dense MLP "
            f"{MOE_BLOCK}/ffn_layer1/bias/b [32]",
        ),
        (
            specs.ModelSpec(family="widenet", vit=DENSE, moe=specs.MoeSpec(num_experts=EXPERTS)),
            "WideNet",
        ),
    ],
    ids=["expert_width", "widenet"],
)
def test_what_cannot_be_upcycled_is_one_line(dense_run, model_spec, named):
    run_dir, _ = dense_run
    with pytest.raises(UsageError) as caught:
        _upcycle(run_dir, model_spec)
    message = str(caught.value)
    assert named in message and "\n" not in message


@pytest.mark.parametrize(
    "layout, fmt",
    [
        (lambda w: writers.vit_npz_names(w, pre_linen=False), "vit_npz"),
        (lambda w: writers.big_vision_names(w, scan=True, prefix="params/"), "big_vision_npz"),
    ],
    ids=["vision_transformer", "big_vision_scanned"],
)
def test_a_released_npz_is_upcycled_like_a_run_directory(tmp_path, layout, fmt):
    weights = reference_vit.random_weights(
        0,
        patch_size=4,
        channels=1,
        width=16,
        depth=2,
        mlp_dims=32,
        heads=2,
        classes=12,
        position_rows=5,
        class_token=True,
        pre_logits=False,
        moe_blocks=(),
        experts=EXPERTS,
    )
    path = str(tmp_path / "released.npz")
    writers.write_npz(path, layout(weights))
    model_spec = _sparse()
    pretrained = _upcycle(path, model_spec)
    assert pretrained.record["format"] == fmt
    flat = tree_mapping.flat_paths(pretrained.params)
    dense = init_from.load_pretrained(
        path, _abstract(specs.ModelSpec(family="vit", vit=DENSE)), model="dense.gin"
    )
    dense_flat = tree_mapping.flat_paths(dense.params)
    for expert, source in DENSE_MLP.items():
        for e in range(EXPERTS):
            np.testing.assert_array_equal(flat[expert][e], dense_flat[source], err_msg=expert)
    assert pretrained.record["upcycled"]["fresh"] == [ROUTER]


# --- Through the trainer: the router is what a from-scratch run at TrainSpec.seed draws. ---


def _trainer(seed: int, init_from_dir: str | None) -> trainer.Trainer:
    gin.clear_config()
    bindings = ["VitSpec.num_layers=2", "MoeSpec.num_experts=4", f"TrainSpec.seed={seed}"]
    if init_from_dir:
        bindings.append(f"TrainSpec.init_from='{init_from_dir}'")
    gin_config.parse_gin(["gin/cpu/vmoe.gin"], bindings)
    experiment = Experiment.from_gin()
    gin.clear_config()
    return trainer.Trainer(experiment, "/unused", (8, 1, 1))


def test_the_trainer_upcycles_with_its_own_seeded_router_init(tmp_path):
    cpu_dense = specs.VitSpec(
        image_size=28,
        patch_size=7,
        num_channels=1,
        num_classes=10,
        model_dims=64,
        num_layers=2,
        mlp_dims=256,
        num_heads=4,
    )
    run_dir = str(tmp_path / "dense")
    saved = _save_run(run_dir, cpu_dense)
    routers = {}
    for seed in (0, 1):
        scratch = jax.device_get(_trainer(seed, None).init_state().params)
        upcycled = jax.device_get(_trainer(seed, run_dir).init_state().params)
        scratch, upcycled = tree_mapping.flat_paths(scratch), tree_mapping.flat_paths(upcycled)
        np.testing.assert_array_equal(upcycled[ROUTER], scratch[ROUTER])
        np.testing.assert_array_equal(
            upcycled[f"{MOE_BLOCK}/moe/wo"][3], saved[DENSE_MLP[f"{MOE_BLOCK}/moe/wo"]]
        )
        routers[seed] = upcycled[ROUTER]
    assert not np.array_equal(routers[0], routers[1])
