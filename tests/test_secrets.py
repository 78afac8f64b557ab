"""Secrets never reach logs, alert records, notification bodies, dead letters or error output (issue 6).

A real worker (`sentinel run`, the keyword scorer, DEBUG logging) runs with every secret the
settings know: a Redis password (a dedicated redis-server with `requirepass`), a Kafka SASL password
(unused: the broker here is PLAINTEXT, but a password that is set must not be printed either), and
Apprise URLs holding tokens in every place a URL can: the userinfo password, a query parameter and
a custom header (json://, against a local endpoint that answers 500), and path segments (slack://,
which cannot be reached here). A generated two-day stream with a sentiment swing fires alerts, so
the delivery path runs and fails: Apprise's warnings and our retry and give-up lines are logged.

Then every line of the worker's log, the run's stdout and stderr, the alert records (file, topic
and Redis outbox), the notification bodies the endpoint received, the dead letters and the
post-sentiment records is searched for every secret (and for the base64 of the basic-auth pair).
The endpoint checks that it did receive the secrets, so the test cannot pass by their never having
been configured. The exception paths: `sentinel windows` and `sentinel run` with a wrong Redis
password must fail without echoing it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import apprise
import pytest
import redis

from scenarios import SWING_MIX, Episode, Scenario, generate, to_posts
from workers import outward_address
from stream.logs import redact
from stream.alerts.notify import describe, servers_description

# Distinctive, URL-safe values: a hit in any output is certainly a leak, never a coincidence.
REDIS_PASSWORD = "RedisPw7q3ZkX9vB2"
WRONG_REDIS_PASSWORD = "WrongPw5hJ8kL1mN4"
SASL_PASSWORD = "SaslPw4mNb8Rt2Yu6"
HOOK_USER = "hookuser"
HOOK_PASSWORD = "HookPw6vCx1Lp5Qa3"
HOOK_TOKEN = "HookTok2wEr7Ty0Zs9"
HOOK_API_KEY = "HookKey3fGh5Jk8Lq1"
SLACK_A, SLACK_B, SLACK_C = "T0SECAAAA1", "B0SECBBBB2", "SlackTokC5dF8gH1jK4lZ7xCv"
SECRETS = {
    "redis password": REDIS_PASSWORD,
    "sasl password": SASL_PASSWORD,
    "webhook password": HOOK_PASSWORD,
    "webhook basic auth (base64)": base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode(),
    "webhook query token": HOOK_TOKEN,
    "webhook header key": HOOK_API_KEY,
    "slack token a": SLACK_A,
    "slack token b": SLACK_B,
    "slack token c": SLACK_C,
}

WORDS = {"positive": ["bullish", "moon", "pump"], "negative": ["bearish", "dump", "crash"], "neutral": ["chart", "volume", "thread"]}
SWING_AT = 36 * 3600  # day 2, 12:00: a day and a half of baseline before it


def leaks(text: str, secrets: dict[str, str] = SECRETS) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


def hook_url(port: int, host: str = "127.0.0.1") -> str:
    return f"json://{HOOK_USER}:{HOOK_PASSWORD}@{host}:{port}/hook?-token={HOOK_TOKEN}&+X-Api-Key={HOOK_API_KEY}"


SLACK_URL = f"slack://{SLACK_A}/{SLACK_B}/{SLACK_C}"


# --- the pure part: what the notifier logs about a service ---------------------------------------


def test_service_descriptions_and_redaction_hide_every_token():
    services = apprise.Apprise()
    assert services.add(hook_url(8080)) and services.add(SLACK_URL)
    described = " ".join(describe(s) for s in services) + " ".join(servers_description(list(services)))
    assert leaks(described) == [], described
    assert "127.0.0.1:8080" in described  # still says which service it is
    for line in [
        f"connect redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0 failed",
        f"url=json://u:{HOOK_PASSWORD}@h/?+Authorization=Bearer%20{HOOK_TOKEN}&-access_token={HOOK_API_KEY}",
        f"password={SASL_PASSWORD} sasl_plain_password={SASL_PASSWORD}&x-api-key={HOOK_API_KEY}",
    ]:
        assert leaks(redact(line)) == [], redact(line)
    assert redact("alert_id=a1 scope=asset:BTC retry_in=2") == "alert_id=a1 scope=asset:BTC retry_in=2"


# --- a malformed Apprise URL: refused at start-up, its secret in no log line -----------------------

# Each shape Apprise refuses, with a secret where the token goes: an unknown scheme (Apprise logs
# "Unparseable URL <the URL>"), and known schemes with too few parts (it logs "Could not load URL
# <the URL>", "Unparseable Telegram URL <the URL>").
BAD_APPRISE = {
    "slak://T0BADAAAA1/B0BADBBBB2/BadSlakTok9Qw2": "scheme slak:// is not a known service",
    "slack://BadSlackOnly7Xc4Vb": "slack:// is a known service, but Apprise cannot load",
    "pagerduty://BadPagerKey3Ty6Ui": "pagerduty:// is a known service, but Apprise cannot load",
    "critical=discord://BadDiscordHook8Op1As": "discord:// is a known service, but Apprise cannot load",
    "tgram://BadTgramBot5Df9Gh": "tgram:// is a known service, but Apprise cannot load",
}
BAD_APPRISE_SECRETS = {f"token in {url.split('://')[0]}": url.split("://")[1].split("/")[-1] for url in BAD_APPRISE}
BAD_APPRISE_SECRETS["slak team"] = "T0BADAAAA1"


@pytest.mark.parametrize("url", list(BAD_APPRISE))
def test_a_malformed_apprise_url_is_refused_by_position_and_apprise_logs_none_of_it(url, caplog):
    from stream.alerts.notify import build_apprise

    caplog.set_level(logging.DEBUG)  # every record Apprise lets through, DEBUG included
    with pytest.raises(ValueError) as info:
        build_apprise(f"{hook_url(9)}\n{url}", None)
    assert str(info.value).startswith("SENTINEL_APPRISE_URLS entry 2: ") and BAD_APPRISE[url] in str(info.value), str(info.value)
    text = str(info.value) + "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert leaks(text, {**SECRETS, **BAD_APPRISE_SECRETS}) == [], text
    # Apprise's own load errors quote the URL whole: silenced, as ours says which entry failed.
    assert [r.getMessage() for r in caplog.records if r.name == "apprise"] == [], text


def test_apprise_log_lines_after_loading_keep_no_url_secret(caplog):
    from stream.alerts.notify import build_apprise, redact_apprise

    build_apprise(hook_url(9), None)  # installs the filter on the `apprise` logger
    caplog.set_level(logging.INFO)
    apprise_log = logging.getLogger("apprise")
    apprise_log.error("Unparseable URL %s", f"slak://{SLACK_A}/{SLACK_B}/{SLACK_C}")
    apprise_log.warning("Could not load URL %s on line 1.", SLACK_URL)
    apprise_log.warning("Failed to send to https://%s:%s@hooks.example.com/services/%s/%s?token=%s.", HOOK_USER, HOOK_PASSWORD, SLACK_B,
                        SLACK_C, HOOK_TOKEN)
    messages = [r.getMessage() for r in caplog.records if r.name == "apprise"]
    assert len(messages) == 3 and leaks("\n".join(messages)) == [], messages
    assert messages[0] == "Unparseable URL slak://***" and "https://hooks.example.com/***" in messages[2], messages  # still says what
    assert redact_apprise("Sent Slack notification.") == "Sent Slack notification."


@pytest.mark.parametrize("log_json", ["false", "true"])
@pytest.mark.parametrize("command", [["worker"], ["notify-test"]])
def test_a_malformed_apprise_url_stops_the_command_in_one_line_with_no_secret(tmp_path, command, log_json):
    # Nothing listens on port 9: a check that let the URL through would reach Kafka or the URL later.
    env = {**os.environ, "SENTINEL_BASE": "lexicon", "SENTINEL_LOG_LEVEL": "DEBUG", "SENTINEL_LOG_JSON": log_json,
           "KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0", "SENTINEL_CACHE_DIR": str(tmp_path),
           "SENTINEL_APPRISE_URLS": "\n".join([hook_url(9), *BAD_APPRISE])}
    result = sentinel(command, env, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    # Every bad entry, each by its position and as when it is the only one, in one line: not one restart per entry.
    (line,) = result.stderr.strip().splitlines()
    named = line.removeprefix(f"error: {'invalid settings: ' if command == ['worker'] else ''}").split("; ")
    assert len(named) == len(BAD_APPRISE) and all(
        problem.startswith(f"SENTINEL_APPRISE_URLS entry {n}: {expected}") for n, (problem, expected) in enumerate(zip(named, BAD_APPRISE.values()), start=2)
    ), output[-3000:]
    assert leaks(output, {**SECRETS, **BAD_APPRISE_SECRETS}) == [], output[-3000:]
    for url, expected in list(BAD_APPRISE.items())[1:]:  # each shape on its own
        result = sentinel(command, {**env, "SENTINEL_APPRISE_URLS": url}, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == 2 and "entry 1: " + expected in output and "Traceback" not in output, output[-3000:]
        assert leaks(output, BAD_APPRISE_SECRETS) == [], output[-3000:]


def test_an_apprise_config_that_is_not_there_stops_the_worker_in_one_line(tmp_path):
    env = {**os.environ, "SENTINEL_BASE": "lexicon", "KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0",
           "SENTINEL_CACHE_DIR": str(tmp_path), "SENTINEL_APPRISE_CONFIG": str(tmp_path / "nonexistent" / "x.yml")}
    result = sentinel(["worker"], env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip() == "error: invalid settings: SENTINEL_APPRISE_CONFIG: not a file", result.stderr[-3000:]


# --- the real worker ----------------------------------------------------------------------------


class FailingHook:
    """A JSON webhook that keeps what it was sent and answers 500, so delivery fails and is retried."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "headers": dict(self.headers), "body": body.decode("utf-8", "replace")})
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def failing_hook() -> Iterator[FailingHook]:
    hook = FailingHook(outward_address() or "127.0.0.1")  # a host beyond loopback where there is one: its plain http is warned of
    yield hook
    hook.close()


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from stream.tools.services import start_redis

    proc, url = start_redis(tmp_path_factory.mktemp("redis-auth"), password=REDIS_PASSWORD)
    yield url
    proc.stop()


def secret_env(kafka_server: str, redis_url: str, cache_dir: Path, hook_port: int, hook_host: str = "127.0.0.1") -> dict[str, str]:
    return {
        **os.environ,
        "SENTINEL_BASE": "lexicon",
        "SENTINEL_CACHE_DIR": str(cache_dir),
        "SENTINEL_LOG_LEVEL": "DEBUG",
        "KAFKA_BROKER": kafka_server,
        "REDIS_URL": redis_url,
        "SENTINEL_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "SENTINEL_KAFKA_SASL_USERNAME": "sentinel",
        "SENTINEL_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "SENTINEL_APPRISE_URLS": f"{hook_url(hook_port, hook_host)}\n{SLACK_URL}",
        "SENTINEL_NOTIFY_ATTEMPTS": "2",
        "SENTINEL_NOTIFY_BACKOFF": "0.1",
        "SENTINEL_NOTIFY_CHART": "false",
        "SENTINEL_APP_ID": "test-secrets",
        "SENTINEL_TOPIC_POSTS": "secrets-posts",
        "SENTINEL_TOPIC_SENTIMENT": "secrets-sentiment",
        "SENTINEL_TOPIC_DLQ": "secrets-dlq",
        "SENTINEL_TOPIC_ALERTS": "secrets-alerts",
        "SENTINEL_PARTITIONS": "1",  # one partition: no post can be late behind another partition's watermark
        "SENTINEL_REBALANCE_TIMEOUT": "5",
        "SENTINEL_SESSION_TIMEOUT": "6",
        "SENTINEL_HEARTBEAT_INTERVAL": "1",
    }


def write_stream(path: Path) -> int:
    """Two days of posts with a BTC sentiment swing (fires alerts), plus a few dead letters."""
    scenario = Scenario(days=2, episodes=(Episode("BTC", SWING_AT, mix=SWING_MIX),))
    posts = to_posts(generate(scenario, seed=11), lambda asset, label, rng: f"${asset} {rng.choice(WORDS[label])} today", seed=11)
    bad = [b"not json", b'{"id": "x", "text": "", "created_at": 1790812800}', b"\xff\xfe"]
    path.write_bytes(b"".join(json.dumps(p).encode() + b"\n" for p in posts) + b"".join(line + b"\n" for line in bad))
    return len(posts)


def sentinel(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def read_topic(broker: str, topic: str) -> list[str]:
    from stream.tools.replay import consume_records

    settings = SimpleNamespace(kafka_broker=broker, kafka_security_protocol="PLAINTEXT")

    async def collect() -> list[str]:
        return [rec["value"] async for rec in consume_records(settings, topic, max_idle=2.0)]

    return asyncio.run(collect())


def test_worker_with_secrets_set_never_prints_them(tmp_path, kafka_server, secure_redis, cache_dir, failing_hook):
    assert REDIS_PASSWORD in secure_redis  # the worker gets the password inside REDIS_URL
    r0 = redis.Redis.from_url(secure_redis)
    r0.flushdb()
    env = secret_env(kafka_server, secure_redis, cache_dir, failing_hook.port, failing_hook.host)
    data = tmp_path / "stream.jsonl"
    posts = write_stream(data)

    alerts_out, summary_json, worker_log = tmp_path / "alerts.jsonl", tmp_path / "summary.json", tmp_path / "worker.log"
    run = sentinel(["run", str(data), "--alerts-out", str(alerts_out), "--summary-json", str(summary_json),
                    "--worker-log", str(worker_log), "--timeout", "400"], env)
    log_text = worker_log.read_text(errors="replace")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + redact(log_text[-3000:])
    summary = json.loads(summary_json.read_text())
    assert summary["processed"] == posts and summary["dlq"] == 3 and summary["alerts"] >= 1, summary

    # The delivery path ran and failed, with the secrets really in use.
    assert " DEBUG " in log_text  # DEBUG logging was on
    assert "notification failed after all attempts" in log_text and "slack" in log_text.lower()
    # The json:// hook is plain http: said at start, by its masked URL (the check below: no secret in
    # it); on loopback (a machine with no other address) nothing crosses a network, and nothing is said.
    clear = [line for line in log_text.splitlines() if "alert service sends in clear text" in line]
    if failing_hook.host == "127.0.0.1":
        assert clear == [], clear
    else:
        assert len(clear) == 1 and f"json://{HOOK_USER}:***@{failing_hook.host}:" in clear[0] and "use jsons://" in clear[0], clear
    assert failing_hook.received, "the json:// endpoint was never called"
    sent = failing_hook.received[0]
    assert parse_qs(urlsplit(sent["path"]).query)["token"] == [HOOK_TOKEN]
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["x-api-key"] == HOOK_API_KEY
    assert headers["authorization"] == "Basic " + SECRETS["webhook basic auth (base64)"]

    outbox = r0.xrange("sentinel:{alerts}:outbox")
    assert outbox, "no alert transitions in the outbox"
    outputs = {
        "worker log": log_text,
        "run stdout": run.stdout,
        "run stderr": run.stderr,
        "alerts file": alerts_out.read_text(),
        "alerts topic": "\n".join(read_topic(kafka_server, env["SENTINEL_TOPIC_ALERTS"])),
        "alert outbox": "\n".join(str(fields) for _, fields in outbox),
        "notification bodies": "\n".join(m["body"] for m in failing_hook.received),
        "dead letters": "\n".join(read_topic(kafka_server, env["SENTINEL_TOPIC_DLQ"])),
        "post-sentiment": "\n".join(read_topic(kafka_server, env["SENTINEL_TOPIC_SENTIMENT"])),
    }
    assert all(outputs.values()), [name for name, text in outputs.items() if not text]
    found = {name: leaks(text) for name, text in outputs.items() if leaks(text)}
    lines = [line for line in log_text.splitlines() if leaks(line)][:5]
    assert found == {}, (found, lines)


@pytest.mark.parametrize("command", [["windows"], ["run", "FILE", "--timeout", "60"]])
def test_wrong_redis_password_fails_without_echoing_it(tmp_path, kafka_server, secure_redis, cache_dir, failing_hook, command):
    wrong = secure_redis.replace(REDIS_PASSWORD, WRONG_REDIS_PASSWORD)
    env = secret_env(kafka_server, wrong, cache_dir, failing_hook.port, failing_hook.host)
    data = tmp_path / "posts.jsonl"
    data.write_text(json.dumps({"id": "p1", "text": "$BTC moon", "created_at": 1_790_812_800}) + "\n")
    result = sentinel([str(data) if arg == "FILE" else arg for arg in command], env, timeout=120)
    output = result.stdout + result.stderr
    # One redacted error line (exit 2), not a traceback through the client's frames.
    assert result.returncode == 2, output[-3000:]
    assert "Redis: AuthenticationError" in output and "Traceback" not in output, output[-3000:]
    assert leaks(output, {**SECRETS, "wrong redis password": WRONG_REDIS_PASSWORD}) == [], output[-3000:]


def test_worker_that_cannot_reach_kafka_logs_one_json_line_and_exits_nonzero(tmp_path, cache_dir):
    """An unreachable broker at start-up (a typo in KAFKA_BROKER, Kafka not up yet) is one structured
    error line and exit 1, so the pod restarts with backoff; no traceback, no secret."""
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**secret_env(f"127.0.0.1:{port}", "redis://127.0.0.1:1/0", cache_dir, 1), "SENTINEL_LOG_JSON": "true"}
    result = sentinel(["worker"], env, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"cannot reach Kafka' in line]
    assert len(errors) == 1 and errors[0]["level"] == "ERROR" and "KafkaConnectionError" in errors[0]["error"], output[-3000:]
    assert leaks(output) == [], output[-3000:]
