"""The embedded stack starts real servers and never leaves one behind."""

import contextlib
import gc
import os
import re

import pytest
import redis

from stream.tools.services import RESERVED_PORTS, embedded_stack, free_port, free_ports, port_open, start_redis
from workers import command_line, pid_alive



@pytest.fixture()
def started(monkeypatch) -> list[int]:
    """PIDs of every server process the stack starts (observed, not replaced)."""
    import stream.tools.services as services

    pids: list[int] = []
    real = services.Process.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        pids.append(self.proc.pid)

    monkeypatch.setattr(services.Process, "__init__", spy)
    return pids


def test_free_ports_names_each_port_once():
    """`sentinel run --workers N` gives each worker a port from here; picked one after another,
    with each socket closed before the next, they repeated a port about 8 times in 500 (the
    kernel picks at random), and the worker given a port another held exited."""
    ports = free_ports(500)
    assert len(ports) == len(set(ports)) == 500


def test_free_port_one_call_after_another_names_each_port_once():
    """Tests and `sentinel run` call free_port once per server; with the socket closed on return,
    the kernel could hand the port just named out again (7 repeats in 500 calls here), and two
    servers were given one port. Each stays reserved for the next RESERVED_PORTS calls."""
    ports = [free_port() for _ in range(RESERVED_PORTS)]
    assert len(set(ports)) == RESERVED_PORTS


def test_a_picked_port_is_held_on_every_address_its_server_may_listen_on():
    """Workers and the console listen on 0.0.0.0 by default. Reserved on 127.0.0.1 alone, a port-0
    bind to another address (127.0.0.2 here; a pod's IP) was handed reserved ports (81 of 5000
    binds), and the server's bind on 0.0.0.0 would then fail; the wildcard still binds beside it."""

    from stream.tools.services import listening_sockets

    ports = set(free_ports(256))
    assert ports.isdisjoint(port0_binds(2000, "127.0.0.2"))
    for sock in listening_sockets("0.0.0.0", ports.pop()):
        sock.close()


def port0_binds(count: int, address: str = "::", v6only: bool = True) -> set[int]:
    """The ports `count` port-0 binds on `address` are handed (on :: with IPV6_V6ONLY, as asyncio's
    servers and Python's create_server bind an IPv6 address). 500 held at once, so each of those
    gets another port, then let go: with the reservations, under 1024 descriptors (`ulimit -n` on
    some CI machines), where thousands at once failed with EMFILE."""
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    handed: set[int] = set()
    for start in range(0, count, 500):
        with contextlib.ExitStack() as held:
            others = [held.enter_context(socket.socket(family)) for _ in range(min(500, count - start))]
            for sock in others:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
                sock.bind((address, 0))
            handed |= {sock.getsockname()[1] for sock in others}
    return handed


def test_a_picked_port_is_held_on_ipv6_alone_too():
    """Held on 0.0.0.0 alone, a port-0 bind on IPv6 alone was still handed reserved ports (about
    one bind in fifty here), and a worker on SENTINEL_WEB_HOST=:: or ::1 (its aiohttp server, IPv6
    alone as asyncio binds it) given that port found it taken. Held on :: too; the worker's
    sockets and a dual-stack server (uvicorn on ::) still bind and listen beside the hold."""
    import socket

    from stream.tools.services import free_cluster_port, listening_sockets

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    ports = set(free_ports(RESERVED_PORTS - 2))  # with the cluster pick's two ports, all still held
    cluster = free_cluster_port()
    handed = port0_binds(4000)
    assert ports.isdisjoint(handed) and not {cluster, cluster + 10_000} & handed, sorted((ports | {cluster, cluster + 10_000}) & handed)
    for host in ("::", "::1", "0.0.0.0", "localhost"):
        for sock in listening_sockets(host, ports.pop()):
            sock.close()
    with socket.socket(socket.AF_INET6) as dual:  # as uvicorn binds "::": IPv4 too, SO_REUSEADDR
        dual.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        dual.bind(("::", ports.pop()))
        dual.listen()


def test_cluster_port_picks_are_held_both_ports_and_never_overlap(tmp_path):
    """free_cluster_port only checked its pair free and let it go: until the node bound them, the
    port and its bus port (+10000) were anyone's, and a later pick could name them again. Both are
    held now, as free_ports holds its picks, and the node still starts on them."""
    import errno
    import socket

    from stream.tools.services import free_cluster_port, listens

    picks = [free_cluster_port() for _ in range(100)]
    named = [port for pick in picks for port in (pick, pick + 10_000)]
    assert len(named) == len(set(named)), sorted(p for p in named if named.count(p) > 1)
    for port in (picks[0], picks[0] + 10_000):
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")):
            with socket.socket(family) as other, pytest.raises(OSError) as taken:
                other.bind((address, port))
            assert taken.value.errno == errno.EADDRINUSE, port
    assert set(named).isdisjoint(port0_binds(3000, "127.0.0.1"))

    port = picks[-1]
    cluster = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
    proc, url = start_redis(tmp_path, port, extra=cluster, name="redis cluster node")
    try:
        assert redis.Redis.from_url(url).ping() and listens(proc.proc.pid, port + 10_000)
    finally:
        proc.stop()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_the_reservations_hold_one_descriptor_a_port_and_no_more_than_reserved_ports():
    """A socket for each of 0.0.0.0 and ::, and a cluster pick's two ports, held 2 to 4 descriptors
    a pick, for RESERVED_PORTS picks: 722 held for the rest of the session after this module, where
    some CI machines allow 1024 in all (`ulimit -n`), and every server, client and browser the
    later tests start needs its own. One socket a port (on :: for both families), RESERVED_PORTS
    ports in all, as before IPv6 was held."""
    import stream.tools.services as services

    services._release_reserved()
    gc.collect()  # a socket an earlier test left to the collector closes now, not between the counts
    before = open_descriptors()
    free_ports(RESERVED_PORTS)
    assert open_descriptors() - before <= RESERVED_PORTS == len(services._RESERVED)
    clusters = [services.free_cluster_port() for _ in range(20)]
    free_port()
    assert open_descriptors() - before <= RESERVED_PORTS == len(services._RESERVED)
    # The newest are the ones held: every cluster pick's port and bus port.
    assert {p for c in clusters for p in (c, c + 10_000)}.isdisjoint(port0_binds(2000, "127.0.0.1"))


@pytest.mark.parametrize("fails", ["socket", "bind"])
def test_without_ipv6_a_pick_is_held_on_ipv4(monkeypatch, fails):
    """A host with IPv6 off refuses an AF_INET6 socket (EAFNOSUPPORT), or one whose :: is not
    bindable refuses its bind (EADDRNOTAVAIL): the pick is held on 0.0.0.0, never an error, and its
    server still binds beside it."""
    import errno
    import socket

    import stream.tools.services as services

    real = socket.socket

    class Unbindable(real):
        def bind(self, address: object) -> None:
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    def no_ipv6(family: int = socket.AF_INET, *args: object, **kwargs: object) -> socket.socket:
        if family == socket.AF_INET6 and fails == "socket":
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return (Unbindable if family == socket.AF_INET6 else real)(family, *args, **kwargs)

    monkeypatch.setattr(services.socket, "socket", no_ipv6)
    ports = free_ports(3) + [services.free_cluster_port()]
    monkeypatch.undo()
    assert ports[:3] == [sock.getsockname()[1] for sock in list(services._RESERVED)[-5:-2]]
    assert {sock.family for sock in list(services._RESERVED)[-5:]} == {socket.AF_INET}
    assert set(ports).isdisjoint(port0_binds(2000, "127.0.0.2"))
    for sock in services.listening_sockets("0.0.0.0", ports[0]):
        sock.close()


def test_off_linux_a_picked_port_is_released_at_once(monkeypatch):
    """BSD's SO_REUSEADDR (macOS) lets no second socket bind a wildcard address a held socket has:
    there a reservation would refuse the server it was picked for, so picks are only free, not held."""
    import socket
    import sys

    monkeypatch.setattr(sys, "platform", "darwin")
    port = free_port()
    with socket.socket() as server:  # no SO_REUSEADDR: binds only where nothing holds the port
        server.bind(("0.0.0.0", port))


def test_a_process_that_picked_ports_exits_without_a_resource_warning():
    """The reservations live as long as the process: left to the interpreter's teardown, each was
    an "unclosed socket" ResourceWarning at the end of every `sentinel run` (its stack's ports, its
    workers') under python -X dev, as a worker's log file was (tests/test_run_lines.py)."""
    import subprocess
    import sys

    picks = "from stream.tools.services import free_port, free_ports; free_port(); free_ports(3)"
    done = subprocess.run([sys.executable, "-X", "dev", "-c", picks], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ResourceWarning" not in done.stderr, done.stderr


def test_a_picked_port_is_held_for_its_server_and_no_one_else(tmp_path):
    """Between free_port and the server's bind (milliseconds for redis-server, seconds of imports
    for a worker's web port) the port was anyone's: another test's server, or any outgoing
    connection on the host (same port range), took it and the server exited with "Address already
    in use". Reserved, another bind to it fails and port-0 binds skip it, while the server it was
    picked for binds and serves on it, and nothing answers there before it does."""
    import errno
    import socket

    port = free_port()
    with socket.socket() as other, pytest.raises(OSError) as taken:
        other.bind(("127.0.0.1", port))
    assert taken.value.errno == errno.EADDRINUSE
    with contextlib.ExitStack() as held:
        others = [held.enter_context(socket.socket()) for _ in range(200)]
        for sock in others:
            sock.bind(("127.0.0.1", 0))
        assert port not in {sock.getsockname()[1] for sock in others}
    assert not port_open(port)

    proc, url = start_redis(tmp_path, port)
    try:
        assert url.endswith(f":{port}/0") and redis.Redis.from_url(url).ping()
    finally:
        proc.stop()


def test_stack_starts_serves_and_stops(started):
    with embedded_stack() as stack:
        assert redis.Redis.from_url(stack.redis_url).ping()
        assert port_open(int(stack.kafka_broker.rsplit(":", 1)[1]))
        assert len(started) == 2 and all(pid_alive(pid) for pid in started)
    assert not any(pid_alive(pid) for pid in started)


def test_stack_stops_on_error(started):
    with pytest.raises(RuntimeError, match="boom"):
        with embedded_stack():
            raise RuntimeError("boom")
    assert started and not any(pid_alive(pid) for pid in started)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stop_while_the_stack_waits_for_tansu_stops_the_broker_too(stop, started, monkeypatch):
    """A stop while the embedded stack waited for Tansu to listen (`sentinel run` starting) left the
    broker running: start_ready stopped a server only on its own ServiceError, and the stack had not
    yet got the broker to stop. Redis (started) and Tansu (waited for) are both stopped now. The
    SIGTERM is a real one under sigterm_unwinds, as `sentinel run`'s `connected` takes it; the
    Ctrl-C is the KeyboardInterrupt Python raises in the wait (a real SIGINT is ignored where the
    tests run as a background job)."""
    import signal

    import stream.tools.services as services
    from stream.tools.services import sigterm_unwinds

    real = services.port_open
    asked: list[int] = []

    def port_open_stopped(port: int) -> bool:  # the Tansu readiness check: the stop comes during its wait
        if not asked:
            asked.append(port)
            if stop == "ctrl-c":
                raise KeyboardInterrupt()
            os.kill(os.getpid(), signal.SIGTERM)
        return real(port)

    monkeypatch.setattr(services, "port_open", port_open_stopped)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(KeyboardInterrupt if stop == "ctrl-c" else SystemExit), sigterm_unwinds(), embedded_stack():
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)  # sigterm_unwinds leaves it ignored once one was taken
    assert asked and len(started) == 2, started
    assert not any(pid_alive(pid) for pid in started), [pid for pid in started if pid_alive(pid)]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigkill"])
def test_stopping_sentinel_run_mid_run_leaves_no_process_behind(how, tmp_path, tiny_model_dir, cache_dir):
    """Ctrl-C (SIGINT to the foreground process group) or SIGTERM to the command alone (`kill PID`,
    `timeout`, a deleted Job) mid-run stops the worker, broker and redis-server. The servers and the
    worker run in their own sessions, so a SIGTERM reaches only `sentinel run`, which must stop them.
    A SIGKILL leaves it no chance to: the kernel sends them SIGTERM when it dies (`dying_with_parent`)."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import psutil

    posts = tmp_path / "posts.jsonl"
    posts.write_text("\n".join(json.dumps({"id": f"p{i}", "text": "BTC up", "created_at": 1_767_225_600 + i}) for i in range(50)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BROKER", "REDIS_URL")}
    env.update(SENTINEL_BASE=str(tiny_model_dir), SENTINEL_CACHE_DIR=str(cache_dir), SENTINEL_DTYPE="float32")
    # SIGINT as a terminal leaves it. An ignored SIGINT is inherited through exec: a test run started
    # in the background by a non-interactive shell (`cmd &`) ignores it, and so, before this, did the
    # `sentinel run` here, which then finished normally (exit 0) despite the Ctrl-C.
    said = (tmp_path / "stderr").open("w")
    worker_log = tmp_path / "worker.log"  # read if it hangs; Ctrl-C's own message about the log is checked below
    keep_log = [] if how == "ctrl-c" else ["--worker-log", str(worker_log)]
    alerts, summary = tmp_path / "alerts.jsonl", tmp_path / "summary.json"
    summary.write_text("{}\n")  # an earlier run's: left as it was
    outputs = ["--alerts-out", str(alerts), "--summary-json", str(summary)]
    run = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", str(posts), *keep_log, *outputs], env=env,
                           start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=said,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    parent = psutil.Process(run.pid)
    deadline = time.monotonic() + 120
    children: list[psutil.Process] = []

    def workers() -> list[psutil.Process]:  # as sentinel.run.start_worker starts it (`-m sentinel.cli` until session 53)
        return [c for c in children if command_line(c).endswith("-m sentinel worker")]

    while time.monotonic() < deadline:  # broker, redis-server and the worker
        children = parent.children(recursive=True)
        if len(workers()) == 1 and len(children) >= 3:
            break
        time.sleep(0.1)
    # The worker found, not only three children: a worker never recognised waited out the deadline,
    # and the run had ended by then (0 children, for a stop that came too late to test anything).
    assert len(workers()) == 1 and len(children) >= 3, [command_line(c) for c in children]

    def exit_code() -> int | None:
        try:
            return run.wait(60)
        except subprocess.TimeoutExpired:  # what each part was doing, for whoever reads the failure
            logs = {name: path.read_text(errors="replace")[-3000:] for name, path in (("stderr", tmp_path / "stderr"), ("worker log", worker_log))
                    if path.exists()}
            pytest.fail(f"sentinel run still running 60 s after {how}; " + "\n".join(f"{k}:\n{v}" for k, v in logs.items()))

    try:
        if how == "ctrl-c":
            os.killpg(run.pid, signal.SIGINT)
            assert exit_code() == 130
            # Says so, and where the worker's log is (it was left in /tmp without a word).
            # Says so, what it did not write (it said nothing of the files asked for), and where the log is.
            unwritten = f"the run did not finish, so nothing was written to --alerts-out {alerts}, --summary-json {summary}; run it to the end for them"
            assert re.search(rf"^interrupted: {re.escape(unwritten)}( \(worker log: \S+\))?$", (tmp_path / "stderr").read_text(), re.M), \
                (tmp_path / "stderr").read_text()
        elif how == "sigterm":
            run.send_signal(signal.SIGTERM)
            assert exit_code() == 128 + signal.SIGTERM
            unwritten = f"the run did not finish, so nothing was written to --alerts-out {alerts}, --summary-json {summary}; run it to the end for them"
            assert f"terminated: {unwritten} (worker log: {worker_log})\n" in (tmp_path / "stderr").read_text(), (tmp_path / "stderr").read_text()
        else:
            run.kill()
            assert exit_code() == -signal.SIGKILL
        if how != "sigkill":
            assert not alerts.exists() and summary.read_text() == "{}\n"  # nothing part-way, nothing lost
        gone, alive_ = psutil.wait_procs(children, timeout=30)
        assert not alive_, [command_line(p) for p in alive_]
    finally:  # a failure here must not leave the servers running for the rest of the suite
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()



# A command's coroutine that swallows the stop's cancellation, as aiokafka's client close() does
# (it awaits its own cancelled task under suppress(CancelledError)), then returns or polls on.
_SWALLOWS_THE_CANCELLATION = """
import asyncio, contextlib, sys
from stream.tools.services import cancelled_if_stopped, run_async

async def main(out, then):
    try:
        print("ready", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        if then == "polls":
            for _ in range(36000):
                cancelled_if_stopped()
                await asyncio.sleep(0.1)
        return "finished"
    finally:
        open(out, "w").write("clean")

try:
    print(run_async(main(sys.argv[1], sys.argv[2])), flush=True)
except KeyboardInterrupt:  # as the CLI does
    sys.exit(130)
"""


@pytest.mark.parametrize("then", ["returns", "polls"])
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stop_the_command_swallowed_still_stops_it(how, then, tmp_path):
    """A library that swallows the cancellation (aiokafka's close, 3.11's wait_for) does not turn a
    stop into a finished command: `sentinel run` Ctrl-C'd as its replay ended ran on, exited 0 and
    wrote its outputs (a CI failure). The coroutine's result is dropped for the stop's exit (130,
    143), and a loop that polls `cancelled_if_stopped` ends at its next round."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SWALLOWS_THE_CANCELLATION, str(out), then], stdout=subprocess.PIPE, text=True,
                            cwd=os.getcwd(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
        assert proc.wait(20) == (130 if how == "ctrl-c" else 128 + signal.SIGTERM)
        assert proc.stdout.read() == ""  # not the coroutine's result
        assert out.read_text() == "clean"
    finally:
        proc.kill()


# A command's coroutine stopped in its last step, with no await after it: as `sentinel record`
# Ctrl-C'd while it writes the finished read into --out.
_STOPPED_IN_ITS_LAST_STEP = """
import os, signal, sys
from stream.tools.services import run_async

async def main(how):
    os.kill(os.getpid(), signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
    return "finished"

try:
    print(run_async(main(sys.argv[1])), flush=True)
except KeyboardInterrupt:  # as the CLI does
    sys.exit(130)
"""


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stop_in_the_coroutines_last_step_is_not_lost(how):
    """asyncio takes a signal at the loop's next round; a coroutine that ends first (no await after
    the signal came) left it untaken, and the command exited 0 as if never stopped (found by
    test_record's stop while the finished read is written, after run_async took Ctrl-C as SIGTERM)."""
    import signal
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _STOPPED_IN_ITS_LAST_STEP, how], capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == (130 if how == "ctrl-c" else 128 + signal.SIGTERM), r.stdout + r.stderr
    assert r.stdout == ""  # not the coroutine's result


# A command's coroutine whose clean-up needs another task: like a Kafka producer's stop(), which
# waits for its sender task to deliver what is queued.
_CLEAN_UP_NEEDS_A_TASK = """
import asyncio, sys, time
from stream.tools.services import run_async, sigterm_unwinds

async def responder(requests):
    while True:
        (await requests.get()).set_result("clean")

async def main(out):
    requests = asyncio.Queue()
    helper = asyncio.create_task(responder(requests))
    try:
        print("ready", flush=True)
        await asyncio.sleep(3600)
    finally:
        reply = asyncio.get_running_loop().create_future()
        await requests.put(reply)
        with open(out, "w") as f:
            f.write(await reply)
        helper.cancel()

with sigterm_unwinds():
    try:
        if sys.argv[2] == "after":  # a finished run_async leaves the command's own SIGTERM handling in place
            run_async(asyncio.sleep(0))
            print("ready", flush=True)
            time.sleep(3600)
        else:
            run_async(main(sys.argv[1]))
    finally:
        if sys.argv[2] == "after":
            open(sys.argv[1], "w").write("unwound")
"""


@pytest.mark.parametrize(("when", "written"), [("during", "clean"), ("after", "unwound")])
def test_sigterm_during_async_work_cancels_it_and_its_clean_up_runs_whole(when, written, tmp_path):
    """A SIGTERM inside `run_async` cancels the command's coroutine alone: its clean-up can still
    await the tasks it needs (under `asyncio.run`, where the SIGTERM raised SystemExit in the loop,
    every task was cancelled at once and this clean-up waited forever). Exit 143 either way."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _CLEAN_UP_NEEDS_A_TASK, str(out), when], stdout=subprocess.PIPE, text=True,
                            cwd=os.getcwd())
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 128 + signal.SIGTERM
        assert out.read_text() == written
    finally:
        proc.kill()


# A command under `sigterm_unwinds` (as `sentinel run`), with a second thread as every command has
# one (rich's progress bar refreshes from its own, asyncio resolves names in its executor's). As
# `run_async` gives the signals back, a SIGTERM arrives just after its first change to SIGTERM's handler.
_SIGTERM_AS_RUN_ASYNC_ENDS = """
import asyncio, os, signal, sys, threading, time
from stream.tools.services import run_async, sigterm_unwinds

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
ended = sent = False
real = signal.signal

def signal_then_sigterm(signum, handler):
    global sent
    previous = real(signum, handler)
    if ended and not sent and signum == signal.SIGTERM:
        sent = True
        os.kill(os.getpid(), signal.SIGTERM)
    return previous

signal.signal = signal_then_sigterm

async def main():
    global ended
    await asyncio.sleep(0)
    ended = True

with sigterm_unwinds():
    try:
        run_async(main())
        time.sleep(20)  # a SIGTERM that was taken for the command's unwinds it before this ends
    finally:
        open(sys.argv[1], "w").write("unwound")
"""


def test_a_sigterm_as_run_async_gives_the_signals_back_is_not_lost(tmp_path):
    """A SIGTERM while `run_async` hands SIGTERM back to the command: asyncio's remove_signal_handler
    set it to SIG_DFL before the command's own handler went back, and blocking it in the main thread
    did not hold it, since the kernel gives a process's signal to any thread not blocking it. It
    killed the process at once (no clean-up, no message: -15). Now the command's handler takes it."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_AS_RUN_ASYNC_ENDS, str(out)], cwd=os.getcwd())
    try:
        assert proc.wait(60) == 128 + signal.SIGTERM
        assert out.read_text() == "unwound"
    finally:
        proc.kill()


# A command whose clean-up blocks the loop for a while: `sentinel run` stopping its workers (up to
# their 30 s grace), `sentinel bench` between rounds of the classifier alone.
_CLEAN_UP_BLOCKS = """
import asyncio, sys, time
from stream.tools.services import run_async

async def main():
    try:
        print("ready", flush=True)
        await asyncio.sleep(3600)
    finally:
        print("cleaning", flush=True)
        time.sleep(3600)

try:
    run_async(main())
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_a_second_ctrl_c_ends_a_clean_up_that_blocks_the_loop(tmp_path):
    """The first Ctrl-C cancels the command; a second ends it at once, as under asyncio.run, also
    while its clean-up holds the loop (the second was handed to the loop, which ran it only once the
    clean-up was done)."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _CLEAN_UP_BLOCKS], stdout=subprocess.PIPE, text=True, cwd=os.getcwd(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "cleaning"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        proc.kill()


# `sentinel run` with a Ctrl-C that comes as the replay's producer closes its client, where aiokafka's
# AIOKafkaClient.close awaits its own cancelled sync task under suppress(CancelledError).
_CTRL_C_AS_THE_PRODUCER_CLOSES = """
import os, runpy, signal, sys
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient

real_stop, real_close = AIOKafkaProducer.stop, AIOKafkaClient.close
state = {"armed": False, "sent": False}

async def stop(self):
    state["armed"] = True
    return await real_stop(self)

async def close(self):
    if state["armed"] and not state["sent"]:
        state["sent"] = True
        print("SIGINT as the producer's client closes", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGINT)
    return await real_close(self)

AIOKafkaProducer.stop, AIOKafkaClient.close = stop, close
sys.argv = ["sentinel", *sys.argv[1:]]
runpy.run_module("sentinel.cli", run_name="__main__")
"""


def test_a_ctrl_c_aiokafka_swallows_still_stops_sentinel_run(tmp_path, cache_dir):
    """The CI failure of test_stopping_sentinel_run_mid_run...[ctrl-c], made to happen: the Ctrl-C's
    cancellation landed in the replay producer's stop and aiokafka swallowed it; the run carried on,
    wrote --alerts-out and exited 0 (as at feaa884). It stops, says so and writes nothing."""
    import json
    import signal
    import subprocess
    import sys

    posts = tmp_path / "posts.jsonl"
    posts.write_text("".join(json.dumps({"id": f"p{i}", "text": "BTC up", "created_at": 1_767_225_600 + i}) + "\n" for i in range(50)))
    alerts = tmp_path / "alerts.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BROKER", "REDIS_URL", "SENTINEL_KAFKA_BROKER", "SENTINEL_REDIS_URL")}
    env |= {"SENTINEL_BASE": "lexicon", "SENTINEL_CACHE_DIR": str(cache_dir)}
    r = subprocess.run([sys.executable, "-c", _CTRL_C_AS_THE_PRODUCER_CLOSES, "run", str(posts), "--alerts-out", str(alerts)], env=env,
                       capture_output=True, text=True, timeout=300, cwd=os.getcwd(),
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "SIGINT as the producer's client closes" in r.stderr, r.stderr[-3000:]
    assert r.returncode == 130, r.stderr[-3000:]
    assert f"interrupted: the run did not finish, so nothing was written to --alerts-out {alerts}" in r.stderr, r.stderr[-3000:]
    assert not alerts.exists()


# A command whose coroutine, once cancelled by a stop, fails with an error of its own: as a Kafka
# client whose connection the stop tore down raises a connection error from its clean-up.
_FAILS_AFTER_THE_STOP = """
import asyncio, sys
from stream.tools.services import run_async

async def main():
    try:
        print("ready", flush=True)
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        raise ConnectionResetError("the broker connection the stop closed")

try:
    run_async(main())
except KeyboardInterrupt:  # as the CLI does
    sys.exit(130)
"""


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_error_after_a_stop_ends_as_the_stop(how):
    """An error that a stop caused (a connection it tore down) was reported as that error: a
    traceback and exit 1 where the person pressed Ctrl-C or the Job sent SIGTERM. The exit is the
    stop's (130, 143); the error is logged at INFO only."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _FAILS_AFTER_THE_STOP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=os.getcwd(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == (130 if how == "ctrl-c" else 128 + signal.SIGTERM), stderr
        assert "Traceback" not in stderr and "ConnectionResetError" not in stderr, stderr
    finally:
        proc.kill()


# A Ctrl-C as `run_async` begins to take the signals (its first handler set, before the loop runs
# the command), where a library swallows the cancellation at the command's first await.
_CTRL_C_AS_RUN_ASYNC_BEGINS = """
import asyncio, os, signal
from stream.tools.services import run_async

real = signal.signal
sent = False

def signal_then_sigint(signum, handler):
    global sent
    previous = real(signum, handler)
    if not sent and signum == signal.SIGTERM and callable(handler):  # run_async's own, the first it sets
        sent = True
        os.kill(os.getpid(), signal.SIGINT)
    return previous

signal.signal = signal_then_sigint

async def main():
    try:
        await asyncio.sleep(0.5)
    except asyncio.CancelledError:  # as aiokafka's client close() does
        pass
    return "finished"

try:
    print(run_async(main()), flush=True)
except KeyboardInterrupt:  # as the CLI does
    raise SystemExit(130)
"""


def test_a_ctrl_c_as_run_async_begins_is_not_lost():
    """asyncio.run's own SIGINT handler was set before run_async's (set in the command's task): a
    Ctrl-C between the two cancelled the command at its first await, a library swallowed that, and
    the command finished and exited 0. run_async's handlers come before the loop now."""
    import signal
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _CTRL_C_AS_RUN_ASYNC_BEGINS], capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == 130, r.stdout + r.stderr
    assert r.stdout == ""  # not the coroutine's result


@pytest.fixture()
def taken_port():
    """A port another process's server holds: listening, so a connection to it succeeds."""
    import socket

    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_server_that_lost_its_port_is_not_taken_for_ready(tmp_path, taken_port):
    """Tansu exits 0 when its port is taken, and a connection to the port succeeded all the same
    (the other process answers it): start_tansu named that other process the broker, and the
    test's producers talked Kafka to whatever held the port. Ready now means our server listens."""
    from stream.tools.services import PortTaken, start_tansu

    with pytest.raises(PortTaken, match=f"port {taken_port} was taken"):
        start_tansu(tmp_path, taken_port)


def test_a_server_started_on_a_port_taken_meanwhile_starts_again_on_another(tmp_path, taken_port, monkeypatch, caplog):
    """The port free_port named was taken before the server bound it: redis-server and Tansu
    start again on another one, with a warning, instead of failing the test or the command."""
    import stream.tools.services as services

    picks = iter([taken_port])
    real = services.free_port
    monkeypatch.setattr(services, "free_port", lambda: next(picks, None) or real())
    redis_proc, url = services.start_redis(tmp_path)
    picks = iter([taken_port])  # Tansu's first pick taken too: both picks went to redis-server, Tansu's retry was never tried
    tansu_proc, broker = services.start_tansu(tmp_path)
    try:
        assert redis.Redis.from_url(url).ping() and f":{taken_port}/" not in url
        assert broker != f"127.0.0.1:{taken_port}" and services.listens(tansu_proc.proc.pid, int(broker.rsplit(":", 1)[1]))
    finally:
        tansu_proc.stop()
        redis_proc.stop()
    # Which server, in the message a CI log shows: "port taken" alone did not say whose start it was.
    assert [r.getMessage() for r in caplog.records if "taken before the server bound it" in r.getMessage()] == [
        f"{name}: port {taken_port} taken before the server bound it: trying another" for name in ("redis-server", "tansu broker")]
    assert [(r.server, r.port) for r in caplog.records if "taken before the server bound it" in r.getMessage()] == [("redis-server", taken_port), ("tansu broker", taken_port)]


def test_a_cluster_node_whose_port_was_taken_starts_on_another(tmp_path, monkeypatch, caplog):
    """A node whose port (or bus port) another process listens on (one that bound it before the
    pick, or beside the hold with SO_REUSEADDR) starts again on another pick, with a warning that
    names the cluster node and its port."""
    import socket

    import stream.tools.services as services

    real = services.free_cluster_port
    taken = real()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", taken))
        other.listen()
        picks = iter([taken])
        monkeypatch.setattr(services, "free_cluster_port", lambda: next(picks, None) or real())
        cluster = services.start_redis_cluster(tmp_path, masters=3, replicas=0)
        try:
            assert taken not in cluster.nodes and len(cluster.nodes) == 3
            assert services.cluster_healthy(list(cluster.nodes), 3)
        finally:
            cluster.stop()
    assert [r.getMessage() for r in caplog.records if "taken before the server bound it" in r.getMessage()] == [
        f"redis cluster node: port {taken} taken before the server bound it: trying another"]


def test_a_server_a_wrapper_runs_as_its_child_is_ready_when_the_child_listens(tmp_path):
    """`tansu` or `redis-server` found on PATH may be a wrapper script that runs the server as its
    child (no exec). Process starts each server as a process group of its own and stops it as one;
    ready asked the wrapper's own fds alone, and such a server, up and answering, was "not ready
    within 15 s" and stopped."""
    from stream.tools.services import _redis_ping, redis_binary, start_ready, wait_for

    port = free_port()
    # Not the last command of the script, so sh forks it rather than exec'ing it.
    script = f'"{redis_binary()}" --port {port} --bind 127.0.0.1 --save "" --dir "{tmp_path}"; exit $?'
    proc = start_ready("redis-server", ["sh", "-c", script], tmp_path / "redis.log", lambda: _redis_ping(port), 15, port=port)
    try:
        assert redis.Redis(port=port).ping()
    finally:
        proc.stop()
    wait_for(lambda: not port_open(port), 10, "the wrapped server's stop (its group's SIGTERM)")
