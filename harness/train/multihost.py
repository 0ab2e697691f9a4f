"""The multi-host flags of harness.run, checked before anything starts (issue 26: a
--coordinator_address without the process count, or --distributed on a machine that is no
pod, was a traceback after JAX loaded; --num_processes=-1 was ignored; an unresolvable
coordinator waited minutes)."""

import socket

from harness.errors import UsageError

EXAMPLE = "--coordinator_address=host0:1234 --num_processes=2 --process_id=0"


def check_flags(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    distributed: bool,
) -> None:
    """Refuses (UsageError, one line) any combination harness.run would not run as asked:
    either no multi-host flag, --distributed alone (a TPU pod or a cluster jax detects), or
    all three of --coordinator_address, --num_processes and --process_id, in range."""
    if num_processes is not None and num_processes < 1:
        raise UsageError(f"--num_processes={num_processes} must be >= 1; e.g. {EXAMPLE}")
    if process_id is not None and process_id < 0:
        raise UsageError(f"--process_id={process_id} must be >= 0; e.g. {EXAMPLE}")
    given = [
        f"--{name}"
        for name, value in (("num_processes", num_processes), ("process_id", process_id))
        if value is not None
    ]
    if coordinator_address is None:
        if given and not distributed:
            raise UsageError(
                f"{' and '.join(given)} without --coordinator_address would be ignored; pass "
                f"all three ({EXAMPLE}), or --distributed alone on a TPU pod"
            )
        return
    missing = [f for f in ("--num_processes", "--process_id") if f not in given]
    if missing:
        raise UsageError(
            f"--coordinator_address={coordinator_address} needs {' and '.join(missing)} too; "
            f"pass all three on every process, e.g. {EXAMPLE}"
        )
    if process_id >= num_processes:  # type: ignore[operator]
        raise UsageError(
            f"--process_id={process_id} is not below --num_processes={num_processes}; "
            f"processes are numbered 0..{num_processes - 1}"  # type: ignore[operator]
        )
    check_coordinator(coordinator_address)


def check_coordinator(address: str) -> None:
    """host:port with a port in 1..65535 and a host name that resolves."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:1234
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"--coordinator_address={address} is not HOST:PORT (a port 1-65535); e.g. host0:1234"
        )
    try:
        socket.getaddrinfo(host, int(port))
    except (OSError, UnicodeError) as error:
        raise UsageError(
            f"--coordinator_address={address}: host {host!r} does not resolve "
            f"({getattr(error, 'strerror', None) or error}); give process 0's host name or IP"
        ) from error
