"""Window maths and key layout (pure)."""

import pytest

from stream.contracts import Post
from stream.keys import bucket_key, index_key
from stream.timefmt import format_duration, parse_duration, shown
from stream.alerts.judging import kept_lines
from stream.windows import (
    CLOCK_JUMP_POSTS, CLOCK_SILENT_POSTS, TEXT_CAP_MIN_CHARS, Kept, PartitionClock, aggregate, bucket_start, ended_kept, frontier, is_late,
    kept_trim,
    normalised_text, pair_horizon, pair_retention_s, partitions_outgrown, scopes_for, text_key, trim_horizon,
)


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


def test_copies_of_a_text_share_its_key_and_short_chatter_has_none():
    """The text cap's key (SENTINEL_TEXT_CAP): case, punctuation, emoji, fancy Unicode, links and
    mentions do not make a copy a new text; digits do; texts under TEXT_CAP_MIN_CHARS once
    normalised are never capped."""
    raid = "URGENT: Binance froze ETH withdrawals, sell everything now!!"
    copies = ["urgent -- binance FROZE eth withdrawals; sell everything now \U0001F6A8 https://t.co/x9b",
              "@mods URGENT: Binance froze ETH withdrawals, sell everything now <@1234> t.co/abc?ref=2",
              "\uff35\uff32\uff27\uff25\uff2e\uff34: Binance froze  ETH\nwithdrawals,   sell everything now"]
    assert normalised_text(raid) == "urgent binance froze eth withdrawals sell everything now"
    assert {text_key(t) for t in copies} == {text_key(raid)} and text_key(raid) is not None and len(text_key(raid)) == 16
    assert text_key("ETH to 1500 by friday, calling it now") != text_key("ETH to 1600 by friday, calling it now")
    for chatter in ("gm", "GM!!! \u2600\ufe0f", "lol", "wen moon", "thank you po", "https://x.com/some/very/long/link/to/a/tweet",
                    "@Professor LP"):
        assert text_key(chatter) is None, chatter
    assert len(normalised_text("sell sell sell!!")) < TEXT_CAP_MIN_CHARS <= len(normalised_text("sell everything now"))


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


# --- the partition clock: one bad clock does not carry a partition's watermark off ---

H = 3600


def posts_of(pattern: str, start: float, gap: float, skew: dict[str, float]) -> list[tuple[float, str, str]]:
    """(created_at, source, id) for posts arriving `gap` seconds apart in the order the pattern's
    letters name their sources (d: discord, t: telegram), each stamped with its source's skew."""
    names = {"d": "discord", "t": "telegram"}
    return [(start + i * gap + skew.get(names[c], 0.0), names[c], f"{c}{i}") for i, c in enumerate(pattern)]


def watermarks(clock: PartitionClock, posts: list[tuple[float, str, str]]) -> tuple[list[float], list[str]]:
    marks, ahead = [], []
    for created_at, source, pid in posts:
        ahead += clock.observe(created_at, source, pid)
        marks.append(clock.mark)
    return marks, ahead


def test_a_source_stamping_hours_ahead_moves_no_watermark_and_its_posts_are_ahead_once_each():
    """tz_skew8: a telegram scraper writes local time (UTC+8) with a Z, and its posts share the
    partition with discord's, 5 of every 8. The newest post (the rule before) would put the
    watermark 8 hours ahead of discord's posts, every one of them then late; the clock stays on
    discord's time, and each telegram post from the partition's first watermark on (its
    CLOCK_JUMP_POSTS-th post) is said to be ahead, once."""
    posts = posts_of("ddtdtdtd" * 40, 1_000_000.0, 60.0, {"telegram": 8 * H})
    marks, ahead = watermarks(PartitionClock(H), posts)
    discord = [t for t, s, _ in posts if s == "discord"]
    assert max(t for t, _, _ in posts) - max(discord) > 7 * H  # the newest post is telegram's
    assert all(m <= max(t for t, s, _ in posts[: i + 1] if s == "discord") for i, m in enumerate(marks))
    assert marks[-1] == max(discord)
    telegram = [pid for i, (_, s, pid) in enumerate(posts) if s == "telegram" and i >= CLOCK_JUMP_POSTS - 1]
    assert ahead == telegram  # before its first watermark a partition has nothing to be ahead of


def test_one_post_from_the_future_moves_no_watermark_and_is_ahead_once_its_source_goes_on():
    """future_one: one post dated months ahead in the middle of a partition's posts. The newest
    post (the rule before) would hold the watermark there and drop every later post of the
    partition as late; here it moves nothing, and is ahead once its source's next post does not
    follow it."""
    start = 1_000_000.0
    posts = [(start + 60 * i, "discord", f"p{i}") for i in range(50)]
    posts[20] = (start + 270 * 86400, "discord", "clockbug")
    clock = PartitionClock(H)
    marks, ahead = watermarks(clock, posts)
    assert ahead == ["clockbug"]
    assert marks[-1] == start + 60 * 49 and max(marks) < start + 86400
    assert not any(is_late(t, m, 600) for (t, _, _), m in zip(posts, marks))


def test_a_lull_ends_the_watermark_moves_one_post_late_and_nothing_is_ahead():
    start = 1_000_000.0
    posts = [(start + 60 * i, "discord", f"a{i}") for i in range(40)] + [(start + 6 * H + 60 * i, "discord", f"b{i}") for i in range(5)]
    marks, ahead = watermarks(PartitionClock(H), posts)
    assert ahead == []
    assert marks[40] == start + 39 * 60  # the first post after six quiet hours waits for the next
    assert marks[41:] == [t for t, _, _ in posts[41:]]


def test_a_source_that_stops_posting_stops_holding_the_watermark():
    """Discord holds the vote, then its scraper dies: telegram's posts (on time) move the watermark
    on once discord has none among the last CLOCK_SILENT_POSTS posts. Those that came more than
    max_ahead past the watermark held back meanwhile are said to be ahead."""
    start = 1_000_000.0
    before = posts_of("dddt" * 32, start, 60.0, {})
    after = [(start + 128 * 60 + 300 * (i + 1), "telegram", f"late{i}") for i in range(60)]
    marks, ahead = watermarks(PartitionClock(H), before + after)
    assert set(ahead) <= {pid for _, _, pid in after[:CLOCK_SILENT_POSTS]}
    waited = next(i for i, m in enumerate(marks[128:]) if m == after[i][0])
    assert waited <= CLOCK_SILENT_POSTS and marks[-1] == after[-1][0]


def test_a_fast_source_that_a_run_of_its_posts_makes_a_majority_still_moves_no_watermark_far():
    """Telegram 8 hours fast with a bare majority of the latest posts (a run of its posts, or a
    source with half of them): beyond max_ahead the watermark moves only as far as two thirds of
    the votes, so it stays on discord's time."""
    posts = posts_of("dt" * 40 + "ttd" * 30, 1_000_000.0, 60.0, {"telegram": 8 * H})
    marks, _ = watermarks(PartitionClock(H), posts)
    assert marks[-1] == max(t for t, s, _ in posts if s == "discord")


def test_a_fast_source_near_half_the_posts_never_carries_the_watermark_off():
    """Random arrivals over 20,000 posts: a source 8 hours fast with 45% of them. A simple majority
    of the latest 128 posts swings its way now and then (the rule without the two-thirds step
    did, and the watermark never came back); the watermark stays within max_ahead of the truth.
    The clock starts from a stored watermark, as a worker's does after a restart (a partition's
    first watermark, from none, is the test of a fast source posting first below)."""
    import random

    rng = random.Random(7)
    t = 1_000_000.0
    clock, worst = PartitionClock(H, mark=t), 0.0
    for i in range(20_000):
        t += rng.expovariate(1 / 60)
        fast = rng.random() < 0.45
        clock.observe(t + (8 * H if fast else 0.0), "telegram" if fast else "discord", i)
        worst = max(worst, clock.mark - t)
    assert worst <= H


def test_a_restarted_clock_is_not_carried_off_by_its_first_few_posts():
    """After a restart the clock starts from the stored watermark with no votes: two posts of the
    fast source are a majority of the three read so far, but a jump needs CLOCK_JUMP_POSTS posts
    behind it."""
    start = 1_000_000.0
    clock = PartitionClock(H, mark=start)
    marks, _ = watermarks(clock, posts_of("ttdttdd", start + 60, 60.0, {"telegram": 8 * H}))
    assert marks[-1] < start + H


def test_on_honest_sources_the_watermark_is_the_newest_post_and_judging_waits_for_no_majority():
    """Three sources on time, none with half of the posts: what most of them agree on (the
    reference) is the second-newest clock, minutes behind the newest post, and judging the
    partition by it ran that much later on every normal stream (tz_ok: 5.8 -> 10.2 minutes).
    Each honest source falls back to the reference whenever the others post after it, so the
    watermark is the newest post, as with one clock."""
    import random

    rng = random.Random(3)
    t, clock, posts = 1_000_000.0, PartitionClock(H), []
    for i in range(600):
        t += rng.expovariate(1 / 90)
        posts.append((t, rng.choice(("discord", "telegram", "reddit")), f"p{i}"))
    marks, ahead = watermarks(clock, posts)
    assert ahead == []
    assert marks[20:] == [created_at for created_at, _, _ in posts[20:]]
    assert clock.reference < clock.mark  # the reference trails: the second-newest clock


def test_a_source_fast_by_less_than_max_ahead_but_never_behind_the_others_is_left_out_of_the_watermark():
    """Telegram 55 minutes fast, within max_ahead of the reference: taking the newest clock within
    max_ahead of the reference would put the watermark 55 minutes ahead of discord's posts (and a
    source an hour fast would flicker in and out: tz_skew1). It is left out because its clock is
    never at or behind the reference, as an honest source's is whenever the others post after it."""
    posts = posts_of("ddtdtdtd" * 40, 1_000_000.0, 60.0, {"telegram": 55 * 60})
    marks, ahead = watermarks(PartitionClock(H), posts)
    assert ahead == []  # within max_ahead: not ahead, and not in the watermark either
    assert all(m <= max(t for t, s, _ in posts[: i + 1] if s == "discord") for i, m in enumerate(marks))
    assert marks[-1] == max(t for t, s, _ in posts if s == "discord")


def test_the_first_post_a_partition_reads_does_not_set_its_clock_when_it_is_the_fast_sources():
    """A replay whose first line is the fast source's: the first post used to set the partition's
    watermark, 8 hours ahead, and every later post was behind it. The first watermark needs what a
    jump does, two thirds of the votes and CLOCK_JUMP_POSTS posts behind them; until then the
    partition has none (and nothing is late or ahead on it)."""
    posts = posts_of("ttdddtdd" * 20, 1_000_000.0, 60.0, {"telegram": 8 * H})
    marks, _ = watermarks(PartitionClock(H), posts)
    assert marks[: CLOCK_JUMP_POSTS - 1] == [float("-inf")] * (CLOCK_JUMP_POSTS - 1)
    assert all(m <= max((t for t, s, _ in posts[: i + 1] if s == "discord"), default=m) for i, m in enumerate(marks))
    assert marks[-1] == max(t for t, s, _ in posts if s == "discord")


def test_the_clock_of_a_post_without_a_source_is_one_source_of_its_own():
    clock = PartitionClock(H)
    times = [1000.0 + 60 * i for i in range(20)]
    marks, ahead = watermarks(clock, [(t, None, f"p{i}") for i, t in enumerate(times)])  # type: ignore[misc]
    first = CLOCK_JUMP_POSTS - 1  # a partition's first watermark waits for CLOCK_JUMP_POSTS posts
    assert marks == [float("-inf")] * first + times[first:] and ahead == []
    with pytest.raises(ValueError):
        PartitionClock(0)


def test_a_write_trims_no_bucket_judging_or_grouping_will_still_read():
    """windows.Kept: a scope judged through 100,000 (judging's lookback 25 h) keeps its buckets from
    10,000, whatever the partitions allow; with grouping every scope is kept a retention behind
    the correlation cursor and the pair scopes a pair retention behind it."""
    kept = kept_lines({"all": 100_000.0, "asset:BTC": "190000", "channel:new": None}, "160000", 90_000, 86_400, 43_200)
    assert kept.line("all") == 10_000  # its own judgement reads furthest back
    assert kept.line("asset:BTC") == 160_000 - 86_400  # grouping reads further back than its judgement
    assert kept.line("channel:new") == kept.line("source:forum") == 160_000 - 86_400  # never judged: grouping's line
    assert kept.line("channel:general|asset:BTC") == 160_000 - 43_200
    assert kept_trim(150_000, kept.line("all"), 60) == 9_960  # to the whole bucket
    assert kept_trim(5_000, kept.line("all"), 60) == 5_000  # trimming less than the readers allow is left alone
    alone = kept_lines({"all": 100_000.0}, None, 90_000, 86_400, 43_200)  # no grouping
    assert alone.line("asset:BTC") == alone.line("x|asset:Y") == float("inf") and kept_trim(150_000, alone.line("asset:BTC"), 60) == 150_000
    assert Kept().line("all") == float("inf")



def test_at_the_end_of_the_input_a_scope_keeps_the_lookback_before_its_newest_bucket():
    """windows.ended_kept, judging's lookback 25 h, a 48-hour retention: once the input has ended, a
    scope judged past its newest post (250,030, in bucket 250,020) keeps from that bucket less the
    lookback, not from its last boundary judged (270,000), which is wherever the rounds stopped; a
    scope judged through the end (400,000, its newest post at 400,150) keeps its own line, and
    grouping keeps its lines; a scope never judged is held by its newest bucket too."""
    keep = kept_lines({"all": 400_000.0, "channel:quiet": 270_000.0, "channel:new": None}, "400000", 90_000, 172_800, 43_200)
    newest = {"all": bucket_start(400_150, 60), "channel:quiet": bucket_start(250_030, 60), "channel:new": bucket_start(380_000, 60)}
    ended = ended_kept(keep, newest, 90_000, 60)
    assert ended.line("channel:quiet") == 250_020 - 90_000 < keep.line("channel:quiet") == 270_000 - 90_000
    assert ended.line("all") == keep.line("all") == 400_000 - 172_800  # grouping reads furthest back
    assert ended.line("channel:new") == keep.line("channel:new") == 400_000 - 172_800
    assert ended.line("x|asset:Y") == keep.line("x|asset:Y") == 400_000 - 43_200
    # No grouping: a scope judged through the end holds at its last boundary's line, and one
    # never judged by its newest bucket.
    alone = ended_kept(kept_lines({"all": 400_000.0}, None, 90_000, 172_800, 43_200), {"all": 400_140.0, "asset:BTC": 120.0}, 90_000, 60)
    assert alone.line("all") == 400_000 - 90_000 and alone.line("asset:BTC") == 120 - 90_000 and alone.line("source:x") == float("inf")


def test_a_partition_added_to_the_topic_is_invisible_to_the_configured_count():
    """Why a running worker must not go on judging once the posts topic has outgrown
    SENTINEL_PARTITIONS: the frontier counts 0..N-1 and the partitions reported since, so a new
    partition no worker has written for yet holds nothing back, and a boundary is judged final
    (and baselines trimmed) without its posts."""
    hour, now = 3600.0, 100_000.0
    stats = {"pwm:0": 9 * hour, "pwm:1": 9 * hour, "pseen:0": now, "pseen:1": now, "pwm_since": now}
    assert frontier(stats, 2, now, idle_s=60) == 9 * hour  # partition 2 (added, still unread) is not waited for
    assert frontier(stats, 3, now, idle_s=60) == float("-inf")  # counted, it is


def test_partitions_outgrown_names_the_topic_count_when_it_is_more_than_configured():
    assert partitions_outgrown(4, [0, 1], 4) is None
    assert partitions_outgrown(4, [], 4) is None  # a standby
    assert partitions_outgrown(4, [0, 1], 8) == 8  # added, none of them assigned here: the others still judge wrongly
    assert partitions_outgrown(4, [3, 5], None) == 6  # metadata unread: the assignment says as much
    assert partitions_outgrown(4, [5], 8) == 8
    assert partitions_outgrown(4, [2, 3], None) is None
    assert partitions_outgrown(8, [0], 4) is None  # fewer is a stale read; start-up refuses a count set too high


def test_a_scope_budget_folds_new_names_past_its_hourly_budget_and_never_a_known_one():
    """Pure: per kind and event-time hour, `per_hour` new channel (and source) scopes are admitted;
    the rest of the new names fold into the overflow scope, which no real name can be; a known
    scope, or one admitted earlier that hour, is never folded; the next hour has a budget again."""
    from stream.contracts import normal_name
    from stream.windows import OVERFLOW_NAME, ScopeBudget, scopes_for

    budget = ScopeBudget(2)
    t = 1_767_225_600
    posts = [Post(f"p{i}", "gm", t + i, ("BTC",), "forum", f"new-{i}") for i in range(5)]
    posts.append(Post("old", "gm", t + 9, (), "forum", "general"))
    posts.append(Post("again", "gm", t + 10, (), "forum", "new-1"))  # admitted above: still itself
    assert ScopeBudget.candidates(posts) == {"source:forum", *(f"channel:new-{i}" for i in range(5)), "channel:general"}
    decided = budget.fold(posts, known={"channel:general", "source:forum"})
    assert [p.channel for p in decided.posts] == ["new-0", "new-1", OVERFLOW_NAME, OVERFLOW_NAME, OVERFLOW_NAME, "general", "new-1"]
    assert decided.posts_folded == {"channel": 3} and decided.names_folded == {"channel": 3}
    # The rest of the post is as it was: it still counts in `all`, its asset and its source.
    assert scopes_for(decided.posts[2]) == ["all", "asset:BTC", f"channel:{OVERFLOW_NAME}", "source:forum"]
    assert (decided.posts[2].id, decided.posts[2].created_at, decided.posts[2].source) == ("p2", t + 2, "forum")
    # No post's name normalises to the overflow name: a real `(other)` is its own scope.
    assert normal_name(OVERFLOW_NAME) != OVERFLOW_NAME and normal_name("{other}") == "(other)"
    # ... and a silence or an override that names the overflow scope names it, not `channel:(other)`.
    from stream.alerts.detector import _counted_as
    from stream.alerts.silences import scope_name

    assert scope_name(f"channel:{OVERFLOW_NAME}") == f"channel:{OVERFLOW_NAME}" == _counted_as(f"channel:{OVERFLOW_NAME}")
    assert scope_name("channel:(other)") == "channel:(other)"
    # Sources have a budget of their own; the next event-time hour has a fresh one.
    later = [Post(f"q{i}", "gm", t + 3600 + i, (), f"src-{i}", f"next-{i}") for i in range(3)]
    decided = budget.fold(later, known=set())
    assert [(p.source, p.channel) for p in decided.posts] == [("src-0", "next-0"), ("src-1", "next-1"), (OVERFLOW_NAME, OVERFLOW_NAME)]
    assert decided.posts_folded == {"channel": 1, "source": 1}
    assert ScopeBudget(0).fold(posts, known=set()).posts == posts  # 0: no budget
    # Posts stamped hours back, on time within the dedupe window, spend the frontier's hour's budget:
    # one hour each would give a flood spread over two days 48 budgets.
    back = [Post(f"r{h}", "gm", t + 3600 - h * 3600, (), "forum", f"late-{h}") for h in range(1, 6)]
    decided = budget.fold(back, known={"source:forum"})
    assert [p.channel for p in decided.posts] == [OVERFLOW_NAME] * 5 and decided.posts_folded == {"channel": 5}


def test_a_scope_budget_folds_the_same_names_however_the_posts_are_batched_across_an_hour():
    """A name admitted in the hour before, not yet written (so not known) when its next post comes
    in the next hour, is the scope it already is: it spent that hour's budget before, and split
    into batches the same posts found it known. Counted as new again, one batching folded a name
    the other admitted (a replay's folding depended on where batches were cut)."""
    from stream.windows import ScopeBudget

    t = 1_767_225_600
    posts = [Post("a0", "gm", t + 3590, (), None, "a"), Post("a1", "gm", t + 3610, (), None, "a"),
             Post("b1", "gm", t + 3620, (), None, "b")]
    whole = ScopeBudget(1).fold(posts, known=set())
    split = ScopeBudget(1)
    first = split.fold(posts[:1], known=set())
    rest = split.fold(posts[1:], known={"channel:a"})  # the first batch's write registered `a`
    assert [p.channel for p in whole.posts] == [p.channel for p in [*first.posts, *rest.posts]] == ["a", "a", "b"]
