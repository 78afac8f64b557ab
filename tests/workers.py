"""Environments for tests that run real worker processes and `sentinel` commands."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from stream.tools.services import free_port


# The test harness's own variables (make screenshots, the console's browser, the fuzz depth): no
# settings, so a worker refuses them (stream.settings.unknown_variables).
HARNESS_VARIABLES = ("SENTINEL_SCREENSHOTS", "SENTINEL_CHROMIUM", "SENTINEL_FUZZ_SCALE")


def without_root_reads() -> list[str]:
    """A command prefix under which permissions hold: root reads and writes any file, so as root the test's
    process drops the capabilities that let it (setpriv); [] where they hold already."""
    import shutil

    import pytest

    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("root without setpriv: file permissions cannot be made to hold")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def worker_env(name: str, kafka: str, redis_url: str, cache_dir: Path, **overrides: str) -> dict[str, str]:
    """One test's own topics and consumer group on the shared broker; the lexicon scorer (no model
    load) unless `SENTINEL_BASE` is overridden; embedded-stack timeouts so a group forms in seconds."""
    return {
        **{key: value for key, value in os.environ.items() if key not in HARNESS_VARIABLES},
        "SENTINEL_BASE": "lexicon",
        "SENTINEL_CACHE_DIR": str(cache_dir),
        "KAFKA_BROKER": kafka,
        "REDIS_URL": redis_url,
        "SENTINEL_APP_ID": f"test-{name}",
        "SENTINEL_TOPIC_POSTS": f"{name}-posts",
        "SENTINEL_TOPIC_SENTIMENT": f"{name}-sentiment",
        "SENTINEL_TOPIC_DLQ": f"{name}-dlq",
        "SENTINEL_TOPIC_ALERTS": f"{name}-alerts",
        "SENTINEL_PARTITIONS": "1",
        "SENTINEL_REBALANCE_TIMEOUT": "5",
        "SENTINEL_SESSION_TIMEOUT": "6",
        "SENTINEL_HEARTBEAT_INTERVAL": "1",
        # A worker started straight from this env (not through Worker, which gives its own port)
        # checks its web port before anything else: never the default 6066, which another may hold.
        "SENTINEL_WEB_PORT": str(free_port()),
        **overrides,
    }


def sentinel(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def outward_address() -> str | None:
    """An IPv4 address of this machine other than loopback (None: it has none): a server bound there
    is reached like one on another host, which the clear-text warnings tell from a local relay."""
    import ipaddress
    import socket

    import psutil

    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not ipaddress.ip_address(address.address).is_loopback:
                return address.address
    return None


class Hook:
    """An Apprise json:// receiver that keeps every notification it accepted; answers 500 while
    `failing` is set (a notification endpoint that is down). `on_accept`, when set, runs after a
    notification is kept and before the answer goes back (a fault injected at that instant)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.failing = False
        self.on_accept: Callable[[], None] | None = None
        self.accepted: list[dict] = []
        self.headers: list[dict[str, str]] = []  # each accepted notification's request headers, in step with `accepted`
        self.arrived: list[float] = []  # wall-clock time of each accepted notification (diagnostics)
        self.hold_s = 0.0  # how long each answer is held back (a slow endpoint)
        self.answered: dict[int, float] = {}  # index in `accepted` -> wall-clock time of its answer
        self._lock = threading.Lock()  # keeps `arrived` in step with `accepted` across handler threads
        self.refused = 0
        # A request carrying this header is refused (500) whatever `failing` says: one of two
        # services configured for this endpoint, told apart by a header, is down (a proxy in front).
        self.refuse_header: str | None = None
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hook.failing or (hook.refuse_header is not None and hook.refuse_header in self.headers):
                    hook.refused += 1
                    self.send_response(500)
                else:
                    with hook._lock:
                        hook.arrived.append(time.time())
                        hook.accepted.append(json.loads(body))
                        hook.headers.append(dict(self.headers.items()))
                        index = len(hook.accepted) - 1
                    if hook.on_accept is not None:
                        hook.on_accept()
                    if hook.hold_s:
                        time.sleep(hook.hold_s)
                    hook.answered[index] = time.time()
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"json://{host}:{self.server.server_address[1]}/hook"

    def keys(self, since: int = 0) -> list[tuple[str, str, str]]:
        """(alert_id, state, window_end) of every accepted notification (from the `since`-th on),
        read from its text: what identifies one transition (an incident's repeats share its id)."""
        found = []
        for payload in list(self.accepted)[since:]:
            text = payload["message"]
            alert_id = re.search(r"^alert_id: (\S+)$", text, re.M).group(1)
            window_end = re.search(r"^window \S+: \S+ \.\. (\S+)$", text, re.M).group(1)
            state = "resolved" if " is resolved." in text.splitlines()[0] else "firing"
            found.append((alert_id, state, window_end))
        return found

    def notices(self) -> list[tuple[str, str, str]]:
        """(incident_id, state, title) of every accepted incident notification (SENTINEL_ALERT_GROUPING=incidents)."""
        return [(*_incident_of(p["message"]), p["title"]) for p in list(self.accepted)]

    def notice_keys(self) -> list[tuple[str, str, str]]:
        """(incident_id, state, as-of event time) of every accepted incident notification: what
        identifies one notice (an incident's repeats differ in their as-of time; a resolution says
        "resolved" or "declared over" that time)."""
        return [(*_incident_of(p["message"]), re.search(r"; (?:as of|resolved|declared over) (\S+) \(event time\)$", p["message"], re.M).group(1))
                for p in list(self.accepted)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _incident_of(text: str) -> tuple[str, str]:
    """(incident_id, firing | resolved) of an incident notification's text."""
    ident = re.search(r"^incident_id: (\S+)$", text, re.M).group(1)
    return ident, "resolved" if " is resolved" in text.splitlines()[0] else "firing"


class Worker:
    """`sentinel worker` in its own process group, on its own web port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel.cli", "worker"], env={**env, "SENTINEL_WEB_PORT": str(self.port)},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def readyz(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=3) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return None

    def partitions(self) -> set[int]:
        """The input partitions assigned to this worker, as its /readyz reports them."""
        body = self.readyz() or {}
        detail = body.get("checks", {}).get("partitions", {})
        match = re.search(r"\[([\d, ]*)\]", detail.get("detail", "")) if detail.get("ok") else None
        return {int(p) for p in match.group(1).split(",") if p.strip()} if match else set()

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """(sample name, labels) -> value from /metrics; empty while the worker does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
                return metric_samples(resp.read().decode())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return {}

    def kill(self) -> None:
        """SIGKILL to the whole process group: no shutdown code runs."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def close(self) -> None:
        self.kill()
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        return f"--- {self.log_path.name} ---\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a zombie still answers kill(0); it is dead for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] != "Z"


def command_line(process: Any) -> str:
    """A psutil.Process's command line, or "" once it has exited: a short-lived helper process can be
    a zombie between listing the children and reading its command line."""
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.NoSuchProcess:  # ZombieProcess included
        return ""


def metric_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus scrape, keyed by (sample name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def wait_until(condition: Callable[[], Any], timeout: float, what: str, workers: list[Worker], poll: float = 0.05) -> Any:
    """Poll `condition` until it is truthy; fail at the deadline or as soon as a worker that must stay up exits."""
    deadline = time.monotonic() + timeout
    while True:
        for w in workers:
            assert w.alive(), f"a worker exited with {w.proc.returncode} while waiting for {what}\n{w.log_tail()}"
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            tails = "\n".join(w.log_tail() for w in workers)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(poll)


def every_bucket(client) -> dict[tuple[str, int], dict[str, int | float]]:
    """(scope, bucket start) -> the bucket's counts, for every scope with an index: the hidden pair
    scopes and scopes gone from the registry too (on a cluster, a SCAN of every master). Field for
    field (a post the caps took back out leaves no field behind, as one never counted), but the
    score sum rounded: such a post leaves its score in the sum's last bits."""
    from stream.keys import bucket_key, index_pattern, scope_of_index

    out = {}
    for key in client.scan_iter(match=index_pattern("*"), count=1000):
        scope = scope_of_index(key)
        for start in client.zrange(key, 0, -1):
            counts = client.hgetall(bucket_key(scope, int(start)))
            found: dict[str, int | float] = {k: int(counts[k]) for k in ("n", "positive", "negative", "neutral") if k in counts}
            if "score_sum" in counts:
                found["score_sum"] = round(float(counts["score_sum"]), 9)
            out[(scope, int(start))] = found
    return out


def stopped_when(argv: list[str], env: dict[str, str], ready: Callable[[int], bool], stop: str, what: str, *, script: bool = False,
                 then: tuple[Callable[[int], bool], str, Callable[[], None]] | None = None) -> tuple[int, str]:
    """Run `sentinel ARGV`, wait (60 s at most) until `ready(its pid)`, then send it signal `stop` (SIGINT
    for Ctrl-C, SIGTERM): its exit status and stderr. `what` names what never became ready. SIGINT
    as a terminal leaves it: a test run a non-interactive shell put in the background (`cmd &`)
    ignores it, the command inherits that through exec and ran on past the Ctrl-C (exit 0).
    `script`: the console script a user runs (.venv/bin/sentinel, sentinel.main), not `python -m
    sentinel.cli`. `then` (ready, stop, sent): once that is ready too, send that second signal, then
    call `sent()`."""
    command = [str(Path(sys.executable).parent / "sentinel")] if script else [sys.executable, "-m", "sentinel.cli"]
    proc = subprocess.Popen([*command, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for when, signame, sent in [(ready, stop, lambda: None), *([then] if then else [])]:
            deadline = time.monotonic() + 60
            while not when(proc.pid):
                assert time.monotonic() < deadline and proc.poll() is None, what
                time.sleep(0.02)
            proc.send_signal(getattr(signal, signame))
            sent()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stderr
