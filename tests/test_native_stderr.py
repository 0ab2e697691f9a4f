"""Native start-up lines never reach the terminal, and usage errors come before the heavy
libraries load (issue 25).

TensorFlow writes its start-up lines from C++ to descriptor 2 only on some CPUs (AVX-512/AMX),
so these tests do not rely on this machine's CPU: a planted `tensorflow` package writes a line
through libc's write(2), as a native library does, records that it was imported, and then
loads the real TensorFlow in its place.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE_LINE = "I0000 port.cc:153] simulated native start-up line"

# Written by libc, below Python's sys.stderr, exactly like TensorFlow's loader.
_WRITE_NATIVELY = f"""
import ctypes
_line = b"{NATIVE_LINE}\\n"
ctypes.CDLL(None).write(2, _line, len(_line))
"""

_FAKE_TENSORFLOW = (
    _WRITE_NATIVELY
    + """
import importlib, os, sys
with open(os.environ["FAKE_TF_MARKER"], "a") as marker:
    marker.write("imported\\n")
_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
del sys.modules[__name__]
sys.modules[__name__] = importlib.import_module(__name__)  # the real TensorFlow
"""
)


@pytest.fixture
def noisy_tensorflow(tmp_path):
    """Environment for a subprocess whose `import tensorflow` writes NATIVE_LINE to fd 2
    first; returns (env, marker path: exists once tensorflow was imported)."""
    package = tmp_path / "planted" / "tensorflow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_FAKE_TENSORFLOW)
    marker = tmp_path / "tensorflow_imported"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "planted"), ROOT])
    env["FAKE_TF_MARKER"] = str(marker)
    return env, marker


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def _module(tmp_path, env: dict[str, str]) -> dict[str, str]:
    """A module `noisy_native` that writes NATIVE_LINE natively while it loads."""
    (tmp_path / "noisy_native.py").write_text(_WRITE_NATIVELY)
    return {**env, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])}


def test_the_guard_keeps_a_native_write_at_import_off_stderr_and_keeps_it(tmp_path):
    env = _module(tmp_path, dict(os.environ))
    process = _python(
        """
        import sys
        from harness import native_stderr
        native_stderr.install(["noisy_native"])
        print("before", file=sys.stderr)
        import noisy_native
        print("after", file=sys.stderr)
        print(repr(native_stderr.captured()))
        """,
        env,
    )
    assert process.returncode == 0, process.stderr
    assert process.stderr.splitlines() == ["before", "after"]
    assert NATIVE_LINE in process.stdout  # kept, for --verbose


def test_without_the_guard_the_planted_module_does_write_to_stderr(tmp_path):
    """The control: what the guard hides is really written to descriptor 2."""
    env = _module(tmp_path, dict(os.environ))
    process = _python("import noisy_native", env)
    assert process.returncode == 0
    assert process.stderr.splitlines() == [NATIVE_LINE]


def test_a_failing_guarded_import_is_one_line(tmp_path):
    (tmp_path / "broken_native.py").write_text(_WRITE_NATIVELY + "raise OSError('libfoo.so')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])}
    process = _python(
        """
        from harness import native_stderr
        native_stderr.install(["broken_native"])
        try:
            import broken_native
        except native_stderr.NativeImportError as error:
            print(error)
        """,
        env,
    )
    assert process.stderr == ""
    assert process.stdout.splitlines() == [
        "importing broken_native failed (libfoo.so); run `make setup` again, or pass --verbose "
        "to see what it printed"
    ]


# (command line, whether TensorFlow is loaded before the error). The ones that load it show
# the guard at work; the others show that the check comes before any heavy import.
USAGE_ERRORS = [
    (["run", "--gin_file=gin/cpu/vit.gin", "--gin_param=VitSpec.nope=1", "--workdir={w}"], False),
    (["run", "--gin_file=gin/cpu/vmoe.gin", "--gin_param=MoeSpec.num_selected_experts=9"], False),
    (["run", "--gin_file=gin/cpu/vit.gin", "--gin_param=MeshSpec.data=3", "--workdir={w}"], False),
    (["run", "--gin_file=gin/cpu/vit.gin", "--gin_param=DataSpec.dataset='mnist2'"], False),
    (["run", "--gin_file=gin/cpu/vit.gin", "--gin_param=TrainSpec.init_from='{tmp}'"], False),
    # A checkpoint's content is read once the model is built, TensorFlow and all.
    (["run", "--gin_file=gin/cpu/vit.gin", "--gin_param=TrainSpec.init_from='{bin}'"], True),
    (
        ["evaluate", "--gin_file=gin/cpu/vit.gin", "--checkpoint={w}/none.npz", "--workdir={w}"],
        False,
    ),
    (["inspect", "--gin_file=gin/cpu/vmoe.gin", "--batch=3"], False),
    (["inspect", "--gin_file=gin/cpu/vit.gin", "--mesh=1,2"], False),
    (["sweep", "{w}"], False),
    (["fewshot", "{w}", "--shots=0"], False),
    (["report", "{w}", "-o", "{w}/r.md"], False),
    (["suite", "--gin_file=gin/suites/demo.gin", "--gin_param=SuiteSpec.seeds=0"], False),
    (["export", "{w}", "--format=vit_npz", "--output={tmp}/x.npz"], False),
]


@pytest.mark.slow  # each loads the command in a subprocess; one loads TensorFlow
@pytest.mark.parametrize(
    "args, loads_tensorflow",
    USAGE_ERRORS,
    ids=[" ".join(args) for args, _ in USAGE_ERRORS],
)
def test_every_usage_error_is_one_line_whatever_tensorflow_writes(
    args, loads_tensorflow, noisy_tensorflow, tmp_path
):
    env, marker = noisy_tensorflow
    workdir = tmp_path / "w"
    not_a_checkpoint = tmp_path / "weights.npz"
    np.savez(not_a_checkpoint, unrelated=np.zeros(3))  # read once the model is built
    args = [
        a.replace("{w}", str(workdir))
        .replace("{tmp}", str(tmp_path))
        .replace("{bin}", str(not_a_checkpoint))
        for a in args
    ]
    if args[0] == "run" and not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={workdir}")
    process = subprocess.run(
        [sys.executable, "-m", f"harness.{args[0]}", *args[1:]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert process.returncode == 2, process.stderr
    lines = process.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), process.stderr
    assert marker.exists() == loads_tensorflow
    assert not workdir.exists()


@pytest.mark.slow
def test_verbose_shows_what_tensorflow_wrote(noisy_tensorflow, tmp_path):
    env, marker = noisy_tensorflow
    not_a_checkpoint = tmp_path / "weights.npz"
    np.savez(not_a_checkpoint, unrelated=np.zeros(3))  # read once the model is built
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.run",
            "--gin_file=gin/cpu/vit.gin",
            f"--gin_param=TrainSpec.init_from='{not_a_checkpoint}'",
            f"--workdir={tmp_path / 'w'}",
            "--verbose",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert process.returncode == 2 and marker.exists()
    assert process.stderr.splitlines()[0].startswith("error: ")
    assert NATIVE_LINE in process.stderr


@pytest.mark.slow
def test_a_workdir_in_use_is_refused_before_the_model_is_built(noisy_tensorflow, tmp_path):
    """The lock comes before the build: the refused run loads no TensorFlow (so no data and no
    model) and touches nothing in the workdir."""
    env, marker = noisy_tensorflow
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from harness.run_dir import lock as workdir_lock\n"
            f"with workdir_lock.locked({str(workdir)!r}):\n"
            "    print('locked', flush=True); time.sleep(600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.run",
                "--gin_file=gin/cpu/vit.gin",
                f"--workdir={workdir}",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    assert process.returncode == 2
    lines = process.stderr.splitlines()
    assert len(lines) == 1 and "is in use by another harness.run" in lines[0], process.stderr
    assert not marker.exists()
    assert sorted(os.listdir(workdir)) == [".harness.lock", "notes.txt"]
    assert (workdir / "notes.txt").read_text() == "mine"
