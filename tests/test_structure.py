"""The layout's promises: no import cycles, no library imports a command, and every command
starts fast and lists its own flags (and no other command's) in --help."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("harness", "models")
COMMANDS = {
    "run": ["--gin_file", "--gin_param", "--workdir", "--distributed"],
    "inspect": ["--gin_file", "--gin_param", "--mesh", "--json", "--plan", "--device"],
    "sweep": ["--capacities", "--ks", "--timing_batch_size", "--data_dir"],
    "report": ["--output", "--batch_sizes", "--timing_repeats", "--data_dir"],
    "suite": ["--gin_file", "--gin_param"],
    "evaluate": ["--gin_file", "--gin_param", "--workdir", "--checkpoint", "--format"],
    "fewshot": ["--datasets", "--shots", "--seeds", "--l2_regs", "--data_dir"],
    "export": ["--format", "--output", "--step", "--overwrite"],
}


def _modules() -> dict[str, str]:
    """Every project module name -> its file."""
    found = {}
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


def _imports(path: str, modules: dict[str, str]) -> set[str]:
    """Project modules `path` imports, at any depth of the file (function-level included)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` depends on the module, not on the package's
            # __init__ (which may itself import that module); other names come from `package`.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        imported.update(name for name in names if name in modules)
    return imported


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imports(path, modules) - {module} for module, path in modules.items()}


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for dependency in sorted(graph[module]):
            if state.get(dependency) == "open":
                cycle = [*stack[stack.index(dependency) :], dependency]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dependency not in state:
                visit(dependency)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_library_imports_a_command():
    graph = _graph()
    commands = {m for m in graph if m.startswith("harness.cli.") and m != "harness.cli.app"}
    commands -= {"harness.cli.flags", "harness.cli.preflight"}  # shared by commands
    entry_points = {f"harness.{name}" for name in COMMANDS}
    for module, imported in graph.items():
        if module in entry_points:
            continue
        offending = imported & commands
        assert not offending, f"{module} imports the command(s) {sorted(offending)}"


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The checker itself: two planted modules importing each other are reported."""
    package = tmp_path / "harness"
    package.mkdir()
    (package / "a.py").write_text("from harness import b\n")
    (package / "b.py").write_text("import harness.a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("harness",))
    with pytest.raises(pytest.fail.Exception, match=r"import cycle: harness\.a -> harness\.b"):
        test_no_import_cycles()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_commands_own_flags_and_no_others(command):
    process = subprocess.run(
        [sys.executable, "-m", f"harness.{command}", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    shown = process.stdout
    for flag in COMMANDS[command]:
        assert flag in shown, f"harness.{command} --help does not list {flag}"
    others = {flag for name, own in COMMANDS.items() if name != command for flag in own}
    for flag in others - set(COMMANDS[command]):
        assert flag not in shown, f"harness.{command} --help lists {flag}, another command's"
    # Starting fast is the point of importing JAX, praxis and TensorFlow lazily.
    assert "tensorflow" not in _modules_loaded_by_help(command)


def _modules_loaded_by_help(command: str) -> str:
    """The heavy top-level modules imported by `harness.COMMAND --help`, as text."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['harness.{command}', '--help']\n"
        "try:\n"
        f"    runpy.run_module('harness.{command}', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('jax', 'praxis', 'tensorflow', 'flax', 'orbax')\n"
        "print(' '.join(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    return process.stderr.strip()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_imports_no_heavy_library(command):
    assert _modules_loaded_by_help(command) == ""


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--gin_file=gin/cpu/vit.gin", "--workdir=WORKDIR", "--no_such_flag"],
        ["run", "--gin_file=gin/cpu/vit.gin", "--workdir=WORKDIR", "--gin_param=VitSpec.nope=1"],
        ["inspect", "--gin_file=gin/cpu/vit.gin", "--mesh=1,2"],
        ["report", "runs/x"],
        ["sweep"],
        ["suite", "stray_argument"],
        ["fewshot", "WORKDIR", "--shots=0"],
        ["export", "WORKDIR", "--format=vit_npz"],
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(args, tmp_path):
    args = [a.replace("WORKDIR", str(tmp_path / "w")) for a in args]
    process = subprocess.run(
        [sys.executable, "-m", f"harness.{args[0]}", *args[1:]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,  # a hang guard only: a loaded 2-core machine took 95 s
    )
    assert process.returncode == 2, process.stderr
    assert len(process.stderr.splitlines()) == 1, process.stderr
    assert process.stderr.startswith("error: ")
    assert not (tmp_path / "w").exists()


# The packages from the bottom floor up. A module may import modules of its own package and of
# packages on lower floors, never a higher floor or a sibling on its own floor, so no two
# packages import each other and a lower one can be read without the ones above it.
# docs/DESIGN.md's "Packages" table lists the same floors (test_design_doc_lists_the_layers).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("models", "harness.base"),
    ("harness.data",),
    ("harness.run_dir",),
    ("harness.checkpoint_formats",),
    ("harness.config",),
    ("harness.runtime",),
    ("harness.exports", "harness.measure", "harness.transfer"),
    ("harness.reporting",),
    ("harness.train",),
    ("harness.suites",),
    ("harness.cli",),
    ("harness.commands",),
)
# Top-level modules of `harness` that are not packages: the shared base, or a command's entry.
BASE_MODULES = ("harness", "harness.errors", "harness.files", "harness.storage", "harness.project",
                "harness.interrupts", "harness.limits",
                "harness.native_stderr")  # fmt: skip


def package_of(module: str) -> str:
    """The LAYERS package a module belongs to."""
    if module == "models" or module.startswith("models."):
        return "models"
    if module in BASE_MODULES:
        return "harness.base"
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in COMMANDS:
        return "harness.commands"
    return ".".join(parts[:2])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes to a higher floor or a sibling, as 'a -> b (why)'."""
    floor = {package: i for i, group in enumerate(LAYERS) for package in group}
    found = []
    for module, imported in sorted(graph.items()):
        source = package_of(module)
        if source not in floor:
            found.append(f"{module} is in {source}, which LAYERS does not place")
            continue
        for target in sorted(imported):
            target_package = package_of(target)
            if target_package == source:
                continue
            if floor.get(target_package, len(LAYERS)) >= floor[source]:
                found.append(f"{module} -> {target} ({source} may not import {target_package})")
    return found


def test_packages_import_only_downward():
    assert upward_imports(_graph()) == []


def test_no_two_packages_import_each_other():
    graph = _graph()
    pairs = {(package_of(a), package_of(b)) for a, deps in graph.items() for b in deps}
    both_ways = sorted({tuple(sorted(p)) for p in pairs if p[0] != p[1] and p[::-1] in pairs})
    assert both_ways == []


def test_the_direction_check_finds_a_planted_upward_import(tmp_path, monkeypatch):
    """The checker itself: a runtime module importing the trainer is reported."""
    for package in ("runtime", "train"):
        (tmp_path / "harness" / package).mkdir(parents=True)
    (tmp_path / "harness" / "runtime" / "steps.py").write_text("from harness.train import loop\n")
    (tmp_path / "harness" / "train" / "loop.py").write_text("from harness.runtime import steps\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("harness",))
    assert upward_imports(_graph()) == [
        "harness.runtime.steps -> harness.train.loop (harness.runtime may not import harness.train)"
    ]


def test_design_doc_lists_the_layers():
    """docs/DESIGN.md's package table has the same floors, in the same order, as LAYERS."""
    with open(os.path.join(ROOT, "docs", "DESIGN.md")) as f:
        text = f.read()
    table = text.split("<!-- layers:begin -->")[1].split("<!-- layers:end -->")[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| ")][1:]
    floors: dict[int, list[str]] = {}
    for floor, package in rows:
        floors.setdefault(int(floor), []).append(package.strip().strip("`"))
    assert [tuple(floors[i]) for i in sorted(floors)] == [tuple(g) for g in LAYERS]


def test_any_gin_file_parses_in_a_fresh_process():
    """gin_config registers every configurable itself: parsing needs no other import first."""
    probe = (
        "from harness.config import gin_config\n"
        "gin_config.parse_gin(['gin/suites/paper_claims.gin'], [])\n"
        "gin_config.parse_gin(['gin/vit_b16.gin', 'gin/transfer/cifar10_224.gin'], [])\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert process.returncode == 0, process.stderr
