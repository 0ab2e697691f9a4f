r"""Run a bench script under a newer jax than the lock's, for a machine that has its own jax.

  python3 bench/jax_compat.py bench/moe_layer.py --dims=768 ...   # a script and its arguments
  python3 bench/jax_compat.py -c 'import jax; print(jax.__version__)'

The GPU machine lent to some sessions has no network and its own image: Python 3.12 with
jax 0.11.2 and the CUDA 13 plugin, but no praxis, lingvo, fiddle, gin-config or clu. Those
travel as wheels (scripts/device_wheels.sh) and run on that jax; bench/accelerator_device.sh
does the whole run. praxis 1.4.0 needs one shim there, applied here before the script runs:

  - praxis.base_input does `from jax.lib import xla_client` (only for xc.OpSharding).
    jax.lib.xla_client was removed from jax (0.7 era); jaxlib still ships the same module as
    jaxlib.xla_client, so jax.lib gets that module back as an attribute.

Nothing here changes any layer's maths. Under the lock's jax 0.4.26 jax.lib.xla_client
exists and this wrapper leaves it alone.
"""

import runpy
import sys

import jax
import jax.lib


def apply() -> list[str]:
    """Patches what praxis 1.4.0 needs from an older jax; returns the names patched."""
    patched = []
    if not hasattr(jax.lib, "xla_client"):
        import jaxlib.xla_client

        jax.lib.xla_client = jaxlib.xla_client
        sys.modules.setdefault("jax.lib.xla_client", jaxlib.xla_client)
        patched.append("jax.lib.xla_client")
    return patched


def main() -> None:
    apply()
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "-c":
        code = sys.argv[2]
        sys.argv = ["-c", *sys.argv[3:]]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
        return
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
