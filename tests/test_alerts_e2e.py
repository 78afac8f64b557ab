"""Early warning end to end: `sentinel run` on generated streams, a real broker, a real
redis-server, real worker processes, and a real HTTP webhook receiving the Apprise notifications.

The classifier is the keyword scorer (`SENTINEL_BASE=lexicon`): the generated posts say plainly
which way they lean, so the label mix of the stream is the one the scenario asks for and a week of
posts runs in seconds. The statistics of the detector are covered without servers in
tests/test_detector.py; this file checks the wiring and the guarantees: event-time judging, one
record and one notification per transition, the same records from one worker or two.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis
from aiokafka.partitioner import murmur2

from scenarios import SWING_MIX, T0, Episode, Scenario, generate, to_posts
from stream.keys import MODEL_EPOCHS_KEY
from stream.settings import Settings
from stream.store import MAX_EPOCHS
from stream.timefmt import iso
from stream.windows import CLOCK_JUMP_POSTS
from workers import Hook, worker_env

WORDS = {
    "positive": ["bullish", "moon", "pump", "rally", "breakout"],
    "negative": ["bearish", "dump", "crash", "rekt", "fud"],
    "neutral": ["chart", "volume", "update", "thread", "question"],
}
FILLER = ["today", "again", "on the daily", "this week", "for real", "imo"]

SWING_AT = 36 * 3600  # day 2, 12:00
BURST_AT = 42 * 3600  # day 2, 18:00
SCENARIO = Scenario(
    days=2,
    episodes=(Episode("BTC", SWING_AT, mix=SWING_MIX), Episode("ETH", BURST_AT, volume=5.0)),
)


def text_for(asset: str, label: str, rng) -> str:
    return f"${asset} {rng.choice(WORDS[label])} {rng.choice(FILLER)}"


@pytest.fixture()
def webhook():
    hook = Hook()
    yield hook
    hook.close()


def run_env(kafka_server: str, redis_server: str, cache_dir: Path, name: str, webhook_url: str) -> dict[str, str]:
    redis.Redis.from_url(redis_server).flushdb()
    return worker_env(
        name, kafka_server, redis_server, cache_dir,
        SENTINEL_PARTITIONS="4", SENTINEL_APPRISE_URLS=webhook_url, SENTINEL_NOTIFY_CHART="false",
        SENTINEL_ALERT_GROUPING="none",  # one notification per transition; the grouped test sets incidents
    )


# When this test must be done by: pytest-timeout's limit (600 s, pyproject.toml) less a margin.
_DEADLINE = [math.inf]


def pytest_timeout_limit(marker: pytest.Mark | None, option: float | None, env: str | None, ini: str | None) -> float:
    """The seconds pytest-timeout gives a test, resolved as it resolves them: a `timeout` marker's
    (its first argument or `timeout=`), else --timeout's, else PYTEST_TIMEOUT's, else the ini's.
    0: none. `--timeout=0` (pytest-timeout off, to debug a slow machine) fell through to the ini's
    600, and PYTEST_TIMEOUT=1200 was never read: runs pytest-timeout let go on were killed at 555 s."""
    if marker is not None and (marker.args or marker.kwargs.get("timeout") is not None):
        value: float | str | None = marker.args[0] if marker.args else marker.kwargs["timeout"]
    elif option is not None:
        value = option
    elif env:
        value = env
    else:
        value = ini
    return max(float(value), 0.0) if value is not None and value != "" else 0.0


@pytest.fixture(autouse=True)
def runs_end_before_pytest_timeout(request: pytest.FixtureRequest) -> None:
    """Each `sentinel run` here waited up to 900 s, past pytest-timeout's 600 s for the whole test
    (which runs up to five of them): a run that hung was ended by pytest-timeout, which kills it
    and reports the test's stack alone, never the run's output or its workers' log. The runs now
    share the test's own limit, so a hung one fails here with both."""
    limit = pytest_timeout_limit(request.node.get_closest_marker("timeout"), request.config.getoption("timeout", None),
                                 os.environ.get("PYTEST_TIMEOUT"), request.config.getini("timeout"))
    _DEADLINE[0] = time.monotonic() + limit - 45 if limit > 0 else math.inf


def test_the_runs_deadline_is_pytest_timeouts_limit_as_it_resolves_it():
    """--timeout=0 turns pytest-timeout off: the runs here have no deadline either (the ini's 600
    was taken instead), and PYTEST_TIMEOUT comes before the ini, as pytest-timeout reads them."""
    assert pytest_timeout_limit(None, 0.0, None, "600") == 0
    assert pytest_timeout_limit(None, 0.0, "1200", "600") == 0
    assert pytest_timeout_limit(None, None, "1200", "600") == 1200
    assert pytest_timeout_limit(None, None, "", "600") == 600
    assert pytest_timeout_limit(None, 300.0, "1200", "600") == 300
    assert pytest_timeout_limit(pytest.mark.timeout(900).mark, 300.0, None, "600") == 900
    assert pytest_timeout_limit(pytest.mark.timeout(timeout=0).mark, 300.0, None, "600") == 0
    assert pytest_timeout_limit(pytest.mark.timeout(method="thread").mark, None, None, "600") == 600
    assert pytest_timeout_limit(None, None, None, "") == 0


def sentinel_run(path: Path, env: dict[str, str], out: Path, *extra: str) -> tuple[dict, list[dict]]:
    alerts, summary = out / "alerts.jsonl", out / "summary.json"
    out.mkdir(parents=True, exist_ok=True)
    left = min(900.0, _DEADLINE[0] - time.monotonic())
    try:
        r = subprocess.run(
            [sys.executable, "-m", "sentinel.cli", "run", str(path), "--alerts-out", str(alerts), "--summary-json", str(summary),
             "--worker-log", str(out / "worker.log"), *extra],
            env=env, capture_output=True, text=True, timeout=max(left, 1.0),
        )
    except subprocess.TimeoutExpired as hung:
        said = hung.stderr.decode(errors="replace") if isinstance(hung.stderr, bytes) else hung.stderr or ""
        log = (out / "worker.log").read_text(errors="replace") if (out / "worker.log").exists() else "(none)"
        pytest.fail(f"sentinel run {' '.join([path.name, *extra])} still running after {max(left, 1.0):.0f} s (killed)\n"
                    f"stderr:\n{said[-3000:]}\nworker log:\n{log[-5000:]}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(summary.read_text()), [json.loads(line) for line in alerts.read_text().splitlines()]


ASSIGNED = re.compile(r'partitions assigned worker=(\S+) topic=\S+ partitions="\[([0-9, ]*)\]"')


def shared_by_two_workers(log: Path) -> None:
    """Two workers held partitions while posts were processed: each one's first assignment comes
    before the last batch in their common log, and their last ones before it split the 4 partitions
    (after it the run stops them; one that leaves before the other may hand it its partitions)."""
    lines = log.read_text(errors="replace").splitlines()
    last_batch = max(i for i, line in enumerate(lines) if "batch done" in line)
    held: dict[str, list[tuple[int, set[int]]]] = {}
    for i, line in enumerate(lines):
        if m := ASSIGNED.search(line):
            held.setdefault(m[1], []).append((i, {int(p) for p in m[2].split(",") if p.strip()}))
    assert len(held) == 2, held
    assert all(any(i < last_batch and parts for i, parts in seen) for seen in held.values()), held
    a, b = ([parts for i, parts in seen if i < last_batch][-1] for seen in held.values())
    assert a and b and not a & b and a | b == {0, 1, 2, 3}, held


def minutes_after(iso: str, offset_s: int) -> float:
    return (datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - (T0 + offset_s)) / 60


def test_swing_and_burst_alert_once_each_with_one_worker_or_two(tmp_path, kafka_server, redis_server, cache_dir, webhook):
    posts = to_posts(generate(SCENARIO, seed=7), text_for, seed=7)
    data = tmp_path / "stream.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in posts))

    env = run_env(kafka_server, redis_server, cache_dir, "alerts-one", webhook.url)
    summary, records = sentinel_run(data, env, tmp_path / "one")
    assert summary["processed"] == len(posts) and summary["alerts"] == len(records)

    by_scope = {}
    for r in records:
        by_scope.setdefault((r["scope"], r["kind"]), []).append(r)
    drop = by_scope[("asset:BTC", "sentiment_drop")]
    # Seen while the swing lasts. The 30-minute acceptance is asserted on the week-long stream in
    # tests/test_detector.py, and the delay's distribution is measured in docs/alerts.md; this
    # two-day stream has a shorter baseline and one seed.
    assert drop[0]["state"] == "firing" and 0 < minutes_after(drop[0]["window_end"], SWING_AT) <= 60, drop
    assert drop[-1]["state"] == "resolved" and minutes_after(drop[-1]["window_end"], SWING_AT) >= 60, drop
    assert {r["alert_id"] for r in drop} == {drop[0]["alert_id"]}  # one incident, repeats included
    assert drop[0]["severity"] in ("warning", "critical") and drop[0]["value"] > 0.4 and abs(drop[0]["baseline"] - 0.2) < 0.08
    assert len(drop[0]["sample_post_ids"]) == 3 and drop[0]["posts"] >= 20
    spike = by_scope[("asset:ETH", "volume_spike")]
    assert spike[0]["state"] == "firing" and 0 < minutes_after(spike[0]["window_end"], BURST_AT) <= 60, spike
    assert spike[-1]["state"] == "resolved"
    # Nothing else about the other assets: ETH only spikes during its burst, SOL never alerts.
    others = [r for r in records if r["scope"] in ("asset:ETH", "asset:SOL") and (r["scope"], r["kind"]) != ("asset:ETH", "volume_spike")]
    assert others == []
    assert all(set(r) == {"alert_id", "scope", "kind", "state", "severity", "window_start", "window_end", "value", "baseline",
                          "zscore", "posts", "sample_post_ids", "notified", "fired_at", "onset", "incident_id", "root_scope",
                          "acknowledged"} for r in records)
    # Ungrouped: each its own incident, never acknowledged.
    assert all(r["incident_id"] == r["alert_id"] and r["root_scope"] == r["scope"] and r["acknowledged"] == "" for r in records)

    # Exactly one notification per transition, keyed as a transition is: (incident, state, window).
    assert all(r["notified"] for r in records)
    transitions = sorted((r["alert_id"], r["state"], r["window_end"]) for r in records)
    assert sorted(webhook.keys()) == transitions

    # The same file through two workers in one consumer group: the same records (but fired_at),
    # and still one notification per transition.
    webhook.accepted.clear()
    env = run_env(kafka_server, redis_server, cache_dir, "alerts-two", webhook.url)
    summary2, records2 = sentinel_run(data, env, tmp_path / "two", "--workers", "2")
    assert summary2["processed"] == len(posts)
    shared_by_two_workers(tmp_path / "two" / "worker.log")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "fired_at"} for r in rs]  # noqa: E731
    assert strip(records2) == strip(records)
    assert sorted(webhook.keys()) == transitions


def with_a_fast_source(posts: list[dict], skew_s: float, seed: int, first: bool = False) -> tuple[list[dict], int]:
    """`posts` and a second source's, in the order they are written: a Telegram scraper writing
    local time with a Z, so its posts are stamped `skew_s` ahead. They are about DOGE, in a channel
    of their own (a third of all posts), so the forum's asset scopes hold only the forum's posts.
    The scraper starts 10 minutes in, or (`first`) at the start, its first 10 minutes written
    before the forum's first post, so that the first post each partition reads is the fast
    source's (docs/reliability.md, "Event time when clocks disagree")."""
    rng = random.Random(seed)
    written = [(p["created_at"], p) for p in posts]
    for g in generate(Scenario(days=2, per_minute={"DOGE": 2.0}, channels=("tg-main",)), seed=seed):
        if first or g.created_at >= T0 + 600:
            at = T0 - 1 if g.created_at < T0 + 600 else g.created_at  # the first 10 minutes before the forum's first post
            written.append((at, {"id": f"tg-{g.id}", "text": text_for("DOGE", g.label, rng), "created_at": g.created_at + skew_s,
                                           "source": "telegram", "channel": "tg-main"}))
    fast = len(written) - len(posts)
    return [p for _, p in sorted(written, key=lambda w: w[0])], fast


def test_a_source_stamping_hours_ahead_blinds_no_other_scope_with_one_worker_or_two(tmp_path, kafka_server, redis_server, cache_dir, webhook):
    """tz_skew8 end to end: beside the forum, a source whose posts are stamped 8 hours ahead.
    Before, each partition's watermark was its newest post, so the forum's posts were all 8 hours
    behind it, judged late, and the BTC swing and the ETH burst fired nothing. Now each partition's
    watermark leaves out a source running ahead of what most of its posts' sources agree on, and
    its first watermark waits for two thirds of 16 posts: the forum's scopes give exactly
    the records they give without the fast source, the fast source's posts are counted where they
    say and in `ahead`, nothing is late, and two workers give the same records."""
    forum = to_posts(generate(SCENARIO, seed=7), text_for, seed=7)
    plain, skewed = tmp_path / "forum.jsonl", tmp_path / "skewed.jsonl"
    plain.write_text("".join(json.dumps(p) + "\n" for p in forum))
    posts, fast = with_a_fast_source(forum, 8 * 3600, seed=8)
    skewed.write_text("".join(json.dumps(p) + "\n" for p in posts))

    _, alone = sentinel_run(plain, run_env(kafka_server, redis_server, cache_dir, "skew-alone", webhook.url), tmp_path / "alone")
    summary, records = sentinel_run(skewed, run_env(kafka_server, redis_server, cache_dir, "skew-one", webhook.url), tmp_path / "one")
    assert summary["processed"] == len(posts) and summary["late_dropped"] == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k != "fired_at"} for r in rs]  # noqa: E731
    forum_scopes = {"asset:BTC", "asset:ETH", "asset:SOL", "channel:general", "channel:trading", "source:forum"}
    swing = [r for r in records if (r["scope"], r["kind"]) == ("asset:BTC", "sentiment_drop")]
    assert swing and 0 < minutes_after(swing[0]["window_end"], SWING_AT) <= 60, records
    assert strip(r for r in records if r["scope"] in forum_scopes) == strip(r for r in alone if r["scope"] in forum_scopes)
    # Before each partition's first watermark (CLOCK_JUMP_POSTS posts) there is nothing to be ahead of.
    assert fast - 4 * CLOCK_JUMP_POSTS <= summary["ahead"] <= fast

    env = run_env(kafka_server, redis_server, cache_dir, "skew-two", webhook.url)
    summary2, records2 = sentinel_run(skewed, env, tmp_path / "two", "--workers", "2")
    shared_by_two_workers(tmp_path / "two" / "worker.log")
    assert (summary2["ahead"], summary2["late_dropped"]) == (summary["ahead"], 0)
    assert strip(records2) == strip(records)

    # The scraper's first 10 minutes come before the forum's first post, so each partition's first
    # post is the fast source's. It used to set the partition's clock 8 hours ahead, and the forum's
    # scopes fired nothing; a partition's first watermark now needs two thirds of its first
    # CLOCK_JUMP_POSTS posts, so the forum's records are the same as alone.
    first, _ = with_a_fast_source(forum, 8 * 3600, seed=8, first=True)
    starts: dict[int, str] = {}
    for p in first:
        starts.setdefault((murmur2(p["id"].encode()) & 0x7FFFFFFF) % 4, p.get("source", ""))
    assert starts == {p: "telegram" for p in range(4)}  # what `sentinel run` sends where: the id is the key
    skewed.write_text("".join(json.dumps(p) + "\n" for p in first))
    summary3, records3 = sentinel_run(skewed, run_env(kafka_server, redis_server, cache_dir, "skew-first", webhook.url), tmp_path / "first")
    assert summary3["processed"] == len(first) and summary3["late_dropped"] == 0
    assert strip(r for r in records3 if r["scope"] in forum_scopes) == strip(r for r in alone if r["scope"] in forum_scopes)


CASCADE = Scenario(days=2, episodes=(Episode("ETH", SWING_AT, mix=SWING_MIX, volume=3.0),))
MARKET = Scenario(days=2, episodes=tuple(Episode(a, SWING_AT, mix=SWING_MIX, volume=2.0) for a in ("BTC", "ETH", "SOL")))


def test_one_incident_per_event_with_one_worker_or_two(tmp_path, kafka_server, redis_server, cache_dir, webhook):
    """SENTINEL_ALERT_GROUPING=incidents with the sequential detector: an ETH sell-off that also moves
    its channels, its source and `all` is one incident rooted at asset:ETH, told to the webhook once
    (and updated at most once) and resolved once; two workers give the same records, incident ids
    included, and the same notifications. A sell-off of every asset at once is one market-wide
    incident rooted at `all`."""
    posts = to_posts(generate(CASCADE, seed=5), text_for, seed=5)
    data = tmp_path / "cascade.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in posts))
    grouped = {"SENTINEL_ALERT_GROUPING": "incidents", "SENTINEL_ALERT_DETECTOR": "sequential"}

    env = {**run_env(kafka_server, redis_server, cache_dir, "incidents-one", webhook.url), **grouped}
    summary, records = sentinel_run(data, env, tmp_path / "one")
    assert summary["processed"] == len(posts)
    during = [r for r in records if r["window_end"] < iso(T0 + SWING_AT + 90 * 60)]
    scopes = {r["scope"] for r in during}
    assert {"asset:ETH", "all", "source:forum"} <= scopes and scopes & {"channel:general", "channel:trading"}, during
    event = {r["incident_id"] for r in during}
    assert len(event) == 1 and {r["root_scope"] for r in during} == {"asset:ETH"}
    (incident,) = event
    of_event = [r for r in records if r["incident_id"] == incident]
    assert not any(r["notified"] for r in of_event if r["scope"] != "asset:ETH")  # members are never notified themselves
    assert any(r["notified"] for r in of_event if r["scope"] == "asset:ETH" and r["state"] == "firing")
    told = [n for n in webhook.notices() if n[0] == incident]
    firing = [n for n in told if n[1] == "firing" and "(still firing)" not in n[2]]
    assert of_event[-1]["state"] == "resolved" and [n[1] for n in told].count("resolved") == 1, told  # the two-day stream outlives the swing
    # One first notice; every update brings news (another kind on the root, or a higher severity),
    # never only a parent scope joining: here at most one of each.
    news = [re.sub(r" \(\+\d+ related scopes?\)| \(update\)", "", n[2]) for n in firing]
    assert firing[0][2].startswith("[WARNING]") and "on asset:ETH" in firing[0][2] and 1 <= len(firing) <= 3, told
    assert len(set(news)) == len(news), told
    # Each update says on its second line what is new since the notice before it (grouping.since_last).
    updates = [p["message"].splitlines() for p in list(webhook.accepted) if "(update)" in p["title"] and incident in p["message"]]
    assert len(updates) == len(firing) - 1 and all(u[1].startswith("New since the last notice (") for u in updates), updates
    listed = subprocess.run([sys.executable, "-m", "sentinel.cli", "incidents", "--json", "--since", "3d"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    summaries = {i["incident_id"]: i for i in map(json.loads, listed.stdout.splitlines())}
    assert summaries[incident]["root_scope"] == "asset:ETH" and {m["scope"] for m in summaries[incident]["members"]} >= scopes
    refused = subprocess.run([sys.executable, "-m", "sentinel.cli", "ack", "no-such-incident"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "no open incident" in refused.stdout + refused.stderr
    # Every key the run left expires (docs/contracts.md): windows by retention, everything else when
    # nothing has written it for twice the retention, so no key accumulates for good. But the model
    # epochs (session 57), kept without a TTL on purpose (they must outlive an idle spell) and
    # bounded instead: the last MAX_EPOCHS entries.
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    keys = list(r.scan_iter(count=1000))
    assert len(keys) > 100 and [k for k in keys if r.ttl(k) == -1] == [MODEL_EPOCHS_KEY]
    assert 1 <= r.llen(MODEL_EPOCHS_KEY) <= MAX_EPOCHS

    notices = sorted(webhook.notices())
    webhook.accepted.clear()
    env = {**run_env(kafka_server, redis_server, cache_dir, "incidents-two", webhook.url), **grouped}
    _, records2 = sentinel_run(data, env, tmp_path / "two", "--workers", "2")
    shared_by_two_workers(tmp_path / "two" / "worker.log")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "fired_at"} for r in rs]  # noqa: E731
    assert strip(records2) == strip(records)
    assert sorted(webhook.notices()) == notices

    market = tmp_path / "market.jsonl"
    market.write_text("".join(json.dumps(p) + "\n" for p in to_posts(generate(MARKET, seed=5), text_for, seed=5)))
    webhook.accepted.clear()
    env = {**run_env(kafka_server, redis_server, cache_dir, "incidents-market", webhook.url), **grouped}
    _, records3 = sentinel_run(market, env, tmp_path / "market")
    drops = [r for r in records3 if r["kind"] == "sentiment_drop" and r["window_end"] < iso(T0 + SWING_AT + 90 * 60)]
    assert {r["scope"] for r in drops} >= {"all", "asset:BTC", "asset:ETH"}
    assert {r["root_scope"] for r in drops} == {"all"} and len({r["incident_id"] for r in drops}) == 1, drops


# Chatter that names no asset and says nothing of the price (as most of the export's), then five
# times the posts for an hour: a volume spike, and no label share to flap beside it.
ONE_CHANNEL = Scenario(days=2, per_minute={"MC": 2.0}, channels=("meritcircle",), mix={"neutral": 1.0},
                       episodes=(Episode("MC", SWING_AT, volume=5.0),))


def test_one_channel_of_one_source_moving_is_one_incident_with_one_worker_or_two(tmp_path, kafka_server, redis_server, cache_dir, webhook):
    """The research's data shape: one source, one channel, posts that name no asset, so `all`,
    the source and the channel hold the same posts and fire together. Grouped, that is one
    incident rooted at the channel (it explains its source and `all`: grouping.nests), told once
    and resolved once, where it was three incidents and three pages; two workers give the same
    records and notices."""
    no_asset = lambda asset, label, rng: f"{rng.choice(WORDS[label])} {rng.choice(FILLER)}"  # noqa: E731
    posts = to_posts(generate(ONE_CHANNEL, seed=5), no_asset, seed=5)
    data = tmp_path / "one-channel.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in posts))
    grouped = {"SENTINEL_ALERT_GROUPING": "incidents", "SENTINEL_ALERT_DETECTOR": "sequential"}

    env = {**run_env(kafka_server, redis_server, cache_dir, "one-channel-one", webhook.url), **grouped}
    summary, records = sentinel_run(data, env, tmp_path / "one")
    assert summary["processed"] == len(posts)
    assert {r["scope"] for r in records} == {"all", "source:forum", "channel:meritcircle"}, records
    assert {r["kind"] for r in records} == {"volume_spike"} and records[-1]["state"] == "resolved", records
    assert len({r["incident_id"] for r in records}) == 1 and {r["root_scope"] for r in records} == {"channel:meritcircle"}, records
    assert 0 < minutes_after(records[0]["window_end"], SWING_AT) <= 60, records
    # Told once (an update at most when it turns critical) and resolved once, on the channel.
    told = webhook.notices()
    assert [n[1] for n in told].count("resolved") == 1 and told[0][1] == "firing" and "on channel:meritcircle" in told[0][2], told
    assert len(told) <= 3 and {n[0] for n in told} == {records[0]["incident_id"]}, told

    notices = sorted(webhook.notices())
    webhook.accepted.clear()
    env = {**run_env(kafka_server, redis_server, cache_dir, "one-channel-two", webhook.url), **grouped}
    _, records2 = sentinel_run(data, env, tmp_path / "two", "--workers", "2")
    shared_by_two_workers(tmp_path / "two" / "worker.log")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "fired_at"} for r in rs]  # noqa: E731
    assert strip(records2) == strip(records)
    assert sorted(webhook.notices()) == notices


TROLL_AT = 36 * 3600  # day 2, 12:00


def with_authors(posts: list[dict], seed: int) -> list[dict]:
    """Posts by a crowd of 400, and one account posting 60 sell-off messages about SOL in half an hour."""
    rng = random.Random(seed)
    crowd = [{**p, "author": f"user{rng.randrange(400)}"} for p in posts]
    troll = [{"id": f"troll-{n:02d}", "text": f"$SOL {WORDS['negative'][n % 5]} dump it now", "created_at": T0 + TROLL_AT + 30 * n,
              "source": "forum", "channel": "general", "author": "troll"} for n in range(60)]
    return sorted(crowd + troll, key=lambda p: p["created_at"])


def hour_rollups(url: str) -> dict[str, dict[str, float]]:
    """Every scope's hourly roll-ups (counts, and score sums rounded: they add in arrival order)."""
    r = redis.Redis.from_url(url, decode_responses=True)
    rounded = {key: {k: round(float(v), 6) for k, v in r.hgetall(key).items()} for key in r.scan_iter("sentinel:{*}:h:*")}
    return {key: {k: v for k, v in fields.items() if v} for key, fields in rounded.items()}  # 0 and never written read alike


def test_one_loud_author_alone_raises_no_alert_and_counts_alike_in_any_order(tmp_path, kafka_server, redis_server, cache_dir, webhook):
    """SENTINEL_AUTHOR_CAP (3 posts an author counts per scope and hour): one account posting 60
    sell-off messages about SOL in half an hour fires a drop without the cap, and nothing with it.
    Two workers read the troll's posts from four partitions in another order (the cap keeps each
    hour's first posts by event time, taking a later one back out when an earlier one arrives) and
    leave the same hourly counts in every scope."""
    posts = with_authors(to_posts(generate(Scenario(days=2), seed=3), text_for, seed=3), seed=3)
    data = tmp_path / "troll.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in posts))
    troll_hour = (iso(T0 + TROLL_AT), iso(T0 + TROLL_AT + 3 * 3600))

    env = {**run_env(kafka_server, redis_server, cache_dir, "troll-uncapped", webhook.url), "SENTINEL_AUTHOR_CAP": "0"}
    summary, records = sentinel_run(data, env, tmp_path / "uncapped")
    assert summary["capped"] == 0
    fired = {r["scope"] for r in records if r["kind"] == "sentiment_drop" and r["state"] == "firing" and troll_hour[0] <= r["window_end"] < troll_hour[1]}
    assert {"asset:SOL", "channel:general"} & fired, records

    env = run_env(kafka_server, redis_server, cache_dir, "troll-one", webhook.url)
    summary, records = sentinel_run(data, env, tmp_path / "one")
    assert summary["processed"] == len(posts) and summary["capped"] >= 57, summary  # the troll's 57 past its 3, in `all`
    assert [r for r in records if troll_hour[0] <= r["window_end"] < troll_hour[1]] == []
    counts = hour_rollups(redis_server)
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    cells = list(r.scan_iter("sentinel:{*}:cc*"))
    assert cells and [k for k in cells if r.ttl(k) == -1] == []  # the cap cells expire

    env = run_env(kafka_server, redis_server, cache_dir, "troll-two", webhook.url)
    summary2, records2 = sentinel_run(data, env, tmp_path / "two", "--workers", "2")
    shared_by_two_workers(tmp_path / "two" / "worker.log")
    assert summary2["capped"] == summary["capped"] and hour_rollups(redis_server) == counts
    strip = lambda rs: [{k: v for k, v in r.items() if k != "fired_at"} for r in rs]  # noqa: E731
    assert strip(records2) == strip(records)


RAID_AT = 36 * 3600  # day 2, 12:00
RAID_TEXT = "URGENT: the exchange froze $SOL withdrawals, dump everything now before the crash!!"


def with_raid(posts: list[dict], seed: int) -> list[dict]:
    """Posts by a crowd of 400, and a copy-paste raid: one sell-off text about SOL from 60 fresh
    accounts in 15 minutes, across the channels, some copies with a link or a mention of their own."""
    rng = random.Random(seed)
    crowd = [{**p, "author": f"user{rng.randrange(400)}"} for p in posts]
    raid = [{"id": f"raid-{n:02d}", "created_at": T0 + RAID_AT + rng.uniform(0, 900), "source": "forum",
             "channel": rng.choice(["general", "trading"]), "author": f"fresh_{rng.randrange(10**6, 10**7)}",
             "text": RAID_TEXT + rng.choice(["", " https://t.co/x9a", " @mods", " !!!"])} for n in range(60)]
    return sorted(crowd + raid, key=lambda p: p["created_at"])


def test_a_copy_paste_raid_counts_as_a_few_voices_alike_with_one_worker_or_two(tmp_path, kafka_server, redis_server, cache_dir, webhook):
    """SENTINEL_TEXT_CAP=3 (the production ConfigMap's; 3 posts a text count per scope, label and hour): 60 fresh accounts posting
    one sell-off text about SOL in 15 minutes fire a drop without the text cap (each is under its
    author cap), and nothing with it. Two workers read the raid from four partitions in another
    order and leave the same hourly counts in every scope and the same records."""
    posts = with_raid(to_posts(generate(Scenario(days=2), seed=11), text_for, seed=11), seed=11)
    data = tmp_path / "raid.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in posts))
    raid_hours = (iso(T0 + RAID_AT), iso(T0 + RAID_AT + 3 * 3600))

    def in_raid_hours(records: list[dict]) -> list[dict]:
        return [r for r in records if raid_hours[0] <= r["window_end"] < raid_hours[1]]

    env = {**run_env(kafka_server, redis_server, cache_dir, "raid-uncapped", webhook.url), "SENTINEL_TEXT_CAP": "0"}
    summary, records = sentinel_run(data, env, tmp_path / "uncapped")
    assert summary["text_capped"] == 0, summary
    over_authors = summary["capped"]  # a few of the crowd's busiest hours; never a raider (one post each)
    fired = {r["scope"] for r in in_raid_hours(records) if r["kind"] == "sentiment_drop" and r["state"] == "firing"}
    assert "asset:SOL" in fired, records

    env = {**run_env(kafka_server, redis_server, cache_dir, "raid-one", webhook.url), "SENTINEL_TEXT_CAP": "3"}
    summary, records = sentinel_run(data, env, tmp_path / "one")
    assert summary["processed"] == len(posts) and summary["text_capped"] >= 57, summary  # the raid's 57 past its 3, in `all`
    assert summary["capped"] == over_authors  # each cap counts the posts over it, whatever the other did
    assert in_raid_hours(records) == [], records
    counts = hour_rollups(redis_server)

    env = {**run_env(kafka_server, redis_server, cache_dir, "raid-two", webhook.url), "SENTINEL_TEXT_CAP": "3"}
    summary2, records2 = sentinel_run(data, env, tmp_path / "two", "--workers", "2")
    shared_by_two_workers(tmp_path / "two" / "worker.log")
    assert (summary2["text_capped"], summary2["capped"]) == (summary["text_capped"], summary["capped"])
    assert hour_rollups(redis_server) == counts
    strip = lambda rs: [{k: v for k, v in r.items() if k != "fired_at"} for r in rs]  # noqa: E731
    assert strip(records2) == strip(records)


# A recording whose partition 0 ends half-way through the day and whose partition 1 runs on to its
# end, with a BTC swing after partition 0's last post. A 6-hour baseline and an 8-hour retention keep
# the day short; an idle time of an hour keeps partition 0 live through the whole run, so where the
# end is judged and trimmed to depends on how the run is settled alone, not on the wall clock.
HALF_DAY = 12 * 3600
ENDED_SWING_AT = 18 * 3600
ENDED = Scenario(days=1, episodes=(Episode("BTC", ENDED_SWING_AT, mix=SWING_MIX),))
ENDED_SETTINGS = {"SENTINEL_ALERT_BASELINE": "6h", "SENTINEL_RETENTION": "8h", "SENTINEL_MAX_FUTURE": "1h",  # below the dedupe window
                  "SENTINEL_ALERT_IDLE_PARTITION": "3600"}


def recording_ending_apart(posts: list[dict]) -> list[dict]:
    """Record lines: the posts before HALF_DAY alternate between partitions 0 and 1, every later
    post goes to partition 1."""
    offsets = [0, 0]
    lines = []
    for i, post in enumerate(posts):
        partition = i % 2 if post["created_at"] < T0 + HALF_DAY else 1
        lines.append({"topic": "forum-posts", "partition": partition, "offset": offsets[partition],
                      "timestamp": int(post["created_at"] * 1000), "key": post["id"], "value": json.dumps(post)})
        offsets[partition] += 1
    return lines


def on_the_embedded_stack(path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list[dict], dict]:
    """`sentinel run PATH` as the command runs it on its own stack (connected, run_once), with the
    buckets read before the stack goes: the summary, the alert records and every bucket."""
    from sentinel.run import connected, redis_url, run_once
    from stream.tools.services import run_async
    from workers import every_bucket

    with monkeypatch.context() as patched:
        for name in ("KAFKA_BROKER", "REDIS_URL", "SENTINEL_KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_APPRISE_URLS"):
            patched.delenv(name, raising=False)
        # The workers the run starts take their settings from this environment.
        for name, value in {"SENTINEL_BASE": "lexicon", "SENTINEL_CACHE_DIR": str(cache_dir), "SENTINEL_PARTITIONS": "2",
                            **ENDED_SETTINGS}.items():
            patched.setenv(name, value)
        with connected(Settings()) as (live, embedded):
            assert embedded
            summary, alerts = run_async(run_once(live, path, embedded=embedded, timeout=600))
            return summary, alerts, every_bucket(redis.Redis.from_url(redis_url(live), decode_responses=True))


def test_a_configured_stack_with_input_ended_leaves_what_the_embedded_stack_leaves(tmp_path, kafka_server, redis_server, cache_dir,
                                                                                    monkeypatch):
    """`sentinel run --input-ended` on a configured Kafka and Redis settles the end as the embedded
    stack does (judging through the newest post of any partition, then the trim of every scope): the
    same alert records and the same buckets. Without the flag the run takes nothing for ended (other
    producers may still be writing): judging stops at partition 0's last post, so the swing after
    it fires nothing, and the trim is held a retention behind that post."""
    from workers import every_bucket

    posts = to_posts(generate(ENDED, seed=3), text_for, seed=3)
    data = tmp_path / "recorded.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in recording_ending_apart(posts)))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "fired_at"} for r in rs]  # noqa: E731

    summary, alerts, buckets = on_the_embedded_stack(data, cache_dir, monkeypatch)
    assert summary["processed"] == len(posts) and summary["ended"] is True
    swing = [r for r in alerts if r["scope"] == "asset:BTC" and r["window_end"] >= iso(T0 + ENDED_SWING_AT)]
    assert swing and swing[0]["state"] == "firing", alerts

    runs = {}
    for flag in ((), ("--input-ended",)):
        env = worker_env(f"input-ended-{len(flag)}", kafka_server, redis_server, cache_dir, SENTINEL_PARTITIONS="2", **ENDED_SETTINGS)
        redis.Redis.from_url(redis_server).flushdb()
        got, records = sentinel_run(data, env, tmp_path / f"configured-{len(flag)}", *flag)
        runs[bool(flag)] = got, strip(records), every_bucket(redis.Redis.from_url(redis_server, decode_responses=True))

    (plain, plain_alerts, plain_buckets), (ended, ended_alerts, ended_buckets) = runs[False], runs[True]
    assert (plain["ended"], ended["ended"]) == (False, True)
    assert plain["processed"] == ended["processed"] == len(posts)
    assert ended_alerts == strip(alerts) and ended_buckets == buckets
    # Without the flag: nothing judged past partition 0's last post, older buckets kept.
    partition_0_end = max(p["created_at"] for i, p in enumerate(posts) if i % 2 == 0 and p["created_at"] < T0 + HALF_DAY)
    assert plain_alerts != ended_alerts and all(r["window_end"] <= iso(partition_0_end) for r in plain_alerts)
    assert min(start for _, start in plain_buckets) < min(start for _, start in buckets)
