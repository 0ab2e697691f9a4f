"""Sparse Mixture-of-Experts praxis layers: V-MoE/WideNet router + experts, and a pre-LN MoE FFN.

`SparseMoe` is the bare sparse MLP (router, capacity-limited dispatch, E expert MLPs, combine);
WideNet shares one of these across blocks. `MoeFeedForward` wraps it as a drop-in for praxis
`StackedTransformer.moe_layer_tpl`, so V-MoE's "Every-2" / "Last-n" placement is just
`StackedTransformer.moe_layers`. The routing math itself lives in `models.moe.routing`.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from praxis import base_layer, pax_fiddle
from praxis.layers import activations, normalizations, stochastics

from models.layer_norm import LayerNorm
from models.moe import expert_choice, expert_parallel, routing, soft_routing
from models.moe.router_registry import ROUTERS
from models.specs import MoeSpec, check_routing_config
from models.stats import sow_stat

JTensor = base_layer.JTensor
SplitDimsMapping = base_layer.SplitDimsMapping
WeightHParams = base_layer.WeightHParams
WeightInit = base_layer.WeightInit
template_field = base_layer.template_field

# Maps expert inputs [E, G, Cap, D] to expert outputs [E, G, Cap, D'].
ExpertFn = Callable[[JTensor], JTensor]

IMPORTANCE_LOSS_WEIGHT = 0.005  # V-MoE (Riquelme et al. 2021), section 3 / appendix.
LOAD_LOSS_WEIGHT = 0.005
SWITCH_LOSS_WEIGHT = 0.01  # WideNet (Xue et al. 2022).
ROUTER_INIT_STD = 0.02  # Small, so initial routing is near uniform and every expert gets tokens.


def einsum_dispatch(
    assignments: routing.Assignments,
    inputs: JTensor,
    expert_fn: ExpertFn,
    num_experts: int,
    capacity: int,
) -> JTensor:
    """Gathers tokens into expert buffers with one-hot einsums, runs the experts, and scatters
    the gate-weighted outputs back.

    Costs O(G*S*E*Cap*D): plain matmuls that shard and differentiate everywhere, but growing
    with E at fixed k and C. `gather_dispatch` computes the same with indices.

    Args:
      assignments: each token's k choices, [G, S, k].
      inputs: [G, S, D] tokens.
      expert_fn: [E, G, Cap, D] -> [E, G, Cap, D'].
      num_experts: E.
      capacity: Cap, buffer slots per expert and group.

    Returns:
      [G, S, D'] the gate-weighted sum of each token's expert outputs (0 if none kept it).
    """
    dense = routing.to_dense(assignments, num_experts, capacity)
    expert_inputs = jnp.einsum("gsec,gsd->egcd", dense.dispatch.astype(inputs.dtype), inputs)
    expert_outputs = expert_fn(expert_inputs)
    return jnp.einsum("gsec,egcd->gsd", dense.combine.astype(expert_outputs.dtype), expert_outputs)


def gather_dispatch(
    assignments: routing.Assignments,
    inputs: JTensor,
    expert_fn: ExpertFn,
    num_experts: int,
    capacity: int,
) -> JTensor:
    """`einsum_dispatch` with gathers: O(G*S*k*D) data movement plus the experts' matmuls.

    Every buffer slot learns which token fills it (an integer scatter, no gradient), the
    buffers gather their tokens, and each token gathers its k outputs back. Empty slots and
    dropped choices read a zero row appended after the last token / slot.
    """
    groups, tokens, _ = inputs.shape
    slots = num_experts * capacity
    # Flat buffer position of each kept choice; dropped choices point at the zero row.
    position = jnp.where(
        assignments.kept, assignments.expert * capacity + assignments.slot, slots
    )  # [G, S, k]
    token_index = jnp.broadcast_to(
        jnp.arange(tokens, dtype=jnp.int32)[None, :, None], position.shape
    )
    filled_by = jnp.full((groups, slots + 1), tokens, jnp.int32)
    filled_by = filled_by.at[jnp.arange(groups)[:, None, None], position].set(token_index)
    expert_inputs = jnp.take_along_axis(
        _with_zero_row(inputs), filled_by[:, :slots, None], axis=1
    )  # [G, E*Cap, D]
    expert_inputs = expert_inputs.reshape(groups, num_experts, capacity, -1).swapaxes(0, 1)
    expert_outputs = expert_fn(expert_inputs)  # [E, G, Cap, D']
    flat_outputs = expert_outputs.swapaxes(0, 1).reshape(groups, slots, -1)
    k = position.shape[-1]
    chosen = jnp.take_along_axis(
        _with_zero_row(flat_outputs), position.reshape(groups, tokens * k, 1), axis=1
    ).reshape(groups, tokens, k, -1)
    weights = jnp.where(assignments.kept, assignments.gate, 0).astype(chosen.dtype)
    return jnp.einsum("gskd,gsk->gsd", chosen, weights)


def _dropout(x: JTensor, key: JTensor, rate: float) -> JTensor:
    """Inverted dropout, as praxis's Dropout, for code that runs outside the layer's scope."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _with_zero_row(x: JTensor) -> JTensor:
    """[G, N, D] -> [G, N + 1, D], the extra row zero (jnp.pad, not concatenate: see
    blocks.py on concatenation along sharded dims)."""
    return jnp.pad(x, ((0, 0), (0, 1), (0, 0)))


Dispatcher = Callable[[routing.Assignments, JTensor, ExpertFn, int, int], JTensor]
DISPATCHERS: dict[str, Dispatcher] = {"einsum": einsum_dispatch, "gather": gather_dispatch}
# 'auto': 'all_to_all' when the layer has a mesh of more than one device, else 'gather'.
DISPATCH_MODES = ("all_to_all", "auto", "einsum", "gather")
AUX_LOSSES = ("vmoe", "switch")
EXPERT_WEIGHTS = ("wi", "bi", "wo", "bo")


class SparseMoe(base_layer.BaseLayer):
    """Router + E expert MLPs: [B, N, D] -> [B, N, D]. No LayerNorm, no residual.

    Tokens are routed in groups of `spec.group_images` consecutive images; capacity, BPR's
    ranking and Soft MoE's slots are per group. `spec.router` picks the routing:
      top_k (V-MoE): g(x) = TOP_k(softmax(W x + eps)), W [D, E] bias-free, eps ~ N(0,
        noise_std^2) in training only; each expert takes at most ceil(k * group_tokens * C / E)
        tokens per group, the rest skip it (in a block, the residual carries them).
      expert_choice (Zhou et al. 2022): each expert takes its top-capacity tokens by
        softmax(W x + eps) (models.moe.expert_choice).
      soft (Puigcerver et al. 2023): E * P slots, each a softmax-weighted mix of the group's
        tokens; each token mixes the slot outputs (models.moe.soft_routing).
    k, C and BPR have separate eval values so capacity can be changed at inference on the same
    parameters.

    Sown stats (models.stats), the same names for every router:
      dropped_fraction: top_k: share of the k * tokens assignments past capacity;
        expert_choice: share of tokens no expert took; soft: 0.
      unrouted_fraction: share of tokens processed by no expert.
      expert_load [E]: each expert's share of the assignments (top_k: top-k choices before
        capacity; expert_choice: tokens taken; soft: combine weight).
      assignments_per_image [B, E]: the same per image.
      processed_fraction_per_image [B]: per image, the processed share of its tokens'
        assignments (top_k: kept of its k * N choices; expert_choice: tokens some expert took;
        soft: 1). Its mean over images is 1 - dropped_fraction.
      router_entropy: mean over tokens of the entropy (nats) of the token's router
        distribution over experts (top_k, expert_choice: softmax of the clean logits; soft:
        its combine weights summed per expert).
      expert_choice_spread (expert_choice only): 0 when every expert took the same tokens,
        1 when their picks are disjoint (expert_choice.selection_spread).
      slot_dispatch_entropy (soft only): mean over slots of the entropy of the slot's
        dispatch weights over the group's tokens, divided by log S (1 = the slot is the plain
        average of its group).
    Aux losses (top_k only): 'vmoe' importance (on the clean gates softmax(W x), as the
    reference) and load; 'switch' WideNet's balance loss.

    Attributes:
      input_dims: D.
      hidden_dims: hidden width H of each expert MLP.
      num_experts: E (set by the enclosing stack; `spec.num_experts` is what gin sets it from).
      spec: k, C, BPR, groups, noise, aux loss and dispatch, for training and eval
        (models.specs.MoeSpec, declared and documented once there).
      importance_loss_weight, load_loss_weight, switch_loss_weight: aux loss weights.
      activation_tpl: expert MLP activation.
      relu_dropout_prob: dropout on the expert hidden activations (praxis's name for it).
    """

    input_dims: int = 0
    hidden_dims: int = 0
    num_experts: int = 0
    spec: MoeSpec = MoeSpec()
    importance_loss_weight: float = IMPORTANCE_LOSS_WEIGHT
    load_loss_weight: float = LOAD_LOSS_WEIGHT
    switch_loss_weight: float = SWITCH_LOSS_WEIGHT
    activation_tpl: pax_fiddle.Config[activations.BaseActivation] = template_field(activations.GELU)
    relu_dropout_tpl: pax_fiddle.Config[stochastics.Dropout] = template_field(stochastics.Dropout)
    relu_dropout_prob: float = 0.0

    class WeightSharding(base_layer.BaseLayer.WeightSharding):
        """Experts on the 'expert' mesh axis, expert hidden dim on 'model', router replicated.

        Axis names missing from the layer's `mesh_axis_names` are treated as replicated, and
        nothing is annotated when `mesh_axis_names` is None (single device).
        """

        router: SplitDimsMapping = (None, None)
        soft_router: SplitDimsMapping = (None, None, None)
        router_scale: SplitDimsMapping = (None,)
        wi: SplitDimsMapping = ("expert", None, "model")
        bi: SplitDimsMapping = ("expert", "model")
        wo: SplitDimsMapping = ("expert", "model", None)
        bo: SplitDimsMapping = ("expert", None)

    class ActivationSharding(base_layer.BaseLayer.ActivationSharding):
        """Expert-major activations: experts on 'expert', groups on 'data', hidden on 'model'.

        Constraining the dispatched tensors this way turns dispatch/combine into all-to-alls over
        'expert' instead of gathering every expert's buffer everywhere.
        """

        egcd: SplitDimsMapping = ("expert", "data", None, None)
        # The experts' hidden activations, groups and slots merged into one row axis.
        enh: SplitDimsMapping = ("expert", "data", "model")

    @property
    def train_routing(self) -> tuple[int, float, bool]:
        """(k, C, BPR) used when `do_eval` is False."""
        r = self.spec
        return r.num_selected_experts, r.capacity_factor, r.batch_priority

    @property
    def eval_routing(self) -> tuple[int, float, bool]:
        """(k, C, BPR) used when `do_eval` is True; unset eval values fall back to training's."""
        k, c, bpr = self.train_routing
        r = self.spec
        return (
            k if r.eval_num_selected_experts is None else r.eval_num_selected_experts,
            c if r.eval_capacity_factor is None else r.eval_capacity_factor,
            bpr if r.eval_batch_priority is None else r.eval_batch_priority,
        )

    @property
    def effective_noise_std(self) -> float:
        noise_std = self.spec.noise_std
        return 1.0 / self.num_experts if noise_std is None else noise_std

    def _validate(self) -> None:
        if self.input_dims < 1 or self.hidden_dims < 1:
            raise ValueError(
                f"SparseMoe input_dims={self.input_dims}, hidden_dims={self.hidden_dims} must be "
                ">= 1; set both to the model and expert MLP widths"
            )
        for k, c, _ in (self.train_routing, self.eval_routing):
            check_routing_config(self.num_experts, k, c)
        if self.spec.dispatch not in DISPATCH_MODES:
            raise ValueError(
                f"MoeSpec.dispatch={self.spec.dispatch!r} is not supported; "
                f"use one of {list(DISPATCH_MODES)}"
            )
        if self.spec.aux_loss not in AUX_LOSSES:
            raise ValueError(
                f"aux_loss={self.spec.aux_loss!r} is not supported; use one of {AUX_LOSSES}"
            )
        noise_std = self.effective_noise_std
        if noise_std < 0:
            raise ValueError(f"noise_std={noise_std} must be >= 0; set it >= 0 or None for 1/E")
        if self.spec.router == "top_k" and self.spec.aux_loss == "vmoe" and noise_std == 0:
            raise ValueError(
                f"noise_std={noise_std} is invalid for aux_loss='vmoe'; its load loss needs "
                "noise_std > 0 (None = 1/E)"
            )

    def _for_mesh(self, mapping: SplitDimsMapping) -> SplitDimsMapping:
        """Drops sharding on axes this layer's mesh lacks, so one default fits every mesh."""
        names = self.mesh_axis_names
        if names is None or mapping is None:
            return None

        def keep(axis: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
            if axis is None or isinstance(axis, str):
                return axis if axis in names else None
            kept = tuple(a for a in axis if a in names)
            return kept or None

        return tuple(keep(axis) for axis in mapping)

    def _weight(
        self,
        name: str,
        shape: list[int],
        init: WeightInit,
        mapping_name: str | None = None,
        **kwargs: object,
    ) -> None:
        mapping = getattr(self.weight_split_dims_mapping, mapping_name or name)
        mapping = self._for_mesh(mapping)
        self.create_variable(
            name,
            WeightHParams(
                shape=shape,
                init=init,
                mesh_shape=self.mesh_shape if mapping is not None else None,
                tensor_split_dims_mapping=mapping,
                **kwargs,
            ),
        )

    def setup(self) -> None:
        self._validate()
        d, h, e = self.input_dims, self.hidden_dims, self.num_experts
        create_router_weights, self._route = ROUTERS[self.spec.router].functions()
        create_router_weights(self)
        # Explicit fan axes: each expert is initialised like a standalone [D, H] / [H, D] dense
        # layer, instead of praxis treating E as a receptive field that shrinks the scale.
        per_expert = {"fan_in_axes": [-2], "fan_out_axes": [-1]}
        self._weight("wi", [e, d, h], WeightInit.Xavier(1.0), **per_expert)
        self._weight("bi", [e, h], WeightInit.Constant(0.0))
        self._weight("wo", [e, h, d], WeightInit.Xavier(1.0), **per_expert)
        self._weight("bo", [e, d], WeightInit.Constant(0.0))
        self.create_child("activation", self.activation_tpl.clone())
        dropout = self.relu_dropout_tpl.clone()
        dropout.keep_prob = 1.0 - self.relu_dropout_prob
        self.create_child("relu_dropout", dropout)

    def _shard(self, x: JTensor, mapping: SplitDimsMapping) -> JTensor:
        return base_layer.maybe_shard(x, self._for_mesh(mapping), self.mesh_axis_names)

    def _experts(self, x: JTensor) -> JTensor:
        """All E expert MLPs at once on their buffers: [E, G, Cap, D] -> [E, G, Cap, D].

        The matmuls run on [E, G*Cap, D]: with one row axis, oneDNN fuses the bias and the
        activation into the first matmul; on 4-D buffers it took an extra pass over the
        hidden activations (issue 27). Merging G and Cap keeps G's sharding on 'data'.
        """
        ap = self.activation_split_dims_mapping
        theta = self.theta
        x = self._shard(x, ap.egcd)
        experts, groups, capacity, dims = x.shape
        rows = x.reshape(experts, groups * capacity, dims)
        hidden = jnp.einsum("end,edh->enh", rows, theta.wi) + theta.bi[:, None, :]
        hidden = self.relu_dropout(self.activation(self._shard(hidden, ap.enh)))
        out = jnp.einsum("enh,ehd->end", hidden, theta.wo) + theta.bo[:, None, :]
        return self._shard(out.reshape(experts, groups, capacity, -1), ap.egcd)

    @property
    def _wants_all_to_all(self) -> bool:
        if self.spec.dispatch == "auto":
            shape = self.ici_mesh_shape
            return self.mesh_axis_names is not None and shape is not None and math.prod(shape) > 1
        return self.spec.dispatch == "all_to_all"

    def _expert_parallel_mesh(self, num_groups: int) -> Any:
        """The mesh to run per device on (all-to-all dispatch), or None for one program."""
        mesh = expert_parallel.context_mesh() if self._wants_all_to_all else None
        if mesh is None or not expert_parallel.can_shard(mesh, num_groups, self.num_experts):
            return None
        return mesh

    def _per_group(self, fn: Callable[..., Any], *args: JTensor) -> Any:
        """`fn(*args)` for per-group routing maths whose arrays lead with the group axis; on
        each device's own groups when dispatching by all-to-all, since XLA's partitioner
        gathers top-k's operand from every device first."""
        mesh = self._expert_parallel_mesh(args[0].shape[0])
        return fn(*args) if mesh is None else expert_parallel.map_groups(mesh, fn, *args)

    def _dispatch(
        self, local: expert_parallel.LocalDispatch, assignments: Any, x: JTensor
    ) -> JTensor:
        """Runs `local` (fill buffers, experts, combine) on the groups `x` [G, S, D].

        With all-to-all dispatch on a mesh, each device runs it on its own groups and its
        tokens reach other devices' experts by all-to-all (models.moe.expert_parallel).
        Otherwise it is one program over all groups, which XLA partitions as it can. That
        is also the path of a batch the mesh cannot split into whole groups (initialising
        with one group).
        """
        mesh = self._expert_parallel_mesh(x.shape[0])
        if mesh is None:
            return local(assignments, x, self._experts)
        mapping = self.weight_split_dims_mapping
        specs = {name: self._for_mesh(getattr(mapping, name)) for name in EXPERT_WEIGHTS}
        weights = {name: getattr(self.theta, name) for name in EXPERT_WEIGHTS}
        hidden_axis = expert_parallel.MODEL_AXIS
        hidden_axis = hidden_axis if mesh.shape[hidden_axis] > 1 else None
        rate = 0.0 if self.do_eval else self.relu_dropout_prob
        key = self.next_prng_key() if rate > 0 else None

        def mlp(weights: dict[str, JTensor], buffers: JTensor, key: JTensor | None) -> JTensor:
            dropout = None if key is None else functools.partial(_dropout, key=key, rate=rate)
            return expert_parallel.expert_mlp(
                weights, buffers, self.activation, dropout, hidden_axis
            )

        return expert_parallel.expert_parallel_dispatch(
            mesh, local, assignments, x, weights, specs, mlp, key
        )

    def _group(self, inputs: JTensor) -> JTensor:
        """[B, N, D] -> [B / group_images, group_images * N, D]: consecutive images share a
        group, so a device's groups hold its own images when it holds whole groups."""
        batch, tokens, dims = inputs.shape
        images = self.spec.group_images
        if batch % images:
            raise ValueError(
                f"MoeSpec.group_images={images} does not divide the batch of {batch} images; "
                f"feed a multiple of {images} images per device or lower group_images"
            )
        return inputs.reshape(batch // images, images * tokens, dims)

    def __call__(self, inputs: JTensor) -> JTensor:
        """Routes each token of `inputs` [B, N, D] to its experts; returns [B, N, D]."""
        if inputs.ndim != 3 or inputs.shape[-1] != self.input_dims:
            raise ValueError(
                f"SparseMoe expects inputs [B, N, {self.input_dims}], got {inputs.shape}; "
                "reshape tokens to [batch, tokens, input_dims]"
            )
        x = self._group(inputs)
        outputs, report = self._route(self, x)
        self._report_routing(report, inputs.shape[0])
        return outputs.reshape(inputs.shape)

    def _router_logits(self, x: JTensor) -> tuple[JTensor, JTensor, float]:
        """(clean, noisy, noise_std) logits [G, S, E]; noise only in training.

        The router runs in float32 whatever the activation dtype: top-k and the softmax are
        sensitive to rounding, and the matmul is tiny next to the experts.
        """
        clean_logits = jnp.einsum(
            "gsd,de->gse", x.astype(jnp.float32), self.theta.router.astype(jnp.float32)
        )
        noise_std = self.effective_noise_std
        if self.do_eval or noise_std == 0:
            return clean_logits, clean_logits, noise_std
        noise = jax.random.normal(self.next_prng_key(), clean_logits.shape, jnp.float32)
        return clean_logits, clean_logits + noise_std * noise, noise_std

    def _route_top_k(self, x: JTensor) -> tuple[JTensor, "RoutingReport"]:
        training = not self.do_eval
        k, capacity_factor, batch_priority = self.train_routing if training else self.eval_routing
        capacity = routing.expert_capacity(x.shape[1], self.num_experts, k, capacity_factor)
        clean_logits, noisy_logits, noise_std = self._router_logits(x)
        gates = jax.nn.softmax(noisy_logits, axis=-1)
        assignments = self._per_group(
            functools.partial(
                routing.top_k_assignments, k=k, capacity=capacity, batch_priority=batch_priority
            ),
            gates,
        )
        local = functools.partial(
            DISPATCHERS["einsum" if self.spec.dispatch == "einsum" else "gather"],
            num_experts=self.num_experts,
            capacity=capacity,
        )
        outputs = self._dispatch(local, assignments, x)
        clean_gates = jax.nn.softmax(clean_logits, axis=-1)
        self._aux_losses(gates, clean_gates, clean_logits, noisy_logits, k, noise_std, training)
        kept = assignments.kept.astype(jnp.float32)
        report = RoutingReport(
            dropped_fraction=1.0 - jnp.mean(kept),
            per_expert=assignments.selected(self.num_experts),
            processed=jnp.mean(kept, axis=-1),
            routed=jnp.max(kept, axis=-1),
            router_entropy=mean_entropy(clean_gates, axis=-1),
        )
        return outputs, report

    def _route_expert_choice(self, x: JTensor) -> tuple[JTensor, "RoutingReport"]:
        k, capacity_factor, _ = self.eval_routing if self.do_eval else self.train_routing
        tokens = x.shape[1]
        capacity = expert_choice.expert_choice_capacity(
            tokens, routing.expert_capacity(tokens, self.num_experts, k, capacity_factor)
        )
        clean_logits, noisy_logits, _ = self._router_logits(x)
        choice = self._per_group(
            functools.partial(expert_choice.expert_choice_assignments, capacity=capacity),
            jax.nn.softmax(noisy_logits, axis=-1),
        )
        local = functools.partial(expert_choice.expert_choice_dispatch, num_tokens=tokens)
        outputs = self._dispatch(local, choice, x)
        taken = choice.taken(tokens)  # [G, S, E]
        routed = jnp.max(taken, axis=-1)
        sow_stat(
            self,
            "expert_choice_spread",
            expert_choice.selection_spread(jnp.mean(routed), tokens, self.num_experts, capacity),
        )
        report = RoutingReport(
            dropped_fraction=1.0 - jnp.mean(routed),
            per_expert=taken,
            processed=routed,
            routed=routed,
            router_entropy=mean_entropy(jax.nn.softmax(clean_logits, axis=-1), axis=-1),
        )
        return outputs, report

    def _route_soft(self, x: JTensor) -> tuple[JTensor, "RoutingReport"]:
        theta = self.theta
        weights = soft_routing.soft_weights(
            x.astype(jnp.float32),
            theta.router.astype(jnp.float32),
            theta.router_scale[0].astype(jnp.float32),
        )
        outputs = self._dispatch(soft_routing.soft_dispatch, weights, x)
        every_token = jnp.ones(x.shape[:2], jnp.float32)
        per_expert = jnp.sum(weights.combine, axis=-1)
        sow_stat(self, "slot_dispatch_entropy", soft_routing.dispatch_entropy(weights.dispatch))
        report = RoutingReport(
            dropped_fraction=jnp.zeros((), jnp.float32),
            per_expert=per_expert,
            processed=every_token,
            routed=every_token,
            router_entropy=mean_entropy(per_expert, axis=-1),
        )
        return outputs, report

    def _report_routing(self, report: "RoutingReport", batch: int) -> None:
        sow_stat(self, "dropped_fraction", report.dropped_fraction)
        sow_stat(self, "router_entropy", report.router_entropy)
        sow_stat(self, "unrouted_fraction", 1.0 - jnp.mean(report.routed))
        per_expert = report.per_expert
        sow_stat(self, "expert_load", jnp.sum(per_expert, axis=(0, 1)) / jnp.sum(per_expert))
        # Groups are consecutive tokens in [B, N] order, so these reshapes recover images.
        per_image = per_expert.reshape(batch, -1, self.num_experts)
        sow_stat(self, "assignments_per_image", jnp.sum(per_image, axis=1))
        sow_stat(
            self, "processed_fraction_per_image", jnp.mean(report.processed.reshape(batch, -1), 1)
        )

    def _aux_losses(
        self,
        gates: JTensor,
        clean_gates: JTensor,
        clean_logits: JTensor,
        noisy_logits: JTensor,
        k: int,
        noise_std: float,
        training: bool,
    ) -> None:
        if self.spec.aux_loss == "vmoe":
            # Importance on the clean gates, as the reference computes it before adding noise;
            # the load loss is the part that models the noise.
            losses = {
                "importance_loss": (
                    routing.importance_loss(clean_gates),
                    self.importance_loss_weight,
                ),
                "load_loss": (
                    routing.cv_squared(
                        self._per_group(
                            functools.partial(routing.expected_load, k=k, noise_std=noise_std),
                            clean_logits,
                            noisy_logits,
                        )
                    ),
                    self.load_loss_weight,
                ),
            }
        else:
            losses = {"switch_loss": (routing.switch_balance_loss(gates), self.switch_loss_weight)}
        for name, (value, weight) in losses.items():
            sow_stat(self, name, value)
            # Eval must not regularise anything, and its losses would be summed into the metric.
            if training:
                self.add_aux_loss(name, weight * value)


def _dense_router_weights(layer: SparseMoe) -> None:
    """W [D, E], bias-free (top_k and expert_choice)."""
    layer._weight(
        "router", [layer.input_dims, layer.num_experts], WeightInit.Gaussian(ROUTER_INIT_STD)
    )


def soft_create_weights(layer: SparseMoe) -> None:
    """Phi [D, E, P] and a learnt scale. Phi is l2-normalised over D before use, so only its
    direction matters at init."""
    d, e, p = layer.input_dims, layer.num_experts, layer.spec.slots_per_expert
    layer._weight("router", [d, e, p], WeightInit.Gaussian(d**-0.5), "soft_router")
    layer._weight("router_scale", [1], WeightInit.Constant(1.0))


# The built-in routers behind models/moe/router_registry.py's two functions.
top_k_create_weights = expert_choice_create_weights = _dense_router_weights
top_k_route = SparseMoe._route_top_k
expert_choice_route = SparseMoe._route_expert_choice
soft_route = SparseMoe._route_soft


class RoutingReport(NamedTuple):
    """What every router reports, per group: G groups of S tokens, E experts.

    dropped_fraction: [] (its meaning per router is in SparseMoe's docstring).
    per_expert: [G, S, E] assignment mass of token s on expert e.
    processed: [G, S] the processed share of the token's assignments.
    routed: [G, S] 1 where some expert processed the token.
    router_entropy: [] mean per-token entropy (nats) of the router's distribution over experts.
    """

    dropped_fraction: JTensor
    per_expert: JTensor
    processed: JTensor
    routed: JTensor
    router_entropy: JTensor


def mean_entropy(probabilities: JTensor, axis: int) -> JTensor:
    """Mean entropy (nats) of the distributions along `axis`; 0 log 0 counts as 0."""
    return jnp.mean(jnp.sum(jax.scipy.special.entr(probabilities), axis=axis))


class MoeFeedForward(base_layer.BaseLayer):
    """Pre-LN sparse MLP block: inputs + dropout(SparseMoe(LayerNorm(inputs))).

    A drop-in for praxis `StackedTransformer.moe_layer_tpl` (and `Transformer.tr_fflayer_tpl`):
    it accepts every field those set and Transformer's `ff_layer(inputs, paddings=...)` call.
    Routing settings live on `moe_tpl`; input_dims, hidden_dims, num_experts and
    relu_dropout_prob are passed down to it from here, overriding what `moe_tpl` says.

    Accepted but ignored, because StackedTransformer sets them for its GShard MoE:
      num_groups, min_group_size: grouping is `moe_tpl.spec.group_images` (whole images, as
        V-MoE does); a device-count-based group count would change capacity semantics.
      gating_func: routing is `moe_tpl.spec.router` (top_k, expert_choice or soft).
    `norm_policy` must be 'pre' (V-MoE and WideNet blocks are pre-LN); others raise.
    `paddings` zero the MoE output of padded tokens, but padded tokens still take capacity
    (ViT inputs have no padding).

    Attributes:
      input_dims: model width D.
      hidden_dims: expert MLP width H.
      num_experts: E.
      relu_dropout_prob: dropout on the expert hidden activations.
      residual_dropout_prob: dropout on the MoE output before the residual add.
      residual_droppath_prob: stochastic depth on the residual branch.
      norm_policy: only 'pre'.
      num_groups, min_group_size, gating_func: ignored (see above).
      ln_tpl: the pre-LN.
      residual_dropout_tpl: residual dropout layer.
      moe_tpl: the SparseMoe (router + experts).
    """

    input_dims: int = 0
    hidden_dims: int = 0
    num_experts: int = 0
    relu_dropout_prob: float = 0.0
    residual_dropout_prob: float = 0.0
    residual_droppath_prob: float = 0.0
    norm_policy: str = "pre"
    num_groups: int = 0
    min_group_size: int | None = None
    gating_func: str = "top2"
    ln_tpl: pax_fiddle.Config[normalizations.BaseNormalization] = template_field(LayerNorm)
    residual_dropout_tpl: pax_fiddle.Config[stochastics.Dropout] = template_field(
        stochastics.Dropout
    )
    moe_tpl: pax_fiddle.Config[SparseMoe] = template_field(SparseMoe)

    def setup(self) -> None:
        if self.norm_policy != "pre":
            raise ValueError(
                f"norm_policy={self.norm_policy!r} is not supported by MoeFeedForward; use 'pre' "
                "(V-MoE and WideNet blocks are pre-LN)"
            )
        ln = self.ln_tpl.clone()
        ln.dim = self.input_dims
        self.create_child("layer_norm", ln)

        moe = self.moe_tpl.clone()
        moe.input_dims = self.input_dims
        moe.hidden_dims = self.hidden_dims
        moe.num_experts = self.num_experts
        moe.relu_dropout_prob = self.relu_dropout_prob
        self.create_child("moe", moe)

        dropout = self.residual_dropout_tpl.clone()
        dropout.keep_prob = 1.0 - self.residual_dropout_prob
        self.create_child("residual_dropout", dropout)
        if self.residual_droppath_prob > 0:
            droppath = pax_fiddle.Config(
                stochastics.StochasticResidual, survival_prob=1.0 - self.residual_droppath_prob
            )
            self.create_child("residual_droppath", droppath)

    def __call__(
        self,
        inputs: JTensor,
        paddings: JTensor | None = None,
        segment_ids: JTensor | None = None,
    ) -> JTensor:
        """[B, N, D] -> [B, N, D]; `paddings` [B, N] (1 = padded) as Transformer passes them."""
        del segment_ids  # Routing is per token; packed sequences need nothing special.
        outputs = self.moe(self.layer_norm(inputs))
        if paddings is not None:
            outputs *= (1.0 - paddings[..., None]).astype(outputs.dtype)
        outputs = self.residual_dropout(outputs)
        if self.residual_droppath_prob > 0:
            return self.residual_droppath(inputs, outputs)
        return inputs + outputs
