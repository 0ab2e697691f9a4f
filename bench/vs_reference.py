r"""Our models against the reference code on the same weights: forward, train step, compile.

  .venv/bin/python bench/vs_reference.py --big_vision=PATH --vmoe=PATH \
      --vision_transformer=PATH [--sections=vit_tiny,vit_small,vmoe,moe_layer,moe_vs_dense]
      [--rounds=6] [--steps=10] [--compiles=3]

Each PATH is a checkout of google-research/big_vision, google-research/vmoe and
google-research/vision_transformer (vmoe's ViT blocks import `vit_jax`); the reference models
are imported from there (bench/reference_models.py), never copied into this repository.

Method, one process, fp32, one CPU device:
- Weights: the reference model's own initialisation, perturbed, copied into ours by our
  checkpoint importers. Before timing, each pair's inference logits and the gradients of the
  cross-entropy (inference mode, so no routing noise) are compared; the run stops if they
  disagree by more than TOLERANCE of the reference's largest value.
- Train step: value_and_grad of softmax cross-entropy (+ the MoE auxiliary losses), then the
  same optax AdamW (harness/runtime/optimizer.py) on the same batch, jitted with the state
  donated. Ours is the harness's own step (harness/runtime/steps.py, with its metrics).
  Each reference runs two steps: a minimal one that returns the loss only, and its own
  trainer's ('trainer'), which adds what that trainer's step computes for its logs:
  big_vision's `update_fn` in big_vision/train.py (l2 norms of the gradients, parameters and
  updates), vmoe's `train_step` in vmoe/train/trainer.py (main, auxiliary and total loss,
  and vmoe/train/train_state.py's optax.global_norm of the gradients, updates and
  parameters). The model, loss and optimizer are the same in both.
- Compile: `jit(...).lower(...).compile()` wall time of each train step, `compiles` times,
  each of a fresh function so nothing is cached; the median, and the ratio of medians.
- Timing: `rounds` rounds; in each, every variant runs `steps` calls in turn (each waited
  for). A round's time is its mean call; the ratio ours / reference is taken round by round
  and printed as median [min, max] over rounds, so drift in background load hits both.
"""

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
import optax
import reference_models as refs
from absl import logging

from bench.interleaved import ratio_cell, timed_rounds
from harness.config.train_spec import OptimizerSpec
from harness.runtime import optimizer as optimizers
from harness.runtime.losses import classification_loss
from harness.runtime.steps import TrainState, apply_model, make_train_step
from models.specs import MoeSpec, VitSpec

TOLERANCE = 1e-4
TOTAL_STEPS = 1000  # only shapes the learning-rate schedule
SECTIONS = ("vit_tiny", "vit_small", "vmoe", "moe_layer", "moe_vs_dense")
# gin/cpu/common.gin's tiny model; "small" is the ViT width 192, depth 6, 64 px, /8.
VIT_TINY = VitSpec(
    image_size=28, patch_size=7, num_channels=1, num_classes=10, model_dims=64,
    num_layers=4, mlp_dims=256, num_heads=4,
)  # fmt: skip
VIT_SMALL = VitSpec(
    image_size=64, patch_size=8, num_channels=3, num_classes=10, model_dims=192,
    num_layers=6, mlp_dims=768, num_heads=3,
)  # fmt: skip
# gin/cpu/vmoe.gin.
VMOE_TINY = MoeSpec(
    num_experts=8, num_selected_experts=2, capacity_factor=1.05, batch_priority=True,
    group_images=8, aux_loss="vmoe",
)  # fmt: skip
BATCH = {"vit_tiny": 128, "vit_small": 64, "vmoe": 128}
# The MoE layer: 4096 tokens in groups of 1024, D=256, H=1024, k=2.
LAYER_GROUPS, LAYER_GROUP_SIZE, LAYER_DIMS, LAYER_HIDDEN = 4, 1024, 256, 1024


def ms(times: dict[str, list[float]], name: str) -> str:
    return f"{1000 * statistics.median(times[name]):.1f}"


class Stepper:
    """A jitted step that donates its state, compiled ahead of time `compiles` times (each a
    fresh function, so jax's caches never answer); call() runs one step."""

    def __init__(self, step: Callable, state: Any, batch: Any, compiles: int = 1):
        self.compile_times = []
        for _ in range(compiles):
            fresh = functools.partial(step)  # a new callable: a new trace, lowering, compile
            start = time.perf_counter()
            self.compiled = jax.jit(fresh, donate_argnums=0).lower(state, batch).compile()
            self.compile_times.append(time.perf_counter() - start)
        self.state, self.batch = state, batch

    @property
    def compile_s(self) -> float:
        return statistics.median(self.compile_times)

    def __call__(self) -> Any:
        self.state, metrics = self.compiled(self.state, self.batch)
        return metrics


def reference_train_step(
    apply: Callable, tx: optax.GradientTransformation, rng: jax.Array, logs: str = "loss"
):
    """The reference model's train step. logs='loss' returns the loss only; 'big_vision' and
    'vmoe' also compute what that reference's own trainer step computes for its logs (module
    docstring)."""

    def loss(params: Any, batch: dict[str, jax.Array], step_rng: jax.Array):
        logits, aux = apply(params, batch["image"], step_rng)
        ce = jnp.mean(classification_loss(logits, batch["label"], "softmax", 0.0))
        return ce + aux, (ce, aux)

    def step(state: TrainState, batch: dict[str, jax.Array]):
        (value, (ce, aux)), grads = jax.value_and_grad(loss, has_aux=True)(
            state.params, batch, jax.random.fold_in(rng, state.step)
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        if logs == "big_vision":  # big_vision/train.py, update_fn's measurements

            def l2(tree: Any) -> jax.Array:
                return jnp.sqrt(sum([jnp.sum(x * x) for x in jax.tree_util.tree_leaves(tree)]))

            return state, {
                "training_loss": value,
                "l2_grads": l2(grads),
                "l2_params": l2(params),
                "l2_updates": l2(updates),
            }
        if logs == "vmoe":  # vmoe/train/trainer.py train_step; train_state.py's global norms
            return state, {
                "main_loss": ce,
                "auxiliary_loss": aux,
                "total_loss": value,
                "global_norm/grads": optax.global_norm(grads),
                "global_norm/updates": optax.global_norm(updates),
                "global_norm/params": optax.global_norm(params),
            }
        return state, value

    return step


def relative_error(ours: Any, reference: Any) -> float:
    """The largest |difference| of any leaf over that leaf's largest |value|. A leaf whose
    true value is ~0 (the key bias's gradient: softmax ignores it) is measured against a
    thousandth of the largest value of the whole tree instead, not against rounding noise."""
    pairs = list(
        zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(reference), strict=True)
    )
    floor = 1e-3 * max(float(np.max(np.abs(b))) for _, b in pairs)
    worst = 0.0
    for a, b in pairs:
        a, b = np.asarray(a), np.asarray(b)
        scale = max(float(np.max(np.abs(b))), floor)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def check_classifier(pair: refs.ClassifierPair, batch: dict[str, jax.Array]) -> str:
    """Logits and cross-entropy gradients of the pair, in inference mode; raises if apart."""

    def ours(params: Any) -> tuple[jax.Array, jax.Array]:
        logits, _ = apply_model(pair.ours, params, batch["image"], None)
        return jnp.mean(classification_loss(logits, batch["label"], "softmax", 0.0)), logits

    def theirs(params: Any) -> tuple[jax.Array, jax.Array]:
        logits, _ = pair.reference_apply(params, batch["image"], None)
        return jnp.mean(classification_loss(logits, batch["label"], "softmax", 0.0)), logits

    (_, our_logits), our_grads = jax.jit(jax.value_and_grad(ours, has_aux=True))(pair.our_params)
    (_, logits), grads = jax.jit(jax.value_and_grad(theirs, has_aux=True))(pair.reference_params)
    # The reference gradient in our layout: every layout change is affine (reshape, transpose,
    # a shifted LayerNorm scale), so converting params + grads minus params maps it exactly.
    shifted = jax.tree_util.tree_map(jnp.add, pair.reference_params, grads)
    mapped = jax.tree_util.tree_map(
        jnp.subtract, pair.to_ours(shifted), pair.to_ours(pair.reference_params)
    )
    # big_vision's class token gets no position embedding; ours has a row for it, whose
    # gradient is the class token's. That row has no counterpart, so it is left out.
    for tree in (our_grads, mapped):
        tree["position_embedding"] = tree["position_embedding"][:, 1:]
    logit_error = relative_error(our_logits, logits)
    grad_error = relative_error(our_grads, mapped)
    if logit_error > TOLERANCE or grad_error > TOLERANCE:
        raise SystemExit(
            f"outputs disagree: logits {logit_error:.2e}, gradients {grad_error:.2e} "
            f"(tolerance {TOLERANCE:.0e}); the timings would not compare the same model"
        )
    return f"logits within {logit_error:.1e}, gradients within {grad_error:.1e} (relative)"


def classifier_rows(
    name: str,
    pairs: dict[tuple[str, str], refs.ClassifierPair],
    compare: list[tuple[str, str]],
    args: argparse.Namespace,
    logs: str,
) -> None:
    """Times every pair's forward and train step interleaved; prints one row per comparison.

    `pairs` maps (our variant, reference variant) to a pair holding both; their sides are
    called 'ours VARIANT', 'ref VARIANT' (the minimal step) and 'ref VARIANT trainer' (the
    step with what reference `logs`'s trainer computes), and `compare` lists the (ours, ref)
    rows.
    """
    batch_size = BATCH[name]
    any_pair = next(iter(pairs.values()))
    vit = any_pair.ours.image_size, any_pair.ours.num_channels
    key = jax.random.PRNGKey(7)
    batch = {
        "image": jax.random.normal(key, (batch_size, vit[0], vit[0], vit[1])),
        "label": jax.random.randint(key, (batch_size,), 0, any_pair.ours.num_classes),
    }
    spec = OptimizerSpec()
    tx = optimizers.make_optimizer(spec, TOTAL_STEPS)
    schedule = optimizers.make_schedule(spec, TOTAL_STEPS)
    rng = jax.random.PRNGKey(3)
    forwards, trains = {}, {}
    for (our_label, ref_label), pair in pairs.items():
        print(f"  {name} {our_label} vs {ref_label}: {check_classifier(pair, batch)}", flush=True)
        our_step = make_train_step(pair.ours, tx, schedule, "softmax", 0.0, rng)
        for side, step, params in (
            (f"ours {our_label}", our_step, pair.our_params),
            (
                f"ref {ref_label}",
                reference_train_step(pair.reference_apply, tx, rng),
                pair.reference_params,
            ),
            (
                f"ref {ref_label} trainer",
                reference_train_step(pair.reference_apply, tx, rng, logs),
                pair.reference_params,
            ),
        ):
            state = TrainState(
                step=jnp.zeros((), jnp.int32),
                params=jax.tree_util.tree_map(jnp.copy, params),
                opt_state=tx.init(params),
            )
            trains[side] = Stepper(step, state, batch, args.compiles)
        ours_forward = jax.jit(lambda p, x, m=pair.ours: apply_model(m, p, x, None)[0])
        ref_forward = jax.jit(lambda p, x, f=pair.reference_apply: f(p, x, None)[0])
        forwards[f"ours {our_label}"] = lambda f=ours_forward, p=pair.our_params: f(
            p, batch["image"]
        )
        forwards[f"ref {ref_label}"] = lambda f=ref_forward, p=pair.reference_params: f(
            p, batch["image"]
        )
    for call in forwards.values():
        jax.block_until_ready(call())  # compiles
    forward_times = timed_rounds(forwards, args.rounds, args.steps)
    train_times = timed_rounds(trains, args.rounds, args.steps)
    for ours, reference in compare:
        trainer = f"{reference} trainer"
        compile_s = [trains[side].compile_s for side in (ours, reference, trainer)]
        print(
            f"| {name}: {ours} / {reference} | {ms(forward_times, ours)} / "
            f"{ms(forward_times, reference)} | {ratio_cell(forward_times, ours, reference)} "
            f"| {' / '.join(ms(train_times, side) for side in (ours, reference, trainer))} "
            f"| {ratio_cell(train_times, ours, reference)} "
            f"| {ratio_cell(train_times, ours, trainer)} "
            f"| {' / '.join(f'{c:.1f}' for c in compile_s)} "
            f"| {compile_s[0] / compile_s[1]:.2f} | {compile_s[0] / compile_s[2]:.2f} |",
            flush=True,
        )


def layer_calls(apply: Callable, params: Any, tokens: jax.Array) -> dict[str, Callable]:
    """Inference forward, and forward+backward in training (routing noise, aux losses)."""
    cotangent = jax.random.normal(jax.random.PRNGKey(11), tokens.shape)

    # The cotangent is an argument, not a closed-over constant XLA would fold at compile.
    def loss(p: Any, x: jax.Array, dy: jax.Array) -> jax.Array:
        out, aux = apply(p, x, jax.random.PRNGKey(5))
        return jnp.sum(out * dy) + aux

    forward = jax.jit(lambda p, x: apply(p, x, None)[0])
    backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jax.block_until_ready((forward(params, tokens), backward(params, tokens, cotangent)))
    return {
        "fwd": lambda: forward(params, tokens),
        "fwd+bwd": lambda: backward(params, tokens, cotangent),
    }


def moe_layer_rows(args: argparse.Namespace) -> None:
    """Our SparseMoe (gather dispatch) against vmoe's MlpMoeBlock with its indices dispatcher."""
    tokens = jax.random.normal(jax.random.PRNGKey(2), (LAYER_GROUPS, LAYER_GROUP_SIZE, LAYER_DIMS))
    for experts in (8, 32):
        moe = MoeSpec(
            num_experts=experts, num_selected_experts=2, capacity_factor=1.05,
            dispatch="gather", aux_loss="vmoe",
        )  # fmt: skip
        pair = refs.moe_layer_pair(
            LAYER_DIMS, LAYER_HIDDEN, moe, LAYER_GROUPS, LAYER_GROUP_SIZE, "indices"
        )
        ours_out = pair.our_apply(pair.our_params, tokens, None)[0]
        ref_out = pair.reference_apply(pair.reference_params, tokens, None)[0]
        error = relative_error(ours_out, ref_out)
        if error > TOLERANCE:
            raise SystemExit(f"MoE layer outputs disagree at E={experts}: {error:.2e}")
        calls = {}
        for side, apply, params in (
            ("ours", pair.our_apply, pair.our_params),
            ("ref", pair.reference_apply, pair.reference_params),
        ):
            for kind, call in layer_calls(apply, params, tokens).items():
                calls[f"{side} {kind}"] = call
        times = timed_rounds(calls, args.rounds, args.steps)
        print(
            f"| E={experts} (outputs within {error:.1e}) | {ms(times, 'ours fwd')} / "
            f"{ms(times, 'ref fwd')} | {ratio_cell(times, 'ours fwd', 'ref fwd')} "
            f"| {ms(times, 'ours fwd+bwd')} / {ms(times, 'ref fwd+bwd')} "
            f"| {ratio_cell(times, 'ours fwd+bwd', 'ref fwd+bwd')} |",
            flush=True,
        )


def dense_mlp(hidden: int) -> tuple[Callable, Any]:
    """The FLOP-matched dense MLP: every token through one MLP of hidden k*H."""
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    params = {
        "wi": jax.random.normal(keys[0], (LAYER_DIMS, hidden)) * LAYER_DIMS**-0.5,
        "bi": jnp.zeros((hidden,)),
        "wo": jax.random.normal(keys[1], (hidden, LAYER_DIMS)) * hidden**-0.5,
        "bo": jnp.zeros((LAYER_DIMS,)),
    }

    def apply(p: Any, x: jax.Array, rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        del rng
        h = jax.nn.gelu(jnp.einsum("gsd,dh->gsh", x, p["wi"]) + p["bi"])
        return jnp.einsum("gsh,hd->gsd", h, p["wo"]) + p["bo"], jnp.zeros(())

    return apply, params


def moe_vs_dense_rows(args: argparse.Namespace) -> None:
    """Forward+backward of our MoE layer (k=2, C=1, so its expert FLOPs equal the dense
    MLP's) over the dense MLP of hidden 2H on the same tokens."""
    tokens = jax.random.normal(jax.random.PRNGKey(2), (LAYER_GROUPS, LAYER_GROUP_SIZE, LAYER_DIMS))
    dense_apply, dense_params = dense_mlp(2 * LAYER_HIDDEN)
    calls = {"dense": layer_calls(dense_apply, dense_params, tokens)["fwd+bwd"]}
    for experts in (8, 32, 64):
        moe = MoeSpec(
            num_experts=experts, num_selected_experts=2, capacity_factor=1.0,
            dispatch="gather", aux_loss="vmoe",
        )  # fmt: skip
        pair = refs.moe_layer_pair(
            LAYER_DIMS, LAYER_HIDDEN, moe, LAYER_GROUPS, LAYER_GROUP_SIZE, "indices"
        )
        calls[f"E={experts}"] = layer_calls(pair.our_apply, pair.our_params, tokens)["fwd+bwd"]
    times = timed_rounds(calls, args.rounds, args.steps)
    for name in calls:
        if name != "dense":
            print(
                f"| {name} | {ms(times, name)} | {ms(times, 'dense')} "
                f"| {ratio_cell(times, name, 'dense')} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big_vision", required=True, help="google-research/big_vision checkout")
    parser.add_argument("--vmoe", required=True, help="google-research/vmoe checkout")
    parser.add_argument(
        "--vision_transformer", required=True, help="google-research/vision_transformer checkout"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compiles", type=int, default=3, help="compiles of each train step")
    args = parser.parse_args()
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    for path in (args.big_vision, args.vmoe, args.vision_transformer):
        if not os.path.isdir(path):
            parser.error(f"{path} is not a directory; pass the checkout's top folder")
    # vmoe warns on every trace that capacity rounds C up (ours rounds it the same way).
    logging.set_verbosity(logging.ERROR)
    refs.Checkouts(args.big_vision, args.vmoe, args.vision_transformer).put_on_path()
    device = jax.devices()[0]
    print(
        f"{device.platform} {device.device_kind}, jax {jax.__version__}, fp32; "
        f"{args.rounds} interleaved rounds x {args.steps} calls; ratio = ours / reference, "
        "median [min, max] over rounds"
    )
    header = (
        "| model | forward ms | forward ratio | train step ms | train ratio vs minimal "
        "| train ratio vs trainer | compile s | compile ratio vs minimal "
        "| compile ratio vs trainer |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    if {"vit_tiny", "vit_small", "vmoe"} & set(sections):
        print(
            f"train step and compile: ours / the reference's minimal step (loss only) / its "
            f"trainer's step (with its logged norms); compile = median of {args.compiles}"
        )
        print(header)
    for name, vit in (("vit_tiny", VIT_TINY), ("vit_small", VIT_SMALL)):
        if name in sections:
            pairs = {("vit", "big_vision"): refs.vit_pair(vit, BATCH[name])}
            classifier_rows(name, pairs, [("ours vit", "ref big_vision")], args, "big_vision")
    if "vmoe" in sections:
        pairs = {
            ("einsum", "einsum"): refs.vmoe_pair(
                VIT_TINY, dataclasses.replace(VMOE_TINY, dispatch="einsum"), BATCH["vmoe"], "einsum"
            ),
            ("gather", "indices"): refs.vmoe_pair(
                VIT_TINY,
                dataclasses.replace(VMOE_TINY, dispatch="gather"),
                BATCH["vmoe"],
                "indices",
            ),
        }
        compare = [
            ("ours gather", "ref einsum"),  # each side's default dispatch
            ("ours einsum", "ref einsum"),
            ("ours gather", "ref indices"),
        ]
        classifier_rows("vmoe", pairs, compare, args, "vmoe")
    if "moe_layer" in sections:
        print("\nMoE layer, 4096 tokens in groups of 1024, D=256, H=1024, k=2, C=1.05: our gather")
        print("dispatch / vmoe's indices dispatcher\n")
        print("| experts | forward ms | forward ratio | fwd+bwd ms | fwd+bwd ratio |")
        print("|---|---:|---:|---:|---:|")
        moe_layer_rows(args)
    if "moe_vs_dense" in sections:
        print("\nMoE layer (gather, k=2, C=1) / FLOP-matched dense MLP (hidden 2H), fwd+bwd\n")
        print("| experts | MoE ms | dense ms | ratio |")
        print("|---|---:|---:|---:|")
        moe_vs_dense_rows(args)


if __name__ == "__main__":
    main()
