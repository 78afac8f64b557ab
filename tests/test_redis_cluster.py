"""Redis Cluster on real servers: six redis-server processes (3 masters, 3 replicas) joined by
`redis-cli --cluster create`, a real broker and real worker processes (the lexicon scorer).

1. `sentinel run` on the cluster leaves the same windows and alert records as on one server, and
   the reading commands and the console show the same.
2. A master killed with -9 mid-stream: its replica is promoted, and with WAIT for one replica the
   run completes with every post counted exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from stream.batch import RawMessage
from stream.keys import SCOPES_KEY, STATS_KEY, bucket_key, index_key
from stream.settings import Settings
from stream.timefmt import parse_duration
from stream.processor import batch_token
from stream.redis_client import (
    Endpoint, ReplicasBehind, ReplicaWait, cluster_mode_problem, is_transient, open_redis, retry_transient, split_url, tag_for_slots,
)
from stream.tools.services import cluster_healthy, free_port, replication_info, start_redis_cluster
from workers import every_bucket, sentinel, wait_until, worker_env

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo-stream.jsonl"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


def test_redis_urls_list_startup_nodes():
    first, nodes = split_url("redis://:pw@10.0.0.1:7000,10.0.0.2:7001, redis://10.0.0.3")
    assert first == "redis://:pw@10.0.0.1:7000"
    assert nodes == [Endpoint("10.0.0.1", 7000), Endpoint("10.0.0.2", 7001), Endpoint("10.0.0.3", 6379)]
    # The form deploy/k8s/base/sentinel.env shows: no scheme at all means redis://.
    first, nodes = split_url("h1:7000,h2:7001")
    assert first == "redis://h1:7000" and nodes == [Endpoint("h1", 7000), Endpoint("h2", 7001)]
    # Options are read from the first entry; elsewhere they would be dropped unseen.
    with pytest.raises(ValueError, match="first entry"):
        split_url("rediss://:pw@h1:7000,h2:7001?ssl_ca_certs=/ca.pem")
    tls = open_redis("rediss://:pw@h1:7000?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none&ssl_check_hostname=false,h2:7001", cluster=True)
    options = tls.connection_kwargs
    assert options["ssl_ca_certs"] == "/ca.pem" and options["ssl_cert_reqs"] == "none" and options["ssl_check_hostname"] is False
    with pytest.raises(ValueError, match="ssl_password"):  # a single server's option the cluster client lacks
        open_redis("rediss://h1:7000?ssl_password=x", cluster=True)
    with pytest.raises(ValueError, match="SENTINEL_REDIS_CLUSTER"):
        open_redis("redis://a:1,b:2")
    with pytest.raises(ValueError, match="database 0"):
        open_redis("redis://a:1/2", cluster=True)
    with pytest.raises(ValueError, match="must be a number"):
        open_redis("redis://a:1/abc")  # redis-py would use database 0 without a word
    assert open_redis("redis://a:1/3").connection_pool.connection_kwargs["db"] == 3


def test_retry_transient_outlives_redis_away_but_not_a_bug_or_its_deadline():
    calls: list[int] = []

    async def away_twice() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return "done"

    assert asyncio.run(retry_transient(away_twice, what="test", first_delay_s=0.001)) == "done" and len(calls) == 3

    async def bug() -> None:
        calls.append(1)
        raise redis.exceptions.ResponseError("WRONGTYPE")

    calls.clear()
    with pytest.raises(redis.exceptions.ResponseError):
        asyncio.run(retry_transient(bug, what="test", first_delay_s=0.001))
    assert len(calls) == 1  # a bug is raised at once

    async def away() -> None:
        calls.append(1)
        raise redis.exceptions.ConnectionError("Connection refused")

    calls.clear()
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):  # wait_for: a retry that ignored its deadline would never end
        asyncio.run(asyncio.wait_for(retry_transient(away, what="test", first_delay_s=0.01, max_delay_s=0.05, give_up_after_s=0.2), 10))
    assert len(calls) >= 2 and time.monotonic() - started < 5  # retried, then given up near its deadline


def test_a_blocked_read_unblocked_by_a_failover_is_transient():
    """The reply a client blocked on a master gets when a planned CLUSTER FAILOVER makes it a replica
    (seen on the delivery loop's XREADGROUP BLOCK), parsed as redis-py parses every error reply
    (hiredis's reader calls the same parse_error): a plain ResponseError, which alone is a bug."""
    from redis._parsers.base import BaseParser

    unblocked = BaseParser.parse_error("UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)")
    assert type(unblocked) is redis.exceptions.ResponseError and is_transient(unblocked)
    assert not is_transient(BaseParser.parse_error("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert not is_transient(BaseParser.parse_error("ERR UNBLOCKED is not a command here"))


def test_a_wait_tag_lands_in_the_masters_slots():
    for owned in ({0}, set(range(5461, 10923)), {16383}):
        assert key_slot(tag_for_slots(owned).encode()) in owned


def test_a_batch_token_is_its_offset_range_per_partition():
    msgs = [RawMessage(b"", "posts", p, o) for p, o in ((1, 7), (0, 3), (1, 5), (0, 4))]
    assert batch_token(msgs) == "posts/0:3-4;posts/1:5-7"
    assert batch_token(list(reversed(msgs))) == batch_token(msgs)


def cluster_client(url: str) -> RedisCluster:
    """A client that starts from every node, so one dead node does not stop it."""
    nodes = [ClusterNode(*entry.split(":")) for entry in url.removeprefix("redis://").split(",")]
    return RedisCluster(startup_nodes=nodes, decode_responses=True)


def windows(client) -> dict[tuple[str, int], dict[str, str]]:
    """(scope, bucket start) -> the bucket's counts, for every scope the run registered."""
    out = {}
    for scope in client.zrange(SCOPES_KEY, 0, -1):
        for start in client.zrange(index_key(scope), 0, -1):
            counts = client.hgetall(bucket_key(scope, int(start)))
            out[(scope, int(start))] = {k: v for k, v in counts.items() if k in ("n", "positive", "negative", "neutral", "score_sum")}
    return out


def read(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def console_overview(env: dict[str, str]) -> list:
    """The console's overview scopes, from a real `sentinel console` process."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "console", "--port", str(port)],
                            env={**env, "SENTINEL_CONSOLE_HOST": "127.0.0.1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/overview"
    try:
        def fetch():
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    return json.loads(reply.read())
            except OSError:
                return None
        overview = wait_until(fetch, 60, "the console's overview", [])
    finally:
        proc.terminate()
        proc.wait(20)
    return sorted((row["scope"], row["posts"], row["spark_points"]) for row in overview["rows"])


def alert_records(path: Path) -> list[str]:
    """Records as comparable strings: everything but the wall-clock `fired_at`."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(json.dumps({k: v for k, v in row.items() if k != "fired_at"}, sort_keys=True) for row in rows)


def test_a_run_on_the_cluster_matches_one_server(tmp_path, kafka_server, redis_server, redis_cluster, cache_dir):
    redis.Redis.from_url(redis_server).flushdb()
    cluster_client(redis_cluster.url).flushall()
    results, views = {}, {}
    for name, url, extra in (("single", redis_server, {}), ("cluster", redis_cluster.url, {"SENTINEL_REDIS_CLUSTER": "1"})):
        env = worker_env(f"cluster-same-{name}", kafka_server, url, cache_dir, SENTINEL_PARTITIONS="4", **extra)
        out = tmp_path / f"{name}-alerts.jsonl"
        # The demo is the whole input of these topics and this Redis: its end is settled as `sentinel
        # run` settles it on its own stack (every partition through its newest post: judging, then the trim).
        done = sentinel(["run", str(DEMO), "--input-ended", "--alerts-out", str(out), "--summary-json", str(tmp_path / f"{name}.json")], env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        results[name] = (json.loads((tmp_path / f"{name}.json").read_text()), alert_records(out))
        # The reading commands and the console go through the same client.
        views[name] = [read(sentinel(args, env)) for args in (
            ["windows", "--json"], ["incidents", "--since", "3650d", "--json"], ["report", "--since", "3650d", "--format", "csv"])]
        views[name].append(console_overview(env))
    assert views["cluster"] == views["single"] and "asset:ETH" in views["single"][0]
    # Every bucket of every scope is equal once the input has ended. Before, only those within the
    # retention behind the newest post were: older ones go once the slowest live partition is a
    # retention past them, and whether a partition that ended first still counted as live at the
    # last write was wall-clock idleness (SENTINEL_ALERT_IDLE_PARTITION), so one run could keep
    # minutes at that edge that the other had trimmed (23 of them in CI at 0d41cec).
    single = every_bucket(redis.Redis.from_url(redis_server, decode_responses=True))
    on_cluster = every_bucket(cluster_client(redis_cluster.url))
    assert len(single) > 100 and on_cluster == single
    # Trimmed at the end: nothing older than a retention behind grouping's cursor (the newest post
    # less the grace), which still reads that far back. The runs keep the defaults.
    defaults = Settings.model_fields
    line = max(start for _, start in single) - parse_duration(defaults["retention"].default) - parse_duration(defaults["alert_grace"].default)
    assert min(start for _, start in single) >= line
    (s_summary, s_alerts), (c_summary, c_alerts) = results["single"], results["cluster"]
    assert len(s_alerts) > 0 and c_alerts == s_alerts
    same = ("consumed", "valid", "dlq", "duplicates", "processed", "labels", "alerts", "ended")
    assert {k: c_summary[k] for k in same} == {k: s_summary[k] for k in same} and s_summary["ended"] is True


def test_a_master_killed_mid_stream_loses_nothing_with_wait(tmp_path, kafka_server, redis_cluster, cache_dir):
    client = cluster_client(redis_cluster.url)
    client.flushall()
    posts = [{"id": f"k{i}", "text": f"${['BTC', 'ETH', 'SOL', 'ADA'][i % 4]} going {['up', 'down', 'sideways'][i % 3]} {i}",
              "created_at": T0 + i * 5, "channel": ["general", "trading"][i % 2], "source": "discord"} for i in range(6000)]
    data = tmp_path / "stream.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in posts))
    env = worker_env("cluster-failover", kafka_server, redis_cluster.url, cache_dir, SENTINEL_REDIS_CLUSTER="1",
                     SENTINEL_REDIS_WAIT_REPLICAS="1", SENTINEL_REDIS_WAIT_TIMEOUT="0.2", SENTINEL_MAX_BATCH="16",
                     SENTINEL_RETENTION="48h", PYTHONUNBUFFERED="1")
    # The master that holds `all` (the hottest slot): every batch writes to it.
    victim = client.get_node_from_key(STATS_KEY).port
    heir = next(port for port in redis_cluster.nodes if replication_info(port).get("master_port") == victim)
    log = tmp_path / "worker.log"
    run = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", str(data), "--summary-json", str(tmp_path / "s.json"),
                            "--worker-log", str(log)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(run.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        def processed() -> int:
            try:
                return int(client.hget(STATS_KEY, "processed") or 0)
            except redis.RedisError:
                return 0
        wait_until(lambda: processed() >= 1000 or run.poll() is not None, 300, "a thousand posts counted", [])
        assert run.poll() is None, "the run ended before the master could be killed mid-stream"
        os.killpg(redis_cluster.nodes[victim].proc.pid, signal.SIGKILL)
        wait_until(lambda: replication_info(heir).get("role") == "master", 60, "the replica to be promoted", [])
        # As Kubernetes would: the dead node comes back, and rejoins as the new master's replica.
        redis_cluster.start_node(victim)
        assert run.wait(600) == 0, "".join(output)[-3000:] + log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
    reader.join(10)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["processed"] == len(posts) and summary["consumed"] == len(posts)
    # Every post in its bucket exactly once, per scope, counted independently from the file.
    expected: Counter = Counter()
    for p in posts:
        bucket = p["created_at"] // 60 * 60
        for scope in ("all", f"asset:{p['text'][1:4]}", f"channel:{p['channel']}", "source:discord"):
            expected[(scope, bucket)] += 1
    fresh = cluster_client(redis_cluster.url)
    assert {key: int(counts["n"]) for key, counts in windows(fresh).items()} == expected
    # The replica kept the dead master's slots (redis-py's own retries may hide the failover from
    # the worker's log, so the log is not asserted on).
    assert heir in {node.port for node in fresh.get_primaries()} and victim not in {node.port for node in fresh.get_primaries()}
    wait_until(lambda: replication_info(victim).get("master_link_status") == "up", 60, "the old master to resync as a replica", [])


def test_wait_counts_the_replicas_of_every_master(redis_cluster):
    """WAIT as the worker sends it: a write and WAIT on one connection per master. One replica
    each is there; asking for two comes back short at the timeout instead of blocking; a frozen
    replica that is still connected makes the wait fail (the batch is then written again)."""
    async def acks(replicas: int) -> int:
        client = open_redis(redis_cluster.url, cluster=True)
        wait = ReplicaWait(client, replicas, 200)
        try:
            await client.set("sentinel:{probe}:x", 1, px=1000)
            return await wait()
        finally:
            await wait.close()
            await client.aclose()
    wait_until(lambda: cluster_healthy(list(redis_cluster.nodes), 3), 60, "every replica in sync", [])
    assert asyncio.run(acks(1)) == 1
    assert asyncio.run(acks(2)) == 1

    # A replica that is connected but frozen cannot have the write: the wait must say so. (A WAIT
    # on a connection that wrote nothing would answer 1 at once: this is what the own write is for.)
    master = cluster_client(redis_cluster.url).get_node_from_key("sentinel:{probe}:x").port
    replica = next(port for port in redis_cluster.nodes if replication_info(port).get("master_port") == master)
    frozen = redis_cluster.nodes[replica].proc
    frozen.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(ReplicasBehind):
            asyncio.run(acks(1))
    finally:
        frozen.send_signal(signal.SIGCONT)
    wait_until(lambda: cluster_healthy(list(redis_cluster.nodes), 3), 60, "the replica back in sync", [])


def test_operator_actions_and_their_audit_log_run_on_the_cluster(redis_cluster):
    """The acknowledgement and silence scripts touch several keys and the audit stream: all in the
    `{alerts}` slot, so each runs on one master."""
    from stream.alerts import audit
    from stream.alerts.correlator import acknowledge
    from stream.alerts.silences import add_silence, list_silences, remove_silence
    from stream.keys import AUDIT_KEY, INCIDENTS_KEY

    async def act() -> tuple[list[str], list[dict]]:
        client = open_redis(redis_cluster.url, cluster=True)
        try:
            await client.delete(AUDIT_KEY)
            await client.hset(INCIDENTS_KEY, "inc9", json.dumps({"incident_id": "inc9", "root_scope": "all", "state": "open", "acked": None}))
            made = await add_silence(client, "asset:*", 600, None, "maintenance", by="erin", via="cli")
            assert await acknowledge(client, "inc9", "on it", by="dana", via="cli")
            assert [s.by for s in await list_silences(client)] == ["erin"]
            assert await remove_silence(client, made.id, by="frank", via="cli")
            return [s.id for s in await list_silences(client)], await audit.read(client)
        finally:
            await client.aclose()

    left, logged = asyncio.run(act())
    assert left == [] and [(e["action"], e["by"]) for e in logged] == [("unsilence", "frank"), ("acknowledge", "dana"), ("silence", "erin")]



def test_a_cluster_node_opened_as_one_server_is_refused_in_one_line(tmp_path, kafka_server, redis_server, redis_cluster, cache_dir):
    """A cluster node answers PING, so without SENTINEL_REDIS_CLUSTER a worker became ready, read the
    cluster's watermarks from the node's own slots (dropping posts as late), and stopped on the first
    batch's cross-slot script with a traceback (exit 70), after every restart; the admin commands said
    `MovedError: 12886 127.0.0.1:PORT`. Now each says what to set, before anything is written."""
    node = f"redis://127.0.0.1:{next(iter(redis_cluster.nodes))}"

    async def problem(url: str, cluster: bool) -> str | None:
        client = open_redis(url, cluster=cluster)
        try:
            return await cluster_mode_problem(client)
        finally:
            await client.aclose()

    assert "set SENTINEL_REDIS_CLUSTER=true" in asyncio.run(problem(node, cluster=False))
    assert asyncio.run(problem(node, cluster=True)) is None  # the cluster client, as configured
    assert asyncio.run(problem(redis_server, cluster=False)) is None  # one server
    assert asyncio.run(problem(f"redis://127.0.0.1:{free_port()}", cluster=False)) is None  # away: the worker's retries' business
    def data_commands() -> dict[int, dict[str, int]]:
        """Each master's calls of every command but those of a connection's set-up and this check
        and of replication (keys expire on their idle TTLs meanwhile, so the key count would not say)."""
        setup = {"info", "ping", "cluster", "client", "hello", "command", "auth", "select", "readonly", "replconf", "psync"}
        counts = {}
        for port in redis_cluster.nodes:
            node = redis.Redis(port=port)
            if node.info("replication")["role"] == "master":
                stats = node.info("commandstats")
                counts[port] = {name: s["calls"] for name, s in stats.items() if name.removeprefix("cmdstat_").split("|")[0] not in setup}
        return counts

    before = data_commands()
    env = worker_env("plain-on-cluster", kafka_server, node, cache_dir, SENTINEL_WEB_PORT=str(free_port()))
    env.pop("SENTINEL_REDIS_CLUSTER", None)
    for args in (["worker"], ["windows"], ["incidents"], ["console", "--port", str(free_port())]):
        done = sentinel(args, env, timeout=180)  # the console refused, not serving an empty overview
        assert done.returncode == 2, (args, done.stdout[-2000:], done.stderr[-2000:])
        assert "REDIS_URL names a Redis Cluster node but SENTINEL_REDIS_CLUSTER is not set" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert data_commands() == before  # nothing read or written


def test_a_moved_answer_says_to_set_the_cluster_flag(capsys):
    """Where the start-up check cannot ask (INFO renamed on a managed Redis), a command that meets
    a MOVED answer still says what to set, not `MovedError: 12886 host:port`."""
    from redis.exceptions import MovedError

    from sentinel.cli import redis_failure

    assert redis_failure(MovedError("12886 127.0.0.1:7001")).exit_code == 2
    said = capsys.readouterr().err
    assert "names a Redis Cluster node but SENTINEL_REDIS_CLUSTER is not set" in said and "12886" not in said


def test_a_moved_answer_to_the_cluster_client_is_not_called_a_missing_flag(capsys, monkeypatch):
    """Review 45: with SENTINEL_REDIS_CLUSTER set, a MOVED that gets through the cluster client
    (slots moving faster than its retries) is not 'SENTINEL_REDIS_CLUSTER is not set': the flag is
    set, and saying otherwise sends the operator after the wrong setting."""
    from redis.exceptions import MovedError

    from sentinel.cli import redis_failure
    from stream.settings import get_settings

    monkeypatch.setenv("SENTINEL_REDIS_CLUSTER", "true")
    monkeypatch.setenv("SENTINEL_REDIS_URL", "redis://127.0.0.1:7001,127.0.0.1:7002")
    get_settings.cache_clear()
    try:
        assert redis_failure(MovedError("12886 127.0.0.1:7001")).exit_code == 2
    finally:
        get_settings.cache_clear()
    said = capsys.readouterr().err
    assert "SENTINEL_REDIS_CLUSTER is not set" not in said and "MovedError" in said, said


def test_a_flood_of_new_channel_names_folds_on_the_cluster(redis_cluster):
    """SENTINEL_NEW_SCOPES_PER_HOUR on Redis Cluster: the registry read (one key, the `{all}` slot)
    answers from its master, and the overflow scope's keys carry its own hash tag, leading space and
    all, so its window script runs on one master like any scope's."""
    from model.scorer import judgement_from_probs
    from stream.processor import BatchProcessor
    from stream.store import WindowStore
    from stream.windows import OVERFLOW_NAME

    async def discard(topic, records):
        pass

    def post(i: int, channel: str) -> RawMessage:
        return RawMessage(json.dumps({"id": f"p{i}", "text": "gm", "created_at": T0 + i, "channel": channel}).encode(), "forum-posts", 0, i)

    async def go():
        client = open_redis(redis_cluster.url, cluster=True)
        await client.flushall()
        store = WindowStore(client)
        proc = BatchProcessor(lambda texts: [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts], store, discard, sentiment_topic="out",
                              dlq_topic="dlq", model_base="m", model_adapter=None, new_scopes_per_hour=2, clock_jump_posts=1)
        await proc.start()
        await proc.handle([post(i, f"flood-{i}") for i in range(10)])
        await proc.handle([post(10, "flood-0"), post(11, "flood-11")])
        scopes = await store.scopes()
        counts = {scope: (await store.window(scope, 3600, T0 + 60)).posts for scope in scopes}
        known = await store.known_scopes(["channel:flood-0", "channel:flood-5", f"channel:{OVERFLOW_NAME}"])
        await client.aclose()
        return scopes, counts, known

    other = f"channel:{OVERFLOW_NAME}"
    scopes, counts, known = asyncio.run(go())
    assert sorted(scopes) == sorted(["all", "channel:flood-0", "channel:flood-1", other]), scopes
    assert counts == {"all": 12, "channel:flood-0": 2, "channel:flood-1": 1, other: 9}
    assert known == {"channel:flood-0", other}
    assert key_slot(index_key(other).encode()) == key_slot(bucket_key(other, T0).encode()) != key_slot(index_key("all").encode())


def test_model_epochs_are_appended_once_and_read_by_judging_on_the_cluster(redis_cluster):
    """The model epochs (stream/alerts/epochs.py) are one key, appended by a compare-and-set script
    and read by the engine's round pipeline beside keys of other slots: both run on a cluster, and
    of two workers starting with the same new classifier only one appends."""
    from stream.alerts.engine import AlertEngine
    from stream.alerts.epochs import Epoch, label_since, parse
    from stream.alerts.judging import AlertConfig
    from stream.keys import MODEL_EPOCHS_KEY
    from stream.store import WindowStore

    async def go() -> tuple[list[bool], list[Epoch]]:
        client = open_redis(redis_cluster.url, cluster=True)
        store = WindowStore(client)
        try:
            await client.delete(MODEL_EPOCHS_KEY)
            first = Epoch("lexicon", float("-inf"), 1.0).to_json()
            assert await store.append_epoch(first, None)
            new = Epoch("smollm2+default+ngram", float(T0), 2.0).to_json()
            raced = [await store.append_epoch(new, first), await store.append_epoch(new, first)]
            engine = AlertEngine(store, AlertConfig(), partitions=1, samples=0)
            await engine.judge({})  # the round's pipeline reads the newest epoch on the cluster
            return raced, parse(await store.epochs())
        finally:
            await client.aclose()

    raced, epochs = asyncio.run(go())
    assert raced == [True, False]
    assert [e.identity for e in epochs] == ["lexicon", "smollm2+default+ngram"] and label_since(epochs) == T0
