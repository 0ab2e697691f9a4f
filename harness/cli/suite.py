r"""Reproduce the papers' claims at CPU scale: train a gin-configured set of runs over several
seeds, sweep the sparse ones, inspect the paper configs, and write one report, claim by claim.

  python -m harness.suite --gin_file=gin/suites/paper_claims.gin [--gin_param=...]

Every (run, seed) trains in this process into SuiteSpec.root/NAME/seed_S; the report goes to
SuiteSpec.report. Running the same command again resumes: finished runs, sweeps and timings
are skipped and an interrupted run resumes from its checkpoint.
"""

import sys

from absl import flags

from harness.cli import app
from harness.cli import flags as cli_flags
from harness.errors import UsageError

cli_flags.define_gin_flags()
flags.adopt_module_key_flags(cli_flags)


def main(args: list[str]) -> None:
    app.no_positional(args, "--gin_file=gin/suites/demo.gin")
    if not cli_flags.gin_files():
        raise UsageError("--gin_file is required; e.g. --gin_file=gin/suites/demo.gin")
    import gin

    from harness.config import gin_config
    from harness.config.suite_spec import SuiteSpec

    gin_config.parse_gin(cli_flags.gin_files(), cli_flags.gin_params())
    try:
        spec = SuiteSpec()
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from error
    gin.clear_config()
    from harness.suites import runner
    from harness.train import preemption

    try:
        runner.run_suite(spec, "python -m harness.suite " + " ".join(sys.argv[1:]))
    except preemption.Preempted as stopped:
        print(f"{stopped} (the suite resumes with it too)", file=sys.stderr)
        sys.exit(preemption.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    app.run(main)
