"""Window maths and key layout (pure)."""

import pytest

from stream.contracts import Post
from stream.keys import bucket_key, index_key
from stream.timefmt import format_duration, parse_duration, shown
from stream.windows import aggregate, bucket_start, frontier, is_late, pair_horizon, pair_retention_s, scopes_for, trim_horizon


def test_durations():
    assert [parse_duration(s) for s in ("15m", "1h", "24h", "30s", "2d")] == [900, 3600, 86400, 30, 172800]
    assert format_duration(900) == "15m" and format_duration(86400) == "1d" and format_duration(45) == "45s"
    with pytest.raises(ValueError):
        parse_duration("15 minutes")


def test_a_time_past_any_date_is_shown_as_its_number():
    assert shown(1_790_812_800.4) == "2026-10-01T00:00:00Z"
    far = 1_790_812_800 + 3_000_000 * 86400  # a silence for 3,000,000 days, stored by an older version
    assert shown(far) == f"{far} (epoch seconds)"


def test_scopes_and_buckets():
    post = Post("p", "t", 125.0, ("BTC", "ETH"), source="discord", channel="trading")
    assert scopes_for(post) == ["all", "asset:BTC", "asset:ETH", "channel:trading", "source:discord"]
    assert bucket_start(125.0, 60) == 120 and bucket_start(119.999, 60) == 60


def test_keys_share_a_cluster_slot_per_scope():
    assert bucket_key("asset:BTC", 120) == "sentinel:{asset:BTC}:b:120"
    assert index_key("asset:BTC").startswith("sentinel:{asset:BTC}:")


def test_late_rule():
    assert not is_late(1000.0, 1000.0 + 3600, 3600)
    assert is_late(999.0, 1000.0 + 3600, 3600)
    assert is_late(999.0, 1000.0 + 600, 600) and not is_late(1000.0, 1000.0 + 600, 600)


def test_aggregate():
    w = aggregate("all", 120, 240, [{"n": "2", "positive": "1", "negative": "1", "score_sum": "0.5"}, {"n": "1", "neutral": "1", "score_sum": "-0.2"}])
    assert (w.posts, w.positive, w.negative, w.neutral) == (3, 1, 1, 1)
    assert w.mean_score == pytest.approx(0.1) and w.share("negative") == pytest.approx(1 / 3)
    assert aggregate("all", 60, 60, []).mean_score == 0.0


def test_pair_horizon_follows_the_slowest_partition_within_the_retention():
    assert pair_horizon(10_000.0, 10_000.0, 1200, 3600) == 8800
    assert pair_horizon(10_000.0, 9_000.0, 1200, 3600) == 7800  # a partition behind keeps what it still needs
    assert pair_horizon(10_000.0, 1_000.0, 1200, 3600) == 6400  # but no more than the retention


def test_pair_retention_is_capped_at_the_retention_and_must_outlive_the_reference_span():
    assert pair_retention_s("48h", "12h", 6 * 3600) == 12 * 3600
    assert pair_retention_s("8h", "12h", 6 * 3600) == 8 * 3600
    with pytest.raises(ValueError, match="must exceed incident grouping's reference span"):
        pair_retention_s("48h", "6h", 6 * 3600)
    with pytest.raises(ValueError, match="SENTINEL_PAIR_RETENTION: bad duration"):
        pair_retention_s("48h", "half a day", 6 * 3600)


def test_a_scope_matches_its_own_name_even_where_the_name_reads_as_a_glob():
    from stream.windows import matches_scope

    assert matches_scope("channel:[EN] general", "channel:[EN] general")  # as a glob, [EN] is one letter
    assert matches_scope("asset:BTC", "asset:*") and not matches_scope("channel:x", "asset:*")
    assert matches_scope("channel:E general", "channel:[EN] general")  # and still a glob


def test_the_trim_horizon_trails_the_slowest_live_partition_by_the_retention():
    """Buckets go a retention behind the event time every live partition has reached (judging's
    frontier), never later than a retention behind the newest post; not at all while a partition
    of the topic is unheard and not yet idle."""
    now, day = 1_000.0, 86_400
    ahead = {"watermark": 10 * day, "pwm:0": 10 * day, "pwm:1": 3 * day, "pseen:0": now, "pseen:1": now, "pwm_since": now - 5}

    def horizon(stats, partitions=2, at=now):
        return trim_horizon(stats["watermark"], frontier(stats, partitions, at, idle_s=60), 2 * day)

    assert horizon(ahead) == 1 * day  # partition 1, read 7 days behind partition 0, keeps its 2 days
    assert horizon({**ahead, "pwm:1": 10 * day}) == 8 * day  # in step: the newest post's rule, as before
    assert horizon(ahead, partitions=3) == float("-inf")  # partition 2 unheard and not idle: nothing goes
    assert horizon(ahead, partitions=3, at=now + 120) == 8 * day  # all idle by wall clock: the newest post's
    assert horizon({**ahead, "pseen:1": now - 120}) == 8 * day  # partition 1 idle: it holds nothing back
    assert trim_horizon(10 * day, 12 * day, 2 * day) == 8 * day  # never later than a retention behind the newest post
    assert trim_horizon(10 * day, float("-inf"), 2 * day) == float("-inf")
    assert is_late(1 * day - 1, horizon(ahead), 0) and not is_late(1 * day, horizon(ahead), 0)


def test_a_partition_left_with_posts_to_read_is_not_idle_however_long_it_goes_unwritten():
    """Idle means nothing left to read (Kafka Streams, KIP-695), not "not written lately": in a
    catch-up a partition with a backlog goes unwritten for minutes while another is read hours
    ahead. One whose last write left lag holds the frontier (and so judging and trimming) back up
    to the lagging cap; lag 0, or none recorded (stats from before the field, a partition never
    heard from), keeps the wall-clock rule."""
    now, hour = 10_000.0, 3600.0
    stats = {"pwm:0": 9 * hour, "pwm:1": 2 * hour, "pseen:0": now, "pseen:1": now - 300, "pwm_since": now - 900}
    assert frontier(stats, 2, now, idle_s=60) == 9 * hour  # no lag recorded: idle after 60 s, as before
    assert frontier({**stats, "plag:1": 0}, 2, now, idle_s=60) == 9 * hour  # caught up and silent: idle
    assert frontier({**stats, "plag:1": 4_000}, 2, now, idle_s=60) == 2 * hour  # a backlog: it holds the others back
    assert frontier({**stats, "plag:1": 4_000}, 2, now, idle_s=60, lagging_idle_s=600) == 2 * hour
    assert frontier({**stats, "plag:1": 4_000, "pseen:0": now + 301}, 2, now + 301, idle_s=60, lagging_idle_s=600) == 9 * hour  # past the cap
    assert frontier({**stats, "plag:1": 4_000}, 2, now, idle_s=600, lagging_idle_s=60) == 2 * hour  # the cap never shortens idle_s
    assert frontier({**stats, "plag:0": 7}, 2, now, idle_s=60) == 9 * hour  # the reading partition's own lag changes nothing
    # A partition never heard from has no lag of its own: the same wait from pwm_since, and a lag
    # recorded without a post (every message it read was bad) does not hold the frontier at -inf.
    assert frontier({**stats, "plag:1": 4_000}, 3, now, idle_s=60) == 2 * hour
    assert frontier({**stats, "plag:1": 4_000, "plag:2": 9}, 3, now, idle_s=60) == 2 * hour
    assert frontier({**stats, "plag:1": 4_000}, 3, now - 890, idle_s=60) == float("-inf")  # 2 unheard, not yet idle
    # The trim horizon follows: a retention (1 h) behind the lagging partition, not behind partition 0.
    assert trim_horizon(9 * hour, frontier({**stats, "plag:1": 1}, 2, now, idle_s=60), 3600) == 1 * hour
    assert trim_horizon(9 * hour, frontier(stats, 2, now, idle_s=60), 3600) == 8 * hour


def test_a_batch_says_what_each_partition_has_left_to_read():
    from stream.batch import RawMessage, partition_lags

    msgs = [RawMessage(b"", "t", 0, 10, highwater=50), RawMessage(b"", "t", 1, 3, highwater=4), RawMessage(b"", "t", 0, 11, highwater=50),
            RawMessage(b"", "t", 2, 7), RawMessage(b"", "t", 3, 9, highwater=5)]
    assert partition_lags(msgs) == {0: 38, 1: 0, 2: None, 3: 0}  # 3: a highwater read before a later fetch is no negative lag
    assert partition_lags([]) == {}
