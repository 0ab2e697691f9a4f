"""Native libraries' start-up lines kept off the terminal.

TensorFlow (imported through tfds, clu and tf.io.gfile) writes lines such as "oneDNN custom
operations are on" from C++ straight to file descriptor 2 while its shared libraries load,
before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot stop them. Which lines appear
depends on the CPU (AVX-512 and AMX machines print them; older ones print nothing), so a command
whose output must be one error line, or a clean progress log, cannot let them through.

`install()` puts a finder at the front of `sys.meta_path` that runs the first import of each
module in NOISY_MODULES with descriptor 2 pointed at a temporary file. Whatever code path imports
TensorFlow first, its loading is covered. What was written is kept (`captured()`), and shown on
stderr when the command runs with --verbose. An exception raised by the import itself still
propagates; the command turns it into one line.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from types import ModuleType

NOISY_MODULES = ("tensorflow",)

_captured: list[str] = []


class NativeImportError(ImportError):
    """A guarded import failed; its message is one line (what it wrote is in `captured()`)."""

    def __init__(self, name: str, error: BaseException) -> None:
        reason = " ".join(str(error).split()) or type(error).__name__
        super().__init__(
            f"importing {name} failed ({reason[:300]}); run `make setup` again, or pass "
            "--verbose to see what it printed",
            name=name,
        )


@contextlib.contextmanager
def fd2_captured() -> Iterator[None]:
    """Points descriptor 2 (native writes and Python's stderr alike) at a temporary file while
    inside, then restores it and appends what was written to `captured()`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            if text:
                _captured.append(text)


def captured() -> str:
    """Everything the guarded imports wrote to descriptor 2 so far."""
    return "".join(_captured)


class _QuietLoader(importlib.abc.Loader):
    """Delegates to the module's real loader, with descriptor 2 captured while it executes."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            with fd2_captured():
                self._loader.exec_module(module)
        except Exception as error:
            raise NativeImportError(module.__name__, error) from error


class _QuietFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]) -> None:
        self._names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def install(names: Sequence[str] = NOISY_MODULES) -> None:
    """Guards the first import of each module in `names` (idempotent). Modules already
    imported are left alone: their start-up lines have been written."""
    if any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietFinder(names))


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietFinder)]
