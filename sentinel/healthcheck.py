"""The container images' HEALTHCHECK: probe /healthz of whichever server the container runs.

`python -m sentinel.healthcheck` reads the container's main process's command line (PID 1: the
image's `sentinel` entrypoint, or an init such as tini in front of it) and probes the worker's
SENTINEL_WEB_PORT for `sentinel worker`, the console's port (--port, else SENTINEL_CONSOLE_PORT)
for `sentinel console`. A fixed probe of the worker's port marked `docker run IMAGE console`
unhealthy, as nothing listens there. Any other command serves nothing: there is nothing to
probe, so it is healthy while it runs (Docker's view of a one-off job is its exit code).

Exit 0 healthy, 1 not (Docker's convention), with one line saying what was probed.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from stream.settings import Settings

PROBE_TIMEOUT_S = 4.0  # under the HEALTHCHECK's --timeout=5s, so a hung server reads as unhealthy, not as a killed probe
# A wildcard host, probed on its loopback: "::" listens on IPv6 alone (IPV6_V6ONLY, as asyncio's
# servers set it), so 127.0.0.1 would be refused there; "" listens on both.
LOOPBACK_OF = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def subcommand(argv: list[str]) -> tuple[str | None, list[str]]:
    """The `sentinel` subcommand in a process's argv and the arguments after it; (None, []) when
    the process is not `sentinel` (an image run with another entrypoint)."""
    starts = [i for i, arg in enumerate(argv) if Path(arg).name == "sentinel"]
    if not starts:
        return None, []
    rest = argv[starts[0] + 1:]
    for i, arg in enumerate(rest):
        if not arg.startswith("-"):
            return arg, rest[i + 1:]
    return None, []


def option_value(args: list[str], name: str) -> str | None:
    """The last `--name VALUE` or `--name=VALUE` in args, as click reads it (the last one wins)."""
    found = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def probe_url(argv: list[str], settings: Settings) -> str | None:
    """The /healthz URL of the server the command in argv runs, or None when it runs none."""
    command, args = subcommand(argv)
    if command == "worker":
        host, port = settings.web_host, settings.web_port
    elif command == "console":
        host, port = settings.console_host, int(option_value(args, "--port") or settings.console_port)
    else:
        return None
    return local_url(host, port, "/healthz")


def local_url(host: str, port: int, path: str) -> str:
    """The URL this machine reaches a server listening on `host`:`port` at (a wildcard: its loopback)."""
    host = LOOPBACK_OF.get(host, host)
    host = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    return f"http://{host}:{port}{path}"


def process_argv(pid: int) -> list[str]:
    """A process's argv (NUL-separated in /proc)."""
    return [arg for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if arg]


def main(pid: int = 1) -> int:
    """Probe the server process pid runs (the container's main process, PID 1)."""
    try:
        url = probe_url(process_argv(pid), Settings())
    except (OSError, ValueError) as exc:  # no /proc, or settings the process itself would have refused
        print(f"unhealthy: {type(exc).__name__}: {exc}")
        return 1
    if url is None:
        print("healthy: the container runs no server to probe")
        return 0
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as answer:  # noqa: S310 (a loopback http URL built above)
            print(f"healthy: {url} answered {answer.status}")
            return 0
    except OSError as exc:  # URLError and HTTPError (a 503 from a stalled loop) are OSErrors
        print(f"unhealthy: {url}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
