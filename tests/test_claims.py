"""The claim sections' verdicts and readings, on hand-made runs (no training)."""

from harness.reporting import claims
from harness.reporting.runs import Run


def _run(name: str, top1: float, gflops: float = 0.007, config: str = "") -> Run:
    results = {
        "run": {"family": "vit", "config": config},
        "eval": {"eval/top1": top1},
        "model": {"gflops_per_image": gflops, "params_total": 1000, "params_active": 1000},
    }
    return Run(name=name, path=f"/runs/{name}", results=results, sweep=None, scalars={})


def _seeds(name: str, top1s: list[float], **kwargs) -> claims.Seeds:
    return claims.Seeds(name, [_run(name, t, **kwargs) for t in top1s], diverged=0)


def _claim_one(tmp_path, vmoe_top1s: list[float]) -> claims.Writer:
    writer = claims.Writer(str(tmp_path / "report.md"))
    seeds = {
        "vit": _seeds("vit", [0.80, 0.81, 0.82], gflops=0.007),  # mean 0.81, spread 0.01
        "vit_wide": _seeds("vit_wide", [0.85, 0.85, 0.85], gflops=0.018),
        "vmoe": _seeds("vmoe", vmoe_top1s, gflops=0.009),
    }
    claims.claim_sparse_vs_dense(writer, seeds)
    return writer


def test_sparse_vs_dense_flags_a_margin_under_half_a_spread(tmp_path):
    # V-MoE 0.822 (spread 0.001) vs ViT 0.81 (spread 0.01): clears the spread by 0.002.
    writer = _claim_one(tmp_path, [0.821, 0.822, 0.823])
    text = "\n".join(writer.lines)
    assert writer.summary == [
        ("1. V-MoE beats a dense ViT of similar GFLOPs", "**reproduced** (narrowly)")
    ]
    assert "clears it by +0.00200" in text
    assert "at 2.0x V-MoE's GFLOPs, is 0.0280 top-1 above V-MoE" in text


def test_sparse_vs_dense_wide_margin_and_failure(tmp_path):
    clear = _claim_one(tmp_path, [0.839, 0.840, 0.841])
    assert clear.summary[0][1] == "**reproduced**"
    within_spread = _claim_one(tmp_path, [0.814, 0.815, 0.816])
    assert within_spread.summary[0][1] == "**not reproduced**"


def test_learning_rate_is_read_from_the_saved_gin_config():
    saved = "OptimizerSpec.decay = 'cosine'\nOptimizerSpec.learning_rate = 0.03\n"
    assert claims._learning_rate(_seeds("a", [0.5], config=saved)) == 0.03
    assert claims._learning_rate(_seeds("b", [0.5], config="")) is None
