"""The reference implementations, read from the user's checkouts, with our models beside them.

Nothing of big_vision, vmoe or vision_transformer is copied into this repository: their
folders go on sys.path and their own modules are imported (big_vision `models/vit.py`, vmoe
`nn/vit_moe.py`, whose blocks come from vision_transformer's `vit_jax/models_vit.py`).

Weights: the reference model is initialised by its own code, every weight is perturbed (its
heads start at zero, which would make every other gradient zero), and the result is copied
into our model through our checkpoint importers (harness/checkpoint_formats): the same
name and layout rules that read released checkpoints. Both models then hold the same function.
"""

import dataclasses
import importlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from praxis import base_layer, pax_fiddle

from harness.checkpoint_formats import big_vision_npz, tree_mapping, vmoe_reference
from models import builders
from models.moe import layers as moe_layers
from models.specs import ModelSpec, MoeSpec, VitSpec
from models.stats import STATS

PERTURBATION = 0.02  # std of the noise added to every reference weight


@dataclasses.dataclass(frozen=True)
class Checkouts:
    big_vision: str
    vmoe: str
    vision_transformer: str

    def put_on_path(self) -> None:
        for folder in (self.big_vision, self.vmoe, self.vision_transformer):
            if folder not in sys.path:
                sys.path.insert(0, folder)


@dataclasses.dataclass
class ClassifierPair:
    """Our classifier and a reference one holding the same weights.

    reference_apply(params, images, rng) -> (logits, auxiliary loss); rng None = inference.
    """

    ours: base_layer.BaseLayer
    our_params: Any
    reference_apply: Callable[[Any, jax.Array, jax.Array | None], tuple[jax.Array, jax.Array]]
    reference_params: Any
    to_ours: Callable[[Any], Any]  # a reference param tree in our layout


def flat_names(tree: Any) -> dict[str, np.ndarray]:
    """A flax param tree as {'a/b/c': array}, the names the importers read."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in flat}


def perturbed(tree: Any, seed: int) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    noisy = [
        leaf + PERTURBATION * jax.random.normal(key, leaf.shape)
        for leaf, key in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _ours(spec: ModelSpec, images: jax.Array) -> tuple[base_layer.BaseLayer, Any]:
    model = base_layer.instantiate(builders.build_model(spec, mesh_shape=(1, 1, 1)))
    rngs = {"params": jax.random.PRNGKey(0), "random": jax.random.PRNGKey(1)}
    return model, jax.eval_shape(lambda: model.init(rngs, images))["params"]


def _fill(abstract: Any, converted: tuple[dict, dict], name: str) -> Any:
    tensors, sources = converted
    params = tree_mapping.fill_tree(
        abstract, tensors, checkpoint=name, model=name, source_names=sources
    )
    return jax.tree_util.tree_map(jnp.asarray, params)


def vit_pair(vit: VitSpec, batch: int, seed: int = 0) -> ClassifierPair:
    """Our dense ViT and big_vision's `models/vit.py` with token pooling."""
    bv_vit = importlib.import_module("big_vision.models.vit")
    reference = bv_vit.Model(
        num_classes=vit.num_classes,
        patch_size=(vit.patch_size, vit.patch_size),
        width=vit.model_dims,
        depth=vit.num_layers,
        mlp_dim=vit.mlp_dims,
        num_heads=vit.num_heads,
        pool_type="tok",
        posemb="learn",
    )
    images = jnp.zeros((batch, vit.image_size, vit.image_size, vit.num_channels))
    params = perturbed(reference.init(jax.random.PRNGKey(seed), images[:1])["params"], seed)
    model, abstract = _ours(ModelSpec(family="vit", vit=vit), images[:1])

    def to_ours(tree: Any) -> Any:
        return _fill(abstract, big_vision_npz.convert_arrays(flat_names(tree)), "big_vision")

    def apply(p: Any, x: jax.Array, rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        logits, _ = reference.apply({"params": p}, x, train=rng is not None)
        return logits, jnp.zeros(())

    return ClassifierPair(model, to_ours(params), apply, params, to_ours)


def _vmoe_router(moe: MoeSpec, dispatcher: str) -> dict[str, Any]:
    return {
        "num_selected_experts": moe.num_selected_experts,
        # vmoe's noise_std is a multiple of 1/E; ours (None) defaults to 1/E.
        "noise_std": 1.0,
        "importance_loss_weight": moe_layers.IMPORTANCE_LOSS_WEIGHT,
        "load_loss_weight": moe_layers.LOAD_LOSS_WEIGHT,
        "gshard_loss_weight": 0.0,
        "dispatcher": {
            "name": dispatcher,
            "batch_priority": moe.batch_priority,
            "capacity_factor": moe.capacity_factor,
            # ceil(k * S * C / E) like ours, not rounded up to a multiple of 4.
            "capacity_multiple_of": None,
        },
    }


def vmoe_pair(vit: VitSpec, moe: MoeSpec, batch: int, dispatcher: str, seed: int = 0):
    """Our V-MoE and vmoe's `VisionTransformerMoe` with its `dispatcher` ('einsum' or
    'indices'); MoE blocks 1, 3, ... ('every_2'), routing groups of moe.group_images images."""
    vit_moe = importlib.import_module("vmoe.nn.vit_moe")
    tokens = (vit.image_size // vit.patch_size) ** 2 + 1
    moe_blocks = tuple(range(1, vit.num_layers, 2))
    encoder = {
        "num_layers": vit.num_layers,
        "mlp_dim": vit.mlp_dims,
        "num_heads": vit.num_heads,
        "moe": {
            "layers": moe_blocks,
            "num_experts": moe.num_experts,
            "group_size": moe.group_images * tokens,
            "router": _vmoe_router(moe, dispatcher),
        },
    }

    def reference(deterministic: bool) -> Any:
        return vit_moe.VisionTransformerMoe(
            num_classes=vit.num_classes,
            patch_size=(vit.patch_size, vit.patch_size),
            hidden_size=vit.model_dims,
            encoder=encoder,
            classifier="token",
            deterministic=deterministic,
        )

    images = jnp.zeros((batch, vit.image_size, vit.image_size, vit.num_channels))
    init_images = images[: moe.group_images]
    params = reference(True).init(jax.random.PRNGKey(seed), init_images)["params"]
    params = perturbed(params, seed)
    model, abstract = _ours(ModelSpec(family="vmoe", vit=vit, moe=moe), init_images)

    def to_ours(tree: Any) -> Any:
        return _fill(abstract, vmoe_reference.convert_arrays(flat_names(tree)), "vmoe")

    training, inference = reference(False), reference(True)

    def apply(p: Any, x: jax.Array, rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        if rng is None:
            logits, metrics = inference.apply({"params": p}, x)
        else:
            logits, metrics = training.apply({"params": p}, x, rngs={"gating": rng})
        return logits, jnp.mean(metrics["auxiliary_loss"])

    return ClassifierPair(model, to_ours(params), apply, params, to_ours)


@dataclasses.dataclass
class MoeLayerPair:
    """Our SparseMoe and vmoe's MlpMoeBlock on [groups, group_size, D] tokens, same weights.

    Each apply(params, tokens, rng) -> (outputs, auxiliary loss); rng None = inference.
    """

    our_apply: Callable[[Any, jax.Array, jax.Array | None], tuple[jax.Array, jax.Array]]
    our_params: Any
    reference_apply: Callable[[Any, jax.Array, jax.Array | None], tuple[jax.Array, jax.Array]]
    reference_params: Any


def moe_layer_pair(
    dims: int, hidden: int, moe: MoeSpec, groups: int, group_size: int, dispatcher: str
) -> MoeLayerPair:
    vit_moe = importlib.import_module("vmoe.nn.vit_moe")

    def reference(deterministic: bool) -> Any:
        return vit_moe.MlpMoeBlock(
            mlp_dim=hidden,
            num_experts=moe.num_experts,
            group_size=group_size,
            router=_vmoe_router(moe, dispatcher),
            deterministic=deterministic,
        )

    tokens = jnp.zeros((groups, group_size, dims))
    params = perturbed(reference(True).init(jax.random.PRNGKey(0), tokens)["params"], 0)
    flat = flat_names(params)
    our_params = {
        "router": flat["Router/dense/kernel"],
        "wi": flat["Mlp/Dense_0/kernel"],
        "bi": flat["Mlp/Dense_0/bias"],
        "wo": flat["Mlp/Dense_1/kernel"],
        "bo": flat["Mlp/Dense_1/bias"],
    }
    our_params = jax.tree_util.tree_map(jnp.asarray, our_params)
    # One image per routing group: our layer groups whole images, vmoe fixed-size token runs.
    layer = base_layer.instantiate(
        pax_fiddle.Config(
            moe_layers.SparseMoe,
            name="moe",
            input_dims=dims,
            hidden_dims=hidden,
            num_experts=moe.num_experts,
            spec=dataclasses.replace(moe, group_images=1),
        )
    )

    def ours(p: Any, x: jax.Array, rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        context = base_layer.JaxContext.HParams(do_eval=rng is None)
        with base_layer.JaxContext.new_context(hparams=context):
            out, collections = layer.apply(
                {"params": p},
                x,
                rngs=None if rng is None else {base_layer.RANDOM: rng},
                mutable=[base_layer.AUX_LOSS, STATS],
            )
        aux = jax.tree_util.tree_leaves(
            collections.get(base_layer.AUX_LOSS, {}),
            is_leaf=lambda v: isinstance(v, base_layer.AuxLossStruct),
        )
        return out, sum((jnp.sum(a.value) for a in aux), jnp.zeros(()))

    training, inference = reference(False), reference(True)

    def theirs(p: Any, x: jax.Array, rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        if rng is None:
            out, metrics = inference.apply({"params": p}, x)
        else:
            out, metrics = training.apply({"params": p}, x, rngs={"gating": rng})
        return out, jnp.mean(metrics["auxiliary_loss"])

    return MoeLayerPair(ours, our_params, theirs, params)
