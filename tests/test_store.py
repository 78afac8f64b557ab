"""Redis windows against a real redis-server: idempotence, bucketing, late data, counters."""

import asyncio

import numpy as np

import pytest
import redis

from stream.contracts import Post
from stream.store import Scored, WindowStore
from stream.keys import STATS_KEY, bucket_key, cap_cells_key, cap_cells_prefix, sample_key, seen_key
from stream.windows import bucket_start

T0 = 1_699_999_980.0  # a bucket boundary


@pytest.fixture()
def store(redis_server):
    redis.Redis.from_url(redis_server).flushdb()
    s = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600)
    yield s
    asyncio.run(s.close())


def item(pid, ts, label="positive", score=0.5, assets=("BTC",), channel="general"):
    return Scored(Post(pid, "t", ts, assets, source="discord", channel=channel), label, score)


def run(coro):
    return asyncio.run(coro)


def test_batch_updates_every_scope_bucket(store, redis_server):
    async def go():
        res = await store.apply([item("a", T0 + 1), item("b", T0 + 59, "negative", -0.75), item("c", T0 + 61, assets=())], {"consumed": 3}, T0 + 61)
        stats = await store.stats()
        btc = await store.window("asset:BTC", 3600, end=T0 + 61)
        every = await store.window("all", 3600, end=T0 + 61)
        await store.redis.aclose()
        return res, stats, btc, every
    res, stats, btc, every = run(go())
    assert (res.added, res.duplicates) == (3, 0)
    assert (btc.posts, btc.positive, btc.negative) == (2, 1, 1) and btc.score_sum == pytest.approx(-0.25)
    assert every.posts == 3
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    b0 = T0
    bucket = r.hgetall(bucket_key("channel:general", int(b0)))
    assert {k: bucket[k] for k in ("n", "positive", "negative", "score_sum", "score_sq")} == {
        "n": "2", "positive": "1", "negative": "1", "score_sum": "-0.25", "score_sq": "0.8125"
    }
    # The bucket's extremes, kept for an alert's sample posts.
    assert (bucket["lo_id"], bucket["lo_score"], bucket["hi_id"], bucket["hi_score"]) == ("b", "-0.75", "a", "0.5")
    assert r.hget(bucket_key("source:discord", int(b0) + 60), "n") == "1"
    assert r.ttl(bucket_key("all", int(b0))) > 3600
    assert stats["consumed"] == 3 and stats["processed"] == 3 and stats["label:positive"] == 2 and stats["watermark"] == T0 + 61


def test_redelivered_posts_count_once_and_are_counted_as_duplicates(store):
    async def go():
        batch = [item("a", T0), item("b", T0)]
        first = await store.apply(batch, {}, T0)
        again = await store.apply(batch + [item("c", T0)], {}, T0)
        w = await store.window("all", 3600, end=T0)
        stats = await store.stats()
        await store.redis.aclose()
        return first, again, w, stats
    first, again, w, stats = run(go())
    assert (first.added, again.added, again.duplicates) == (2, 1, 2)
    assert w.posts == 3 and stats["duplicates"] == 2 and stats["processed"] == 3


def test_a_partitions_backlog_is_kept_when_a_batch_does_not_know_its_lag(store):
    """After a rebalance the consumer knows no highwater until its next fetch, even for a partition
    it keeps: a batch then says nothing of the backlog, and the last one known stays, so the
    partition is not taken as idle after the short idle time mid catch-up. A known lag replaces it."""
    async def go():
        seen = []
        for n, lag in enumerate((500, None, 0)):
            await store.apply([item(f"x{n}", T0 + n)], {}, T0 + n, {1: T0 + n}, partition_lags={1: lag})
            seen.append((await store.stats()).get("plag:1"))
        await store.redis.aclose()
        return seen
    assert run(go()) == [500, 500, 0]


def test_a_batch_written_again_counts_once(store):
    """The same batch token (its offsets) a second time: a lost reply or replicas behind made the
    worker write it again. Counters and duplicates stay as after the first write; another token counts."""
    async def go():
        batch = [item("a", T0), item("b", T0)]
        await store.apply(batch, {"consumed": 2, "valid": 2}, T0, batch="posts/0:0-1")
        again = await store.apply(batch, {"consumed": 2, "valid": 2}, T0, batch="posts/0:0-1")
        after_again = await store.stats()
        redelivered = await store.apply(batch, {"consumed": 2, "valid": 2}, T0, batch="posts/0:0-2")
        stats = await store.stats()
        await store.redis.aclose()
        return again, after_again, redelivered, stats
    again, after_again, redelivered, stats = run(go())
    assert (again.added, again.duplicates) == (0, 0)
    assert (after_again["consumed"], after_again["duplicates"], after_again["processed"]) == (2, 0, 2)
    assert redelivered.duplicates == 2 and (stats["consumed"], stats["duplicates"], stats["processed"]) == (4, 2, 2)


def test_batch_tokens_are_kept_for_the_retention_in_event_time(store, redis_server):
    """A replay runs days of event time in minutes: the tokens must wrap with the retention (3600 s
    here), as the post ids do, not pile up for a day of wall time. A batch of only bad messages (no
    watermark of its own) is stamped with the stored watermark."""
    async def go():
        for i in range(5):
            ts = T0 + i * 1800
            await store.apply([item(f"p{i}", ts)], {"consumed": 1}, ts, batch=f"posts/0:{i}-{i}")
        await store.apply([], {"consumed": 1, "dlq": 1}, float("-inf"), batch="posts/0:5-5")
        await store.redis.aclose()
    run(go())
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    tokens = dict(r.zrange("sentinel:{all}:batches", 0, -1, withscores=True))
    # Watermark T0 + 7200: everything before T0 + 3600 is out of retention.
    assert tokens == {"posts/0:2-2": T0 + 3600, "posts/0:3-3": T0 + 5400, "posts/0:4-4": T0 + 7200, "posts/0:5-5": T0 + 7200}
    assert 0 < r.ttl("sentinel:{all}:batches") <= 3600 + 60


def test_late_post_within_retention_lands_in_its_own_bucket(store):
    async def go():
        await store.apply([item("new", T0 + 1800)], {}, T0 + 1800)
        await store.apply([item("old", T0 + 5)], {}, T0 + 1800)
        early = await store.window("all", 600, end=T0 + 5)
        await store.redis.aclose()
        return early
    assert run(go()).posts == 1


def test_ids_and_buckets_past_retention_are_removed(store):
    async def go():
        await store.apply([item("a", T0)], {}, T0)
        await store.apply([item("b", T0 + 7200)], {}, T0 + 7200)
        members = await store.redis.zrange(seen_key("all"), 0, -1)
        old_bucket = await store.redis.exists(bucket_key("all", int(T0)))
        await store.redis.aclose()
        return members, old_bucket
    assert run(go()) == (["b"], 0)


def test_ids_leave_with_the_dedupe_window_while_buckets_stay_for_the_retention(redis_server):
    """SENTINEL_DEDUPE_WINDOW shorter than the retention: the seen sets (most of a dense store's
    memory) keep 10 minutes of ids, the buckets an hour of counts."""
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600, dedupe_s=600)

    async def go():
        await store.apply([item("a", T0), item("b", T0 + 500)], {}, T0 + 500)
        await store.apply([item("c", T0 + 1200)], {}, T0 + 1200)
        members = await store.redis.zrange(seen_key("asset:BTC"), 0, -1)
        whole = await store.window("asset:BTC", 3600, end=T0 + 1200)
        await store.close()
        return members, whole
    members, whole = run(go())
    assert members == ["c"]  # a and b are more than 600 s behind the watermark
    assert whole.posts == 3


def test_a_batch_wider_than_the_dedupe_window_written_twice_counts_once(redis_server):
    """Post a was on time where it stood, b then moved the watermark 1,000 s on: the write must not
    trim a's id, or the same batch written again (a lost reply, a failover) counts a twice."""
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600, dedupe_s=600)

    async def go():
        batch = [item("a", T0), item("b", T0 + 1000)]
        first = await store.apply(batch, {"consumed": 2}, T0 + 1000, batch="posts/0:0-1")
        again = await store.apply(batch, {"consumed": 2}, T0 + 1000, batch="posts/0:0-1")
        whole = await store.window("asset:BTC", 3600, end=T0 + 1000)
        stats = await store.stats()
        await store.close()
        return first, again, whole, stats
    first, again, whole, stats = run(go())
    assert (first.added, again.added, again.duplicates) == (2, 0, 0)  # the token makes the retry count nothing
    assert whole.posts == 2 and stats["processed"] == 2
    assert first.watermark == again.watermark == T0 + 1000  # the stored watermark comes back with the write


def test_a_dedupe_window_beyond_the_retention_is_refused(redis_server):
    with pytest.raises(ValueError, match="within the retention"):
        WindowStore.from_url(redis_server, retention_s=3600, dedupe_s=7200)


def test_counters_only_batch_touches_no_window(store, redis_server):
    async def go():
        res = await store.apply([], {"consumed": 2, "dlq": 2}, float("-inf"))
        stats = await store.stats()
        await store.redis.aclose()
        return res, stats
    res, stats = run(go())
    assert res.added == 0 and stats["dlq"] == 2 and stats["consumed"] == 2
    assert "watermark" not in redis.Redis.from_url(redis_server, decode_responses=True).hgetall(STATS_KEY)


def test_slices_sum_buckets_server_side_and_extremes_break_ties_by_id(store):
    async def go():
        batch = [item("a", T0 + 1, "negative", -0.5), item("b", T0 + 2, "negative", -0.5), item("c", T0 + 61, "positive", 0.25),
                 item("d", T0 + 200, "neutral", 0.0)]
        await store.apply(batch, {}, T0 + 200, {0: T0 + 61, 1: T0 + 200})
        slices = await store.slices("asset:BTC", int(T0), 120, 2)
        samples = await store.extremes("asset:BTC", int(T0), int(T0) + 120)
        stats = await store.stats()
        await store.redis.aclose()
        return slices, samples, stats
    slices, samples, stats = run(go())
    # Rows of n, positive, negative, neutral, score_sum, score_sq.
    assert slices[:, :5].tolist() == [[3, 1, 2, 0, -0.75], [1, 0, 0, 1, 0.0]]
    assert slices[0, 5] == pytest.approx(0.25 + 0.25 + 0.0625)
    # a and b tie at -0.5 in one bucket: the smaller id is kept, whatever the order of arrival.
    assert [s.id for s in samples] == ["a", "c"]
    assert stats["pwm:0"] == T0 + 61 and stats["pwm:1"] == T0 + 200 and stats["first_event"] == T0 + 1


def test_slices_of_many_scopes_read_together_are_each_scopes_own(store, monkeypatch):
    """slices_many packs many scopes into each script call, up to a count of scopes and of slices:
    split every way (one scope a call, several, one over the slice cap alone), every table is the
    one that scope's own read gives, in the order asked."""
    import stream.store as store_module

    assets = [f"A{i}" for i in range(7)]
    batch = [item(f"p{i}", T0 + 37 * i, ("positive", "negative", "neutral")[i % 3], 0.1 * (i % 5), assets=(assets[i % 7],),
                  channel=f"c{i % 3}") for i in range(120)]
    requests = [(f"asset:{a}", int(T0) + 60 * k, 60, 3 + 70 * k) for a in assets for k in range(2)]
    requests += [("channel:c1", int(T0), 120, 40), ("asset:A3", int(T0), 30, 9), ("source:forum", int(T0), 60, 80)]

    async def go():
        await store.apply(batch, {}, T0 + 37 * 120)
        alone = [await store.slices(scope, first, width, count) for scope, first, width, count in requests]
        together = {}
        for scopes, slices in ((256, 4096), (2, 4096), (3, 10), (1, 1)):
            monkeypatch.setattr(store_module, "READ_SCOPES_PER_CALL", scopes)
            monkeypatch.setattr(store_module, "READ_SLICES_PER_CALL", slices)
            together[scopes, slices] = await store.slices_many(requests)
        await store.redis.aclose()
        return alone, together

    alone, together = run(go())
    assert sum(float(t[:, 0].sum()) for t in alone) > 100  # the reads find posts
    assert len({tuple(t[:, 0]) for t in alone}) > 10  # ... and differ from scope to scope
    for tables in together.values():
        assert len(tables) == len(alone) and all(np.array_equal(a, b) for a, b in zip(alone, tables))


def test_daily_roll_ups_outlive_the_buckets_and_skip_pair_scopes(redis_server):
    """`sentinel report` reads per-day sums that stay after the buckets (1 h here) are trimmed."""
    redis.Redis.from_url(redis_server).flushdb()
    day0 = 1_700_006_400  # a UTC midnight
    s = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600, day_retention_s=3 * 86400, pairs=True)

    async def go():
        await s.apply([item("a", day0 + 10), item("b", day0 + 7200, "negative", -0.5)], {}, day0 + 7200)
        await s.apply([item("c", day0 + 86400 + 5, "neutral", 0.0)], {}, day0 + 86400 + 5)
        # A redelivery changes no roll-up either (older posts never reach the store: they are late).
        await s.apply([item("c", day0 + 86400 + 5, "neutral", 0.0)], {}, day0 + 86400 + 5)
        tables = await s.days_many([("asset:BTC", day0, 3), ("channel:general|asset:BTC", day0, 3)])
        scopes = await s.day_scopes()
        buckets_left = await s.window("asset:BTC", 86400, end=day0 + 7200)
        late = await s.days_many([("all", day0, 1)])
        # Five days on, day0 is beyond the roll-up retention and goes.
        await s.apply([item("d", day0 + 5 * 86400)], {}, day0 + 5 * 86400)
        gone = await s.days_many([("all", day0, 1)])
        await s.close()
        return tables, scopes, buckets_left, late, gone

    (btc, pair), scopes, buckets_left, late, gone = run(go())
    assert btc[0].tolist() == [2, 1, 1, 0, 0.0, 0.5]
    assert btc[1].tolist() == [1, 0, 0, 1, 0.0, 0.0] and btc[2].tolist() == [0] * 6
    assert buckets_left.posts == 0  # day 0's buckets fell out of the 1 h retention; its roll-up did not
    assert pair.sum() == 0 and "channel:general|asset:BTC" not in scopes
    assert {"all", "asset:BTC", "channel:general", "source:discord"} <= set(scopes)
    assert late[0][0][0] == 2 and gone[0][0][0] == 0


def test_hourly_roll_ups_equal_the_sum_of_their_buckets(redis_server):
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=6 * 3600)
    rng = __import__("random").Random(5)
    items = [item(f"x{i}", T0 + rng.uniform(0, 3 * 3600), rng.choice(["positive", "negative", "neutral"]), rng.uniform(-1, 1))
             for i in range(400)]
    items.sort(key=lambda s: s.post.created_at)

    async def go():
        for k in range(0, 400, 50):
            await store.apply(items[k: k + 50], {}, items[k + 49].post.created_at)
        first = int(T0) // 3600 * 3600
        hours = (await store.hours_many([("asset:BTC", first, 5)]))[0]
        minutes = await store.slices("asset:BTC", first, 3600, 5)
        await store.close()
        return hours, minutes

    hours, minutes = run(go())
    assert hours[:, 0].sum() == 400 and (hours[:, 0] > 0).sum() >= 3
    assert np.allclose(hours, minutes)


def test_scopes_come_from_the_registry_and_leave_it_with_retention(redis_server):
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600, pairs=True)

    async def go():
        await store.apply([item("a", T0), item("b", T0 + 5, assets=("ETH",), channel="trading")], {}, T0 + 5)
        early = await store.scopes(), await store.scopes("asset:*")
        await store.apply([item("c", T0 + 7200, assets=("SOL",))], {}, T0 + 7200)
        late = await store.scopes()
        await store.close()
        return early, late

    (every, assets), late = run(go())
    assert every == ["all", "asset:BTC", "asset:ETH", "channel:general", "channel:trading", "source:discord"]  # no pair scopes
    assert assets == ["asset:BTC", "asset:ETH"]
    assert late == ["all", "asset:SOL", "channel:general", "source:discord"]  # BTC, ETH and trading fell out of retention


def test_pair_scope_buckets_count_posts_but_keep_no_samples(redis_server):
    """The hidden pair scopes are read for their counts only (incident grouping), so their buckets
    carry no extreme posts: the memory they would take is most of a sparse bucket's."""
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600, pairs=True)

    async def go():
        await store.apply([item("a", T0, label="negative", score=-0.7), item("b", T0 + 5)], {}, T0 + 5)
        await store.close()

    run(go())
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    pair, asset = r.hgetall(bucket_key("channel:general|asset:BTC", int(T0))), r.hgetall(bucket_key("asset:BTC", int(T0)))
    assert pair["n"] == "2" and pair["negative"] == "1" and not any(k.startswith(("lo_", "hi_")) for k in pair), pair
    assert (asset["n"], asset["lo_id"], asset["hi_id"]) == ("2", "a", "b")
    assert r.get(sample_key("asset:BTC", int(T0), "lo")) == "t" and not r.exists(sample_key("channel:general|asset:BTC", int(T0), "lo"))


def test_pair_scopes_keep_their_counts_and_ids_for_the_pair_retention_only(redis_server):
    """SENTINEL_PAIR_RETENTION: the hidden pair scopes drop buckets and ids a pair retention behind
    the watermark, the shown scopes keep the whole retention, and a post redelivered from beyond
    the pair retention leaves no pair bucket behind."""
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600, pairs=True, pair_retention_s=1200)
    pair = "channel:general|asset:BTC"

    async def go():
        await store.apply([item("a", T0), item("b", T0 + 600)], {}, T0 + 600)
        before = await store.slices(pair, int(T0), 60, 11)
        await store.apply([item("c", T0 + 1500)], {}, T0 + 1500)  # horizon T0 + 300: a's pair bucket goes, b's stays
        after = (await store.slices(pair, int(T0), 1560, 1))[0], (await store.slices("asset:BTC", int(T0), 1560, 1))[0]
        ids = await store.redis.zrange(seen_key(pair), 0, -1), await store.redis.zrange(seen_key("asset:BTC"), 0, -1)
        again = await store.apply([item("a", T0), item("c", T0 + 1500)], {}, T0 + 1500)  # redelivered
        recounted = (await store.slices(pair, int(T0), 1560, 1))[0], (await store.slices("asset:BTC", int(T0), 1560, 1))[0]
        ttl = await store.redis.ttl(bucket_key(pair, int(T0) + 1500 // 60 * 60)), await store.redis.ttl(bucket_key("asset:BTC", int(T0)))
        await store.close()
        return before, after, ids, again, recounted, ttl

    before, (pair_n, asset_n), (pair_ids, asset_ids), again, (pair_again, asset_again), (pair_ttl, asset_ttl) = run(go())
    assert before[0][0] == 1 and before[10][0] == 1
    assert (pair_n[0], asset_n[0]) == (2, 3)  # the pair lost a's bucket; the asset kept everything
    assert pair_ids == ["b", "c"] and asset_ids == ["a", "b", "c"]
    assert (again.added, again.duplicates) == (0, 2)
    # a's id left the pair scope, so its redelivery was counted there, into a bucket dropped at once.
    assert (pair_again[0], asset_again[0]) == (2, 3)
    assert not redis.Redis.from_url(redis_server).exists(bucket_key(pair, int(T0)))
    assert 1200 < pair_ttl <= 1260 and asset_ttl > 3600


def test_pair_scopes_are_kept_a_pair_retention_behind_the_slowest_partition(redis_server):
    """Grouping reads boundaries every partition has passed: a partition hours behind the others (a
    catch-up) keeps the pair counts it still needs, up to the retention."""
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600, pairs=True, pair_retention_s=1200)
    pair = "channel:general|asset:BTC"

    async def go():
        await store.apply([item("a", T0)], {}, T0, {0: T0, 1: T0})
        lagging = await store.apply([item("c", T0 + 1500)], {}, T0 + 1500, {0: T0 + 1500}, low=T0)
        kept = (await store.slices(pair, int(T0), 60, 1))[0][0]
        await store.apply([item("d", T0 + 4000)], {}, T0 + 4000, {0: T0 + 4000}, low=lagging.low)  # partition 1 still at T0
        capped = (await store.slices(pair, int(T0), 60, 1))[0][0]
        await store.close()
        return lagging.low, kept, capped

    low, kept_n, capped_n = run(go())
    assert low == T0
    # Kept 1,200 s behind partition 1 (windows.pair_horizon): trimmed behind the newest post, T0's
    # bucket (1,500 s behind it) would be gone.
    assert kept_n == 1
    assert capped_n == 0  # never longer than the retention (3,600 s), whatever partition 1 holds


def test_the_channel_registry_says_which_sources_each_channel_held_hour_by_hour(redis_server):
    """With grouping (pairs=True) the `all` script notes, per event-time hour, each (source,
    channel) with posts, `<hour>|channel:C` for a post that named no source; trimmed with `all`'s
    buckets, less an hour, and held back with them by what readers keep (windows.Kept)."""
    from stream.keys import CHANNELS_KEY
    from stream.windows import Kept

    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600, pairs=True)
    hour = int(T0) // 3600 * 3600
    telegram = Scored(Post("t1", "t", T0 + 5, (), source="telegram", channel="general"), "neutral", 0.0)
    nameless = Scored(Post("n1", "t", T0 + 6, (), channel="general"), "neutral", 0.0)

    async def go():
        await store.apply([item("a", T0), item("b", T0 + 1, channel="trading"), telegram, nameless], {}, T0 + 6)
        first = await store.redis.zrange(CHANNELS_KEY, 0, -1, withscores=True)
        # Three hours on, `all` held back by a reader two hours behind: the first hour stays.
        await store.apply([item("c", T0 + 3 * 3600)], {}, T0 + 3 * 3600, keep=Kept({"all": T0 + 3600}))
        held = await store.redis.zrange(CHANNELS_KEY, 0, -1)
        await store.apply([item("d", T0 + 3 * 3600 + 1)], {}, T0 + 3 * 3600 + 1)
        gone = await store.redis.zrange(CHANNELS_KEY, 0, -1)
        plain = WindowStore(store.redis, bucket_s=60, retention_s=3600)  # no grouping: nothing noted
        await plain.apply([item("e", T0 + 3 * 3600 + 2, channel="other")], {}, T0 + 3 * 3600 + 2)
        last = await store.redis.zrange(CHANNELS_KEY, 0, -1)
        await store.close()
        return first, held, gone, last

    first, held, gone, last = run(go())
    assert first == [(f"{hour}|channel:general", hour), (f"{hour}|source:discord|channel:general", hour),
                     (f"{hour}|source:discord|channel:trading", hour), (f"{hour}|source:telegram|channel:general", hour)]
    later = f"{hour + 3 * 3600}|source:discord|channel:general"
    assert len(held) == 5 and held[-1] == later
    assert gone == [later] and last == [later]


def test_a_write_with_no_posts_trims_the_scopes_it_names_and_the_channel_registry(redis_server):
    """The end of the input (AlertEngine.trim_ended) trims every scope in one write with no posts:
    `trim` names them (found by a SCAN of the index keys, the hidden pair scopes too), and the
    channel registry goes with `all`'s buckets though the write has no entries of its own."""
    from stream.keys import CHANNELS_KEY

    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600, pairs=True, pair_retention_s=1200)

    async def go():
        await store.apply([item("a", T0, channel="old"), item("b", T0 + 90)], {}, T0 + 90)
        scopes = await store.indexed_scopes()
        newest = await store.newest_buckets([*scopes, "asset:NONE"])
        await store.apply([], {}, T0 + 3 * 3600, trim=scopes)
        after = await store.indexed_scopes(), await store.redis.zrange(CHANNELS_KEY, 0, -1), await store.stats()
        await store.close()
        return scopes, newest, after

    scopes, newest, (left, channels, stats) = run(go())
    assert scopes == ["all", "asset:BTC", "channel:general", "channel:general|asset:BTC", "channel:old", "channel:old|asset:BTC",
                      "source:discord", "source:discord|asset:BTC"]
    assert newest["channel:old"] == T0 and newest["all"] == newest["channel:general"] == T0 + 60 and "asset:NONE" not in newest
    assert left == [] and channels == [] and stats["trimmed"] == bucket_start(T0 + 3 * 3600 - 3600, 60)


def test_a_pair_retention_beyond_the_retention_is_capped(redis_server):
    assert WindowStore.from_url(redis_server, retention_s=3600, pair_retention_s=7200).pair_retention_s == 3600
    with pytest.raises(ValueError, match="pair retention"):
        WindowStore.from_url(redis_server, retention_s=3600, pair_retention_s=0)


def test_sample_texts_live_beside_the_bucket_and_keep_it_compact(store, redis_server):
    """A forum-length text in the bucket's hash would turn it into a hash table (over 64 bytes a
    value); kept in keys of their own, the bucket stays a listpack, the samples read back whole, and
    the texts go when their bucket falls out of retention."""
    long_text = "ETH keeps bleeding and nobody is buying, " * 6
    async def go():
        lo = Scored(Post("lo", long_text, T0, ("ETH",), source="discord", channel="general"), "negative", -0.9)
        hi = Scored(Post("hi", "ETH up", T0 + 1, ("ETH",), source="discord", channel="general"), "positive", 0.8)
        await store.apply([lo, hi], {}, T0 + 1)
        found = await store.extremes("asset:ETH", int(T0), int(T0) + 60)
        encoding = await store.redis.object("encoding", bucket_key("asset:ETH", int(T0)))
        await store.apply([item("later", T0 + 7200, assets=("ETH",))], {}, T0 + 7200)  # the first bucket falls out of retention
        await store.redis.aclose()
        return found, encoding
    found, encoding = run(go())
    assert encoding in ("ziplist", "listpack"), encoding  # Redis 6 / 7 names for the compact encoding
    assert [(s.id, s.text, s.label) for s in found] == [("lo", long_text[:280], "negative"), ("hi", "ETH up", "positive")]
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    assert not r.exists(bucket_key("asset:ETH", int(T0)), sample_key("asset:ETH", int(T0), "lo"), sample_key("asset:ETH", int(T0), "hi"))
    assert r.get(sample_key("asset:ETH", int(T0) + 7200, "lo")) == "t"


def test_any_text_and_id_survive_the_write_byte_for_byte(store):
    """Whatever a post holds reaches the write script and comes back as it went in: quotes,
    backslashes, newlines, a NUL, emoji, Tagalog and right-to-left text in the samples, scores with
    every digit, and ids that look like numbers, hold spaces or more bytes than characters stay as
    they are (the script gets each post as one argument: numbers, the id's length, id and text)."""
    texts = ['he said "dump" \\ then\nleft', "nul\x00inside", "🚀🚀 wen moon 💎🙌", "bakit bagsak ang presyo? 😭",
             "هبوط حاد", "\u2028line sep\ttab", "", " 12 0.5 starts like the numbers"]
    ids = ["00e5", "id with spaces", "ид-🚀 2", "id-3", " x ", "id-5", "7 7", "id-7"]

    async def go():
        batch = [Scored(Post(ids[i], text, T0 + i * 60, ("ETH",), source="forum", channel="general"),
                        "negative" if i % 2 else "positive", (-1) ** i * (0.1 + i / 7))
                 for i, text in enumerate(texts)]
        await store.apply(batch, {}, T0 + 600)
        found = [await store.extremes("asset:ETH", int(T0) + i * 60, int(T0) + i * 60 + 60) for i in range(len(texts))]
        table = await store.slices("asset:ETH", int(T0), 60, len(texts))
        await store.redis.aclose()
        return batch, found, table

    batch, found, table = run(go())
    assert [f[0].text for f in found] == texts
    assert [f[0].id for f in found] == [s.post.id for s in batch]
    assert table[:, 4].tolist() == [s.score for s in batch]  # score_sum of one post a slice: exact


def _keyspace(url: str) -> dict[str, object]:
    """Every key and its contents (wall-clock marks left out: they differ from run to run)."""
    r = redis.Redis.from_url(url, decode_responses=True)
    found: dict[str, object] = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == "hash":
            found[key] = {f: v for f, v in r.hgetall(key).items() if not f.startswith(("pseen:", "pwm_since"))}
        elif kind == "zset":
            found[key] = r.zrange(key, 0, -1, withscores=True)
        else:
            found[key] = r.get(key)
    return found


def test_scopes_written_together_leave_what_each_written_alone_leaves(redis_server, monkeypatch):
    """The write packs many scopes into each script call (up to APPLY_SCOPES_PER_CALL, `all` last):
    one scope a call, three, or all of them leave the same keys with the same contents and give
    the same replies, through duplicates, a batch written twice, pair scopes, roll-ups and buckets
    trimmed out of retention."""
    import stream.store as store_module

    assets = [f"A{i}" for i in range(5)]
    batches = [[item(f"p{b}-{i}", T0 + 900 * b + 7 * i, ("positive", "negative", "neutral")[(i + b) % 3], 0.1 * ((i * b) % 7) - 0.3,
                     assets=(assets[(i + b) % 5],) if i % 4 else (), channel=f"c{i % 3}") for i in range(40)] for b in range(8)]
    batches[3] = batches[3] + batches[2][:10]  # redelivered posts: duplicates
    base = redis_server.rsplit("/", 1)[0]
    keyspaces, replies, calls = {}, {}, {}
    for db, per_call in ((1, 1), (2, 3), (3, 128)):
        url = f"{base}/{db}"
        redis.Redis.from_url(url).flushdb()
        redis.Redis.from_url(url).config_resetstat()
        monkeypatch.setattr(store_module, "APPLY_SCOPES_PER_CALL", per_call)
        s = WindowStore.from_url(url, bucket_s=60, retention_s=3600, pairs=True, day_retention_s=3 * 86400)

        async def go(s=s):
            out = []
            for b, batch in enumerate(batches):
                newest = max(x.post.created_at for x in batch)
                out.append(await s.apply(batch, {"consumed": len(batch)}, newest, {0: newest}, batch=f"t/0:{b}"))
            out.append(await s.apply(batches[5], {"consumed": len(batches[5])}, T0 + 900 * 5 + 300, {0: T0 + 900 * 5 + 300}, batch="t/0:5"))
            await s.close()
            return out

        replies[per_call] = [(r.added, r.duplicates, r.watermark, r.low) for r in run(go())]
        keyspaces[per_call] = _keyspace(url)
        calls[per_call] = int(redis.Redis.from_url(url).info("commandstats")["cmdstat_evalsha"]["calls"])
    # The scopes did share calls: one a scope, about a third as many, one a batch.
    assert calls[1] > 2 * calls[3] > 2 * calls[128] and calls[128] == len(batches) + 1
    assert replies[1][3][:2] == (40, 10) and replies[1][-1][:2] == (0, 0)  # the duplicates and the batch written twice
    assert len(keyspaces[1]) > 200 and any("|asset:" in k for k in keyspaces[1])  # pair scopes and roll-ups among them
    assert replies[3] == replies[128] == replies[1]
    assert keyspaces[3] == keyspaces[128] == keyspaces[1]


def by(pid, ts, author, label="negative", score=-0.5, source="discord", assets=("SOL",)):
    return Scored(Post(pid, f"text {pid}", ts, assets, source=source, channel="general", author=author), label, score)


def _state(url: str) -> dict:
    """Every bucket and roll-up hash of every scope, and the stats' counters: what judging, the
    console and the report read. Field for field: a post counted, then taken back out, leaves no
    field (nor roll-up) behind, as one never counted. Scores rounded: their sums run in arrival
    order."""
    r = redis.Redis.from_url(url, decode_responses=True)
    out = {}
    for key in r.scan_iter("sentinel:{*}:[bhd]:*"):
        if key.endswith((":lo", ":hi")):
            out[key] = r.get(key)
            continue
        out[key] = {k: (round(float(v), 9) if k.startswith("score") else v) for k, v in r.hgetall(key).items()}
    stats = r.hgetall(STATS_KEY)
    out["stats"] = {k: stats.get(k) for k in ("processed", "capped", "text_capped", "label:negative", "label:positive")}
    return out


def test_an_author_counts_a_capped_number_of_posts_an_hour_in_any_arrival_order(redis_server):
    """SENTINEL_AUTHOR_CAP: per scope, event-time hour and label an author's first `cap` posts by
    (event time, id) are counted, the rest classified but left out of the windows. Written in
    event-time order or backwards (one partition behind another), the buckets, roll-ups and samples
    end alike."""
    loud = [by(f"p{n}", T0 + 60 * n, "troll", "negative", -0.1 * n) for n in range(6)]
    # Under the cap in their own label: the troll's sell-off leaves its positive posts counted.
    cheers = [by("r0", T0 + 30, "troll", "positive", 0.4), by("r1", T0 + 400, "troll", "positive", 0.6)]
    quiet = [by("q1", T0 + 30, "alice", "neutral", 0.0), by("q2", T0 + 90, None, "negative", -0.9),
             by("q3", T0 + 120, "troll", "negative", -0.8, source="forum")]  # another source's troll is someone else
    next_hour = [by("p9", T0 + 3600 + 20, "troll", "negative", -1.0)]
    posts = loud + cheers + quiet + next_hour
    states, replies = _write_in_orders(redis_server, posts, [sorted(posts, key=lambda p: p.post.created_at), list(reversed(posts))],
                                       author_cap=2)
    assert states[0] == states[1]
    assert sum(r.capped for r in replies[0]) == sum(r.capped for r in replies[1]) == 4  # p2..p5
    state = states[0]
    # The troll's first two sell-off posts of the hour count (p0 at T0, p1 a minute later), and both cheers.
    assert state[f"sentinel:{{all}}:h:{int(T0) // 3600 * 3600}"]["n"] == "7"  # p0, p1, r0, r1, q1, q2, q3
    # Samples come from every post, capped ones too (p2 here): the choice never depends on arrivals.
    assert state[bucket_key("all", int(T0) + 120)] == {"n": "1", "negative": "1", "score_sum": -0.8, "score_sq": 0.64,
                                                       "lo_id": "q3", "lo_score": "-0.8", "lo_label": "negative",
                                                       "hi_id": "p2", "hi_score": "-0.2", "hi_label": "negative"}
    assert "n" not in state[bucket_key("all", int(T0) + 180)] and state[bucket_key("all", int(T0) + 180)]["lo_id"] == "p3"
    assert state[bucket_key("asset:SOL", int(T0) + 3600)]["n"] == "1"  # a new hour: p9 counts
    assert state["stats"] == {"processed": "12", "capped": "4", "text_capped": None, "label:negative": "9", "label:positive": "2"}


RAID = "URGENT: the exchange froze ETH withdrawals, sell everything now!!"
RAID_COPY = "urgent -- the EXCHANGE froze eth withdrawals; sell everything now https://t.co/x9b @mods"  # the same words


def said(pid, ts, author, text, label="negative", score=-0.5):
    return Scored(Post(pid, text, ts, ("SOL",), source="discord", channel="general", author=author), label, score)


def _both_caps_posts() -> list[Scored]:
    """Posts of one hour that exercise both caps (author cap 2, text cap 2)."""
    posts = [
        # A raid: one text from fresh accounts (and one without an author), each under its author cap.
        *(said(f"raid{i}", T0 + 600 + 7 * i, f"fresh{i}", RAID if i % 2 else RAID_COPY, score=-0.3 - 0.01 * i) for i in range(6)),
        said("anon", T0 + 590, None, RAID, score=-0.9),
        # The troll's third negative post of the hour is the raid text's earliest: over its author cap,
        # it still takes a place in the text's list (the first posts of a text are all its posts').
        said("t1", T0 + 100, "troll", "ETH is finished, the team dumped their tokens", score=-0.7),
        said("t2", T0 + 200, "troll", "ETH is finished, the team dumped their tokens", score=-0.6),
        said("t3", T0 + 580, "troll", RAID, score=-0.8),
        # The same author and text: e3 is pushed out of both lists by e2 arriving after it, in one step.
        said("e1", T0 + 1000, "echo", "Withdrawals halted again on the ETH bridge, be careful", score=-0.2),
        said("e3", T0 + 1200, "echo", "Withdrawals halted again on the ETH bridge, be careful", score=-0.25),
        said("e2", T0 + 1100, "echo", "Withdrawals halted again on the ETH bridge, be careful", score=-0.35),
        # Another author's copy of the troll's text: third in the text's list, so not counted.
        said("a1", T0 + 300, "alice", "eth is FINISHED -- the team dumped their tokens", score=-0.4),
        # Alice again: a3 is her first, a2 her third; a2, outside its text's first two, never counted,
        # so a3 arriving after it pushes it out of her list without taking anything back out.
        said("a2", T0 + 400, "alice", "ETH is finished, the team dumped their tokens!", score=-0.45),
        said("a3", T0 + 250, "alice", "I am out of ETH for good after this week", score=-0.55),
        # Short texts are never text-capped; another label has lists of its own; a tie in time goes to the smaller id.
        *(said(f"gm{i}", T0 + 50 + i, f"member{i}", "gm", "neutral", 0.0) for i in range(4)),
        said("c1", T0 + 700, "fresh1", RAID, "positive", 0.4),
        said("tie-b", T0 + 1500, "bob", "Selling my ETH at the open, this looks ugly", score=-0.5),
        said("tie-a", T0 + 1500, "carol", "Selling my ETH at the open, this looks ugly", score=-0.5),
        said("tie-c", T0 + 1500, "dave", "Selling my ETH at the open, this looks ugly", score=-0.5),
        # Times a tenth of a microsecond apart, against their ids' order: the cells keep times exactly.
        *(said(f"fine-{3 - k}", T0 + 1800.25 + k * 1e-7, f"x{k}", "Bridge exploit rumours again, ETH holders be careful", score=-0.1 * k)
          for k in range(3)),
    ]
    return posts


def _counted(posts: list[Scored], cap: int, text_cap: int) -> tuple[set[str], int, int]:
    """The caps' rule, straight from its definition (for one scope, whatever it holds): a post counts
    iff it is among the first `cap` of its author's and the first `text_cap` of its text's posts of
    its label and hour, by (event time, id). Also how many posts are over each cap."""
    from stream.windows import author_key, text_key
    firsts: dict[tuple, list[Scored]] = {}
    for p in sorted(posts, key=lambda p: (p.post.created_at, p.post.id)):
        hour, label = int(p.post.created_at // 3600), p.label
        if cap and (a := author_key(p.post)):
            firsts.setdefault(("a", a, label, hour), []).append(p)
        if text_cap and (t := text_key(p.post.text)):
            firsts.setdefault(("t", t, label, hour), []).append(p)
    over = {kind: {p.post.id for key, ps in firsts.items() if key[0] == kind for p in ps[(cap if kind == "a" else text_cap):]}
            for kind in ("a", "t")}
    return {p.post.id for p in posts} - over["a"] - over["t"], len(over["a"]), len(over["t"])


def _write_in_orders(url: str, posts: list[Scored], orders: list[list[Scored]], **caps: int) -> tuple[list[dict], list[list]]:
    states, replies = [], []
    for order in orders:
        redis.Redis.from_url(url).flushdb()
        store = WindowStore.from_url(url, bucket_s=60, retention_s=2 * 3600, pairs=True, **caps)

        async def go(store=store, order=order):
            out = [await store.apply([post], {}, max(p.post.created_at for p in posts)) for post in order]
            await store.close()
            return out
        replies.append(run(go()))
        states.append(_state(url))
    return states, replies


def test_with_both_caps_a_post_counts_iff_first_of_its_author_and_of_its_text_in_any_arrival_order(redis_server):
    """SENTINEL_TEXT_CAP beside SENTINEL_AUTHOR_CAP: posts written in event-time order, backwards and
    shuffled end in the same buckets, roll-ups, samples and counters, and those are the rule's (a post
    counts iff among its author's first 2 and its text's first 2 by (event time, id), all posts
    counted or not): with an authorless raid post, an author over its cap whose post still takes a
    text's place, one post pushed out of both lists at once and ties in time."""
    import random
    posts = _both_caps_posts()
    forwards = sorted(posts, key=lambda p: (p.post.created_at, p.post.id))
    orders = [forwards, forwards[::-1], posts, *(random.Random(seed).sample(posts, len(posts)) for seed in range(4))]
    states, replies = _write_in_orders(redis_server, posts, orders, author_cap=2, text_cap=2)
    assert all(state == states[0] for state in states[1:])
    counted, over_author, over_text = _counted(posts, 2, 2)
    # The raid text's first two are t3 (over its author's cap, so not counted) and anon: of the raid, anon alone counts.
    assert counted == {"anon", "t1", "t2", "e1", "e2", "a3", "gm0", "gm1", "gm2", "gm3", "c1", "tie-a", "tie-b", "fine-3", "fine-2"}
    state = states[0]
    hour = int(T0) // 3600 * 3600
    for scope in ("all", "asset:SOL", "channel:general", "source:discord", "channel:general|asset:SOL"):
        for b in range(hour, hour + 3600, 60):
            bucket = state.get(bucket_key(scope, b), {})
            assert int(bucket.get("n", 0)) == sum(1 for p in posts if p.post.id in counted and bucket_start(p.post.created_at, 60) == b), (scope, b)
    kept = [p for p in posts if p.post.id in counted]
    assert state[f"sentinel:{{all}}:h:{hour}"]["score_sum"] == pytest.approx(sum(p.score for p in kept))
    assert state[f"sentinel:{{all}}:h:{hour}"]["score_sq"] == pytest.approx(sum(p.score ** 2 for p in kept))
    assert (over_author, over_text) == (3, 11)  # t3, e3, a2; raid0-5, a1, a2, e3, tie-c, fine-1
    for reply in replies:
        assert (sum(r.capped for r in reply), sum(r.text_capped for r in reply)) == (over_author, over_text)
    assert state["stats"]["capped"] == str(over_author) and state["stats"]["text_capped"] == str(over_text)
    # Samples come from every post, capped ones too: the raid's copies are still what an alert shows.
    raid_minute = state[bucket_key("all", int(T0) + 600)]
    assert (raid_minute.get("n"), raid_minute["lo_id"], raid_minute["hi_id"]) == (None, "raid5", "raid0")


def test_without_taking_pushed_out_posts_back_out_arrival_order_would_show(redis_server, monkeypatch):
    """The posts above exercise the eviction: with it removed from the window script, forwards and
    backwards disagree (so the test above could fail)."""
    import stream.store as store_module
    script = store_module._APPLY_SCOPES
    body = "    local s = tonumber(e.score)\n"
    assert body in script
    monkeypatch.setattr(store_module, "_APPLY_SCOPES", script.replace(body, "    do return end\n" + body, 1))
    posts = _both_caps_posts()
    forwards = sorted(posts, key=lambda p: (p.post.created_at, p.post.id))
    states, _ = _write_in_orders(redis_server, posts, [forwards, forwards[::-1]], author_cap=2, text_cap=2)
    assert states[0] != states[1]


def test_the_text_cap_alone_keeps_a_texts_first_posts_and_ignores_authors(redis_server):
    """SENTINEL_TEXT_CAP with SENTINEL_AUTHOR_CAP=0: one author's copies and a raid's count alike,
    the first `text_cap` of each text, whatever the order."""
    posts = _both_caps_posts()
    forwards = sorted(posts, key=lambda p: (p.post.created_at, p.post.id))
    states, replies = _write_in_orders(redis_server, posts, [forwards, forwards[::-1]], text_cap=1)
    assert states[0] == states[1]
    counted, over_author, over_text = _counted(posts, 0, 1)
    hour = int(T0) // 3600 * 3600
    assert states[0][f"sentinel:{{all}}:h:{hour}"]["n"] == str(len(counted))
    assert over_author == 0 and states[0]["stats"]["capped"] is None and states[0]["stats"]["text_capped"] == str(over_text)


def test_no_cap_counts_every_post_and_keeps_no_cap_cells(redis_server):
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=3600)

    async def go():
        res = await store.apply([by(f"p{n}", T0 + n, "troll") for n in range(8)], {}, T0 + 8)
        window = await store.window("all", 3600, end=T0 + 60)
        await store.close()
        return res, window
    res, window = run(go())
    assert (res.added, res.capped, window.posts) == (8, 0, 8)
    assert not list(redis.Redis.from_url(redis_server).scan_iter("sentinel:{*}:[ac]c*"))


def test_cap_cells_leave_with_the_post_ids_once_their_hour_is_behind_the_dedupe_window(redis_server):
    """A post is accepted until it is a dedupe window behind its partition, so its hour's cell is
    kept that long: without it the post would count whatever the cap."""
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore(redis.asyncio.Redis.from_url(redis_server, decode_responses=True), bucket_s=60, retention_s=4 * 3600,
                        dedupe_s=2 * 3600, author_cap=1)
    hour = int(T0) // 3600 * 3600 + 3600
    r = redis.Redis.from_url(redis_server, decode_responses=True)

    async def write(pid, ts):
        await store.apply([by(pid, ts, "troll")], {}, ts, {0: ts}, low=ts)

    async def go():
        await write("a", hour + 10)
        await write("b", hour + 3 * 3600 - 100)  # the first hour ends 1.97 h behind: inside the window
        kept = r.zrange(cap_cells_key("all"), 0, -1)
        await write("c", hour + 3 * 3600 + 100)  # now all of it is more than the window behind
        await store.close()
        return kept
    kept = run(go())
    assert kept == [str(hour), str(hour + 7200)]
    assert r.zrange(cap_cells_key("all"), 0, -1) == [str(hour + 7200), str(hour + 10800)]
    assert not r.exists(f"{cap_cells_prefix('all')}{hour}")


def test_a_post_hours_late_but_inside_the_dedupe_window_is_still_capped(redis_server):
    """Found by review: cells went an hour behind the slowest partition while a post is accepted for
    the dedupe window, so an author's later post that arrived after the others had moved on counted
    past the cap, unlike the same posts in order (and backdated posts got round the cap)."""
    hour = int(T0) // 3600 * 3600 + 3600
    counts = []
    for order in (["a", "b", "x"], ["b", "x", "a"]):
        redis.Redis.from_url(redis_server).flushdb()
        store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=48 * 3600, author_cap=1)
        at = {"a": hour + 10, "b": hour + 20, "x": hour + 3 * 3600}

        async def go(store=store, order=order, at=at):
            for pid in order:
                await store.apply([by(pid, at[pid], "troll")], {}, at[pid], {0: at[pid]}, low=at[pid])
            await store.close()
        run(go())
        counts.append(redis.Redis.from_url(redis_server, decode_responses=True).hget(f"sentinel:{{all}}:h:{hour}", "n"))
    assert counts == ["1", "1"]


def test_the_cap_cells_keys_are_the_ones_the_script_builds():
    """The window script derives them from the bucket prefix; keys.py documents them."""
    from stream.keys import bucket_prefix
    for scope in ("all", "channel:x|asset:ETH"):
        base = bucket_prefix(scope)[:-2]
        assert cap_cells_prefix(scope) == base + "cc:" and cap_cells_key(scope) == base + "ccells"
