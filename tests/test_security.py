"""Security settings that can be checked here: Kafka SSL/SASL options reach both clients (Faust's
and aiokafka's), Redis passwords work from either the URL or `SENTINEL_REDIS_PASSWORD` against a
real redis-server with `requirepass`, `rediss://` selects TLS, and nothing on the input path can
execute code. (A TLS or SASL broker is not available on this machine; see docs/reliability.md.)"""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path

import faust
import pytest
from pydantic import SecretStr

from stream.settings import Settings
from stream.kafka import broker_credentials, kafka_client_kwargs
from sentinel.run import open_store
from stream.tools.services import start_redis

ROOT = Path(__file__).resolve().parents[1]


def settings(**values) -> Settings:
    return Settings(kafka_broker="kafka-0:9093", **values)


def test_plaintext_has_no_credentials():
    s = settings()
    assert broker_credentials(s) is None
    assert kafka_client_kwargs(s) == {"bootstrap_servers": "kafka-0:9093", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_reaches_faust_and_aiokafka_with_the_secret_unwrapped():
    s = settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                 kafka_sasl_username="sentinel", kafka_sasl_password=SecretStr("s3cr3t"))
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, str(creds.mechanism.value)) == ("sentinel", "s3cr3t", "SCRAM-SHA-512")
    assert isinstance(creds.ssl_context, ssl.SSLContext) and creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    kwargs = kafka_client_kwargs(s)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("sentinel", "s3cr3t")
    assert kwargs["ssl_context"].check_hostname
    assert "s3cr3t" not in repr(s)  # a settings dump in a log or traceback shows no secret


def test_ssl_without_sasl_uses_a_verifying_context():
    creds = broker_credentials(settings(kafka_security_protocol="SSL"))
    assert isinstance(creds, faust.SSLCredentials) and creds.context.verify_mode == ssl.CERT_REQUIRED


def test_rediss_url_selects_tls():
    from redis.asyncio.connection import SSLConnection

    store = open_store(settings(redis_url=SecretStr("rediss://:pw@redis.example:6380/0")))
    assert store.redis.connection_pool.connection_class is SSLConnection
    asyncio.run(store.close())


@pytest.mark.parametrize("where", ["url", "setting"])
def test_redis_password_from_the_url_or_the_setting(tmp_path, where):
    proc, url = start_redis(tmp_path, password="hunter2-redis")
    try:
        bare = url.replace(":hunter2-redis@", "")
        values = {"redis_url": SecretStr(url)} if where == "url" else {"redis_url": SecretStr(bare), "redis_password": SecretStr("hunter2-redis")}

        async def go():
            store = open_store(settings(**values))
            try:
                return await store.stats()
            finally:
                await store.close()

        assert asyncio.run(go())["processed"] == 0

        async def refused():
            store = open_store(settings(redis_url=SecretStr(bare)))
            try:
                await store.stats()
            finally:
                await store.close()

        with pytest.raises(Exception, match="(?i)auth"):
            asyncio.run(refused())
        if where == "url":  # the CLI says what is missing, in one line
            import os
            import subprocess
            import sys

            told = subprocess.run([sys.executable, "-m", "sentinel.cli", "silences"], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "REDIS_URL": bare, "SENTINEL_BASE": "lexicon"})
            assert told.returncode == 2 and "the server needs a password" in told.stderr and "Traceback" not in told.stderr, told.stderr
    finally:
        proc.stop()


@pytest.mark.parametrize("password, said", [
    (None, "(the server needs a password: in REDIS_URL, redis://:PASSWORD@host:port, or SENTINEL_REDIS_PASSWORD)"),
    ("wrong-hunter3", "(the server refused the password: REDIS_URL's, or SENTINEL_REDIS_PASSWORD)"),
])
def test_a_worker_that_redis_refuses_says_so_in_one_line_and_exits_2_before_the_model_loads(tmp_path, kafka_server, cache_dir,
                                                                                             password, said):
    # Before, it started, waited unready and logged "redis unavailable, retrying" every 5 s for as
    # long as it ran: a wrong Secret looked like a Redis outage (SentinelDependencyDown).
    import subprocess
    import sys

    from workers import worker_env

    proc, url = start_redis(tmp_path, password="hunter2-redis")
    try:
        env = worker_env("redis-refused", kafka_server, url.replace(":hunter2-redis@", ""), cache_dir,
                         **({"SENTINEL_REDIS_PASSWORD": password} if password else {}))
        env.pop("SENTINEL_REDIS_URL", None)
        told = subprocess.run([sys.executable, "-m", "sentinel.cli", "worker"], capture_output=True, text=True, timeout=180, env=env)
        lines = told.stderr.strip().splitlines()
        assert told.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: Redis: AuthenticationError: "), told.stderr
        assert lines[0].endswith(said) and "hunter" not in told.stdout + told.stderr, told.stderr
    finally:
        proc.stop()


def test_nothing_on_the_input_path_can_execute_code():
    """Posts are parsed with `json` only; no eval, exec, pickle, marshal or unsafe YAML anywhere
    in the code that handles them (the trainer's optimizer checkpoint uses weights_only loading)."""
    banned = re.compile(r"(?<![.\w])(eval|exec)\(|\bpickle\b|\bmarshal\b|yaml\.load\(|torch\.load\((?![^)]*weights_only=True)")
    offenders = []
    for package in ("stream", "sentinel", "model", "training"):
        for path in (ROOT / package).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if banned.search(code):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
