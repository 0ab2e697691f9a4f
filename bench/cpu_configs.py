r"""Trains each tiny CPU config to the end and tabulates test accuracy against training time.

  .venv/bin/python bench/cpu_configs.py [--families=vit,vmoe,widenet,vit22b] [--root=/tmp/cpu_bench]

Each family runs in its own `harness.run` process, one after another, so timings do not share
the CPU. "train s" is steps x batch / measured images/s (compilation excluded); "wall s" is
the whole process including start-up, compilation and the final evaluation.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default="vit,vmoe,widenet,vit22b")
    parser.add_argument("--root", default="/tmp/cpu_bench")
    args = parser.parse_args()
    rows = []
    for family in args.families.split(","):
        workdir = os.path.join(args.root, family)
        shutil.rmtree(workdir, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.run",
                f"--gin_file=gin/cpu/{family}.gin",
                f"--workdir={workdir}",
            ],
            cwd=REPO,
            check=True,
        )
        wall = time.perf_counter() - start
        with open(os.path.join(workdir, "results.json")) as f:
            result = json.load(f)
        train = result["train"]
        rows.append(
            (
                family,
                result["eval"]["eval/top1"],
                train["steps"],
                train["images_per_second"],
                train["steps"] * train["batch_size"] / train["images_per_second"],
                wall,
                result["model"]["params_total"],
                result["model"]["gflops_per_image"],
            )
        )
    print("| config | test top-1 | steps | img/s | train s | wall s | params | GFLOPs/img |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for family, top1, steps, ips, train_s, wall, params, gflops in rows:
        print(
            f"| gin/cpu/{family}.gin | {top1:.4f} | {steps} | {ips:.0f} | {train_s:.0f} | "
            f"{wall:.0f} | {params:,} | {gflops:.4f} |"
        )


if __name__ == "__main__":
    main()
