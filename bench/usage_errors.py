"""Times each command's answer to bad input: one stderr line and exit code 2, how fast.

  .venv/bin/python bench/usage_errors.py            # prints a markdown table

Each case runs as a fresh process (what a user waits for, interpreter start included), in a
temporary directory with the repository on PYTHONPATH. The table says whether the process
loaded TensorFlow (the slowest import), and flags any case whose stderr is not exactly one line
or whose exit code is not 2.
"""

import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIT, VMOE = "--gin_file=gin/cpu/vit.gin", "--gin_file=gin/cpu/vmoe.gin"

CASES = [
    ("run", [VIT, "--gin_param=VitSpec.widht=3"], "unknown binding"),
    ("run", [VIT, "--gin_param=DataSpec.batch_size=0"], "batch 0"),
    ("run", [VMOE, "--gin_param=MoeSpec.num_selected_experts=9"], "k > E"),
    ("run", [VMOE, "--gin_param=MoeSpec.capacity_factor=0.0"], "C <= 0"),
    ("run", [VIT, "--gin_param=MeshSpec.data=3"], "mesh off the devices"),
    ("run", [VIT, "--gin_param=DataSpec.dataset='mnist2'"], "unknown dataset"),
    ("run", [VIT, "--gin_param=DataSpec.train_split='trian'"], "unknown split"),
    ("run", [VIT, "--gin_param=DataSpec.batch_size=1000000000000"], "batch beyond the split"),
    ("run", ["--gin_file=gin/nope.gin"], "missing gin file"),
    ("run", [VIT, "--gin_param=TrainSpec.init_from='{tmp}'"], "init_from a plain directory"),
    ("run", [VIT, "--gin_param=TrainSpec.init_from='{tmp}/x.bin'"], "init_from of no format"),
    ("run", [VIT, "--gin_param=TrainSpec.init_from='{tmp}/x.npz'"], "init_from not a zip"),
    ("run", [VIT, "--gin_param=TrainSpec.init_from='{tmp}/y.npz'"], "init_from other weights"),
    ("evaluate", [VIT, "--checkpoint={tmp}/none.npz"], "missing checkpoint"),
    ("evaluate", [VIT, "--gin_param=VitSpec.nope=1", "--checkpoint={tmp}"], "unknown binding"),
    ("sweep", ["{tmp}/none"], "not a run directory"),
    ("sweep", ["{tmp}/none", "--capacities=-1"], "bad capacity"),
    ("report", ["{tmp}/none", "-o", "{tmp}/r.md"], "nothing to report"),
    ("report", ["{tmp}/none", "-o", "{tmp}"], "output is a directory"),
    ("fewshot", ["{tmp}/none", "--shots=0"], "shots 0"),
    ("fewshot", ["{tmp}/none"], "not a run directory"),
    ("inspect", ["--gin_file=gin/vmoe_b16.gin", "--batch=3"], "batch off the groups"),
    ("inspect", [VIT, "--mesh=1,2"], "malformed mesh"),
    ("suite", ["--gin_file=gin/suites/demo.gin", "--gin_param=SuiteSpec.seeds=0"], "seeds 0"),
    ("suite", ["stray"], "positional argument"),
    ("export", ["{tmp}/none", "--format=vit_npz", "--output={tmp}/x.npz"], "not a run directory"),
]


def time_case(command: str, args: list[str], tmp: str) -> tuple[float, int, int, bool]:
    """(seconds, exit code, stderr lines, whether TensorFlow was loaded)."""
    for name in ("x.bin", "x.npz"):
        with open(os.path.join(tmp, name), "w") as f:
            f.write("not a checkpoint")
    # Weights are compared with the model's only once it is built.
    np.savez(os.path.join(tmp, "y.npz"), unrelated=np.zeros(3))
    args = [a.replace("{tmp}", tmp) for a in args]
    if command in ("run", "evaluate"):
        args.append(f"--workdir={tmp}/w")
    probe = (
        "import atexit, os, sys; atexit.register(lambda: os.write(int(os.environ['PROBE_FD']), "
        "b'tf' if 'tensorflow' in sys.modules else b'--'))\n"
        f"import runpy; sys.argv = ['harness.{command}', *{args!r}]\n"
        f"runpy.run_module('harness.{command}', run_name='__main__', alter_sys=True)"
    )
    read, write = os.pipe()
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp,
        env={**os.environ, "PYTHONPATH": ROOT, "PROBE_FD": str(write)},
        pass_fds=(write,),
        timeout=600,
    )
    seconds = time.perf_counter() - start
    os.close(write)
    loaded = os.read(read, 2) == b"tf"
    os.close(read)
    return seconds, process.returncode, len(process.stderr.splitlines()), loaded


def main() -> None:
    print(
        f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        "each case one fresh process, wall time including interpreter start"
    )
    print()
    print("| command | bad input | seconds | exit | stderr lines | TensorFlow loaded |")
    print("|---|---|---:|---:|---:|---|")
    for command, args, what in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, code, lines, loaded = time_case(command, args, tmp)
        flag = "" if code == 2 and lines == 1 else " **(not one line / exit 2)**"
        print(
            f"| {command} | {what}{flag} | {seconds:.2f} | {code} | {lines} | "
            f"{'yes' if loaded else 'no'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
