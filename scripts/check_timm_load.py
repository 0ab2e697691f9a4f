r"""Loads a run's exports into timm and compares timm's logits with ours.

  .venv/bin/python scripts/check_timm_load.py RUN_DIR [--tolerance=1e-4]

Where torch and timm are installed (they are not in the lock: `pip install torch timm`), this
exports RUN_DIR with `python -m harness.export`'s library into a temporary folder and:
  * safetensors: reads the file with the safetensors library, builds
    timm.models.vision_transformer.VisionTransformer from the file's `timm_kwargs` metadata
    and loads the state dict with strict=True; for a V-MoE, each MoE block's `mlp` is first
    replaced by a top-k mixture of timm `Mlp` experts (below) named as the export names them;
  * vit_npz (dense models without pre-logits): timm's own `vision_transformer._load_weights`;
then runs both models on the same random images and prints the largest logit difference.
It exits 1 if a difference exceeds the tolerance, and prints one line and exits 0 where torch
or timm is missing. The MoE stand-in routes without capacity limits, so it matches a V-MoE
only when no token is dropped (eval capacity factor >= E/k); the script says when not.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _our_logits(run_dir: str, images_nhwc: np.ndarray) -> tuple[np.ndarray, object]:
    import jax.numpy as jnp
    from praxis import base_layer

    from harness.checkpoint_formats import orbax_run
    from harness.exports import run_weights
    from models import builders
    from models.stats import STATS

    spec = run_weights.read_spec(run_dir)
    params, _ = orbax_run.read_params(run_dir)
    model = base_layer.instantiate(builders.build_model(spec))
    context = base_layer.JaxContext.HParams(do_eval=True)
    with base_layer.JaxContext.new_context(hparams=context):
        logits, _ = model.apply(
            {base_layer.PARAMS: params},
            jnp.asarray(images_nhwc),
            mutable=[base_layer.AUX_LOSS, STATS],
        )
    return np.asarray(logits), spec


def _top_k_moe(torch, timm_layers, dim: int, hidden: int, experts: int, k: int):
    """A stand-in MoE with the export's names: `router` (bias-free) and `experts.e` (timm
    Mlp). Each token's top-k experts, weighted by their softmax scores, no capacity limit."""

    class TopKMoe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.router = torch.nn.Linear(dim, experts, bias=False)
            act = timm_layers.get_act_layer("gelu_tanh")
            self.experts = torch.nn.ModuleList(
                [timm_layers.Mlp(dim, hidden, act_layer=act) for _ in range(experts)]
            )

        def forward(self, x):
            gates = torch.softmax(self.router(x), dim=-1)
            top = gates.topk(k, dim=-1).indices
            out = torch.zeros_like(x)
            for e, expert in enumerate(self.experts):
                chosen = (top == e).any(dim=-1, keepdim=True)
                out = out + torch.where(chosen, gates[..., e : e + 1] * expert(x), 0.0)
            return out

    return TopKMoe()


def _timm_kwargs(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return json.loads(f.metadata()["timm_kwargs"])


def _moe_metadata(path: str) -> dict | None:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        moe = f.metadata().get("moe")
    return json.loads(moe) if moe else None


def _timm_from_safetensors(path: str, torch, timm):
    """(the loaded model, None), or (None, why) where the script has no stand-in for it."""
    from safetensors.torch import load_file

    model = timm.models.vision_transformer.VisionTransformer(**_timm_kwargs(path))
    moe = _moe_metadata(path)
    if moe:
        k = moe["eval_num_selected_experts"]
        if moe["router"] != "top_k":
            return None, f"the {moe['router']} router has no stand-in here"
        if moe["eval_capacity_factor"] < moe["num_experts"] / k:
            print("note: capacity factor < E/k: tokens the run drops are kept here")
        for i in moe["blocks"]:
            model.blocks[i].mlp = _top_k_moe(
                torch, timm.layers, model.embed_dim, moe["expert_mlp_dims"], moe["num_experts"], k
            )
    model.load_state_dict(load_file(path), strict=True)
    return model.eval(), None


def _compare(name: str, model, images_nchw, ours: np.ndarray, tolerance: float, torch) -> bool:
    with torch.no_grad():
        theirs = model(torch.from_numpy(images_nchw)).numpy()
    difference = float(np.abs(theirs - ours).max())
    verdict = "ok" if difference <= tolerance else "MISMATCH"
    print(f"{name}: timm logits {theirs.shape}, max |timm - ours| = {difference:.2e} ({verdict})")
    return difference <= tolerance


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    try:
        import timm
        import torch
    except ImportError as error:
        print(f"skipped: {error.name} is not installed (pip install torch timm)")
        return 0
    from harness.exports import run_weights
    from harness.exports.export import export_run

    vit = run_weights.read_spec(args.run_dir).vit
    if vit.pre_logits:
        print("skipped: timm's VisionTransformer has no pre-logits layer, so no timm export")
        return 0
    shape = (2, vit.image_size, vit.image_size, vit.num_channels)
    images = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    ours, spec = _our_logits(args.run_dir, images)
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        safetensors_path = os.path.join(folder, "model.safetensors")
        export_run(args.run_dir, "safetensors", safetensors_path)
        model, why_not = _timm_from_safetensors(safetensors_path, torch, timm)
        if model is None:
            print(f"safetensors: not compared; {why_not}")
        else:
            ok &= _compare("safetensors", model, nchw, ours, args.tolerance, torch)
        if spec.family == "vit":
            npz_path = os.path.join(folder, "model.npz")
            export_run(args.run_dir, "vit_npz", npz_path)
            npz_model = timm.models.vision_transformer.VisionTransformer(
                **_timm_kwargs(safetensors_path)
            )
            timm.models.vision_transformer._load_weights(npz_model, npz_path)
            ok &= _compare("vit_npz", npz_model.eval(), nchw, ours, args.tolerance, torch)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
