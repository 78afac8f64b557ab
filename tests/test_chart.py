"""The notification's chart plots what the alert fired on (stream/alerts/chart.py): the negative
share for a drop, the positive share for a surge, both shares above the volume for a spike, each
against the baseline the notice compares it with. Pure, but for the last test: the delivery, on a
real redis-server and a local webhook."""

from __future__ import annotations

import math
import struct

import numpy as np

from stream.alerts.chart import PNG_SIGNATURE, SPAN_S, Line, Point, baselines_of, chart_figure, chart_points, chart_spec, render_chart
from stream.console import views
from stream.windows import SliceCol

END = 1_780_000_200  # a 15-minute boundary
STEP = 900


def table(rows: list[tuple[int, int, int]]) -> list[list[float]]:
    """Slice-table rows from (posts, positive, negative); the rest neutral, scores unused."""
    out = []
    for n, pos, neg in rows:
        row = [0.0] * len(SliceCol)
        row[SliceCol.N], row[SliceCol.POSITIVE], row[SliceCol.NEGATIVE], row[SliceCol.NEUTRAL] = n, pos, neg, n - pos - neg
        out.append(row)
    return out


# Three slices: 8 posts (6 negative, 1 positive), none, 4 posts (1 negative, 3 positive).
ROWS = table([(8, 1, 6), (0, 0, 0), (4, 3, 1)])
FIRST = END - 3 * STEP
POINTS = chart_points(ROWS, FIRST, STEP)


def test_chart_points_are_each_slices_shares_of_its_posts_and_a_gap_where_it_has_none():
    assert POINTS == [Point(FIRST, 8, 0.75, 0.125), Point(FIRST + STEP, 0, None, None), Point(FIRST + 2 * STEP, 4, 0.25, 0.75)]


def test_chart_points_and_the_consoles_series_share_one_sum_over_posts():
    # One maths for both: a slice's share is its summed counts over its posts, never a mean of means.
    series = views.series(np.array(ROWS), first=FIRST, width=STEP)
    assert series.negative == [p.negative for p in POINTS] and series.positive == [p.positive for p in POINTS]


def test_a_drop_plots_the_negative_share_in_percent_against_its_baseline_share():
    spec = chart_spec(POINTS, END - STEP, END, "asset:ETH", "sentiment_drop", baselines={"negative_share": 0.197, "posts": 20.0})
    assert spec.lines == [Line("negative share", "tab:red", [75.0, None, 25.0], baseline=19.7)]
    assert spec.share_label == "negative share (%)" and spec.posts == [8, 0, 4]
    assert spec.share_top == 75.0 * 1.15  # room above the highest point
    assert spec.posts_label == "posts per 15m" and spec.posts_baseline is None  # no window to scale it by


def test_a_surge_plots_the_positive_share():
    spec = chart_spec(POINTS, END - STEP, END, "asset:ETH", "sentiment_surge", baselines={"negative_share": 0.197, "positive_share": 0.3})
    assert spec.lines == [Line("positive share", "tab:green", [12.5, None, 75.0], baseline=30.0)]
    assert spec.share_label == "positive share (%)"


def test_a_volume_spike_plots_both_shares_and_the_baseline_rate_per_slice():
    spec = chart_spec(POINTS, END - STEP, END, "asset:ETH", "volume_spike", baselines={"posts": 31.0}, window_s=3600)
    assert [(line.label, line.values, line.baseline) for line in spec.lines] == [
        ("negative share", [75.0, None, 25.0], None), ("positive share", [12.5, None, 75.0], None)]
    assert spec.share_label == "share of posts (%)"
    assert spec.posts_baseline == 31.0 / 4  # 31 posts per 1h against 15-minute slices


def test_the_span_stays_24_hours_before_the_windows_end_and_a_share_axis_never_passes_100():
    spec = chart_spec([(END - STEP, 3, 1.0, 0.0)], "2026-05-28T10:00:00Z", "2026-05-28T11:00:00Z", "all", "sentiment_drop")
    end = spec.window[1]
    assert spec.span[0] == end - SPAN_S and spec.share_top == 100.0
    assert chart_spec([], END - STEP, END, "all", "sentiment_drop").lines == [Line("negative share", "tab:red", [])]


def test_baselines_are_the_notices_on_the_charted_scope_and_records_without_them_give_none():
    members = [
        {"scope": "asset:ETH", "kind": "sentiment_drop", "metric": "negative_share", "baseline": 0.197},
        {"scope": "asset:ETH", "kind": "volume_spike", "metric": "posts", "baseline": 31},
        {"scope": "all", "kind": "sentiment_drop", "metric": "negative_share", "baseline": 0.1},
        {"scope": "asset:ETH", "kind": "sentiment_surge"},  # an incident summary from before 2026-12
    ]
    assert baselines_of(members, "asset:ETH") == {"negative_share": 0.197, "posts": 31.0}
    assert baselines_of([{"scope": "all", "metric": "", "baseline": 0.0}], "all") == {}


def test_the_drawn_figure_plots_the_spec_with_gaps_and_labelled_axes():
    spec = chart_spec(POINTS, END - STEP, END, "asset:ETH", "sentiment_drop", baselines={"negative_share": 0.197})
    share_ax, volume_ax = chart_figure(spec).axes
    assert share_ax.get_ylabel() == "negative share (%)" and volume_ax.get_ylabel() == "posts per 15m"
    measured, baseline = share_ax.get_lines()
    y = list(measured.get_ydata())
    assert y[0] == 75.0 and math.isnan(y[1]) and y[2] == 25.0  # the empty slice is a gap, not 0%
    assert list(baseline.get_ydata()) == [19.7, 19.7] and baseline.get_linestyle() == "--"
    assert [bar.get_height() for bar in volume_ax.containers[0]] == [8, 0, 4]
    assert share_ax.get_ylim() == (0.0, spec.share_top)


def test_a_spikes_figure_draws_both_shares_and_the_volume_baseline():
    spec = chart_spec(POINTS, END - STEP, END, "asset:ETH", "volume_spike", baselines={"posts": 31.0}, window_s=3600)
    share_ax, volume_ax = chart_figure(spec).axes
    assert [line.get_label() for line in share_ax.get_lines()] == ["negative share", "positive share"]
    assert [list(line.get_ydata()) for line in volume_ax.get_lines()] == [[7.75, 7.75]]


def test_the_png_keeps_its_size():
    png = render_chart(POINTS, END - STEP, END, "asset:ETH", "sentiment_surge", baselines={"positive_share": 0.3})
    assert png.startswith(PNG_SIGNATURE)
    assert struct.unpack(">II", png[16:24]) == (800, 400)  # IHDR: 8x4 in at 100 dpi


def test_a_notices_chart_draws_its_roots_measures_against_the_baselines_the_notice_names(redis_server):
    """Through the delivery, on a real redis-server and a local webhook: an incident's notice carries
    the chart of its root's last 24 h with its root members' baselines (a share as it is, a volume
    per slice of the alert window's rate), not another scope's."""
    import asyncio
    import base64

    import redis

    from stream.alerts.delivery import CHART_SPAN_S, CHART_STEP_S, AlertDelivery
    from stream.alerts.grouping import Notice
    from stream.alerts.notify import Notifier, build_apprise
    from stream.contracts import Post
    from stream.store import Scored, WindowStore
    from stream.timefmt import iso
    from workers import Hook

    at = END
    posts = [Scored(Post(f"p-{i}", "eth", at - 8 * 3600 + i * 600, ("ETH",), "discord", "general"),
                    "negative" if i >= 42 or i % 5 == 0 else "neutral", 0.0) for i in range(48)]
    member = {"scope": "asset:ETH", "firing": True, "severity": "warning", "onset": iso(at - 3600)}
    notice = Notice("inc1", "asset:ETH", "firing", "new", "warning", iso(at), iso(at - 3600), False, [
        {**member, "kind": "sentiment_drop", "metric": "negative_share", "value": 0.75, "baseline": 0.197},
        {**member, "kind": "volume_spike", "metric": "posts", "value": 60.0, "baseline": 31.0},
        {**member, "scope": "all", "kind": "sentiment_drop", "metric": "negative_share", "value": 0.5, "baseline": 0.4},
    ])
    hook = Hook()

    async def go() -> list:
        redis.Redis.from_url(redis_server).flushdb()
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            await store.apply(posts, {}, posts[-1].post.created_at)
            delivery = AlertDelivery(store, Notifier(build_apprise(hook.url, None)), lambda record: None, consumer="t")
            assert await delivery._notify_notice(notice, [], ["warning"])
            return (await store.slices("asset:ETH", at - CHART_SPAN_S, CHART_STEP_S, CHART_SPAN_S // CHART_STEP_S)).tolist()
        finally:
            await store.close()

    try:
        slices = asyncio.run(go())
    finally:
        hook.close()
    (sent,) = hook.accepted
    png = base64.b64decode(sent["attachments"][0]["base64"])
    points = chart_points(slices, at - CHART_SPAN_S, CHART_STEP_S)
    assert sum(p.posts for p in points) == len(posts)

    def drawn(**kwargs) -> bytes:
        return render_chart(points, at - 3600, at, "asset:ETH", "sentiment_drop", **kwargs)

    assert png == drawn(baselines={"negative_share": 0.197, "posts": 31.0}, window_s=3600)
    assert png != drawn()  # the baselines show in the picture


def test_a_scope_with_dollar_signs_is_drawn_as_written_not_read_as_math():
    """A scope names a forum's channel or source, and `$` is common in crypto names: matplotlib read a
    title with two of them as mathtext, so "channel:a$b^$c" failed to draw (the notice went without
    its chart) and "channel:$BTC vs $ETH" came out as italic math without its dollar signs."""
    for scope in ("channel:a$b^$c", "channel:$BTC vs $ETH", r"source:pump $\frac{ $ now"):
        png = render_chart(POINTS, END - STEP, END, scope, "sentiment_drop")
        assert png.startswith(PNG_SIGNATURE), scope
    fig = chart_figure(chart_spec(POINTS, END - STEP, END, "channel:$BTC vs $ETH", "sentiment_drop"))
    (title,) = fig.texts  # the suptitle
    assert title.get_text() == "channel:$BTC vs $ETH - sentiment_drop" and not title.get_parse_math()
