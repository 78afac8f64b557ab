"""Event-time buckets, scopes and rolling windows (pure).

A post lands in one bucket (default 1 minute) of each of its scopes: `all`, `asset:<TICKER>`,
`channel:<name>`, `source:<name>`. A bucket holds the count per label, the post count and the sum of
scores. Rolling windows (15 m, 1 h, 24 h by default) are sums of the buckets they cover.

Where they live in Redis: stream/keys.py.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
import unicodedata
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Hashable, Iterable, Mapping, Sequence

from model.labels import LABELS
from stream.contracts import Post
from stream.timefmt import format_duration, setting_duration


# A slice table (WindowStore.slices): one row per run of consecutive buckets, these columns.
SLICE_FIELDS = ("n", "positive", "negative", "neutral", "score_sum", "score_sq")


class SliceCol(IntEnum):
    N = 0
    POSITIVE = 1
    NEGATIVE = 2
    NEUTRAL = 3
    SCORE_SUM = 4
    SCORE_SQ = 5


def per_post(table: Iterable[Sequence[float]], column: SliceCol) -> list[float | None]:
    """Per row of a slice table, `column` divided by the row's posts: a label's share, or the mean
    score for SCORE_SUM. The store sums a slice's buckets, so a slice weighs every post in it alike
    (an average of its minutes' shares would let a minute of one post count as much as a minute of
    a hundred). None where the slice holds no posts: a gap, not a share of 0."""
    return [float(row[column]) / float(row[SliceCol.N]) if row[SliceCol.N] else None for row in table]


@dataclass(frozen=True)
class Sample:
    """A post shown in a notification (text already truncated; escaping is the message's job)."""

    id: str
    text: str
    label: str
    score: float


def distinct_samples(samples: Iterable[Sample], n: int) -> list[Sample]:
    """The first `n` samples whose texts differ (ignoring case and surrounding space): a message
    copied again and again, or a bot's, is shown once, and the next different post takes its place."""
    out: list[Sample] = []
    seen: set[str] = set()
    for sample in samples:
        if len(out) >= n:
            break
        key = sample_key(sample)
        if key not in seen:
            seen.add(key)
            out.append(sample)
    return out


def sample_key(sample: Sample) -> str:
    """What tells two samples' texts apart for `distinct_samples`: case and spacing do not."""
    return " ".join(sample.text.split()).casefold()


def author_key(post: Post) -> str | None:
    """Who wrote the post, as the author cap counts them (store: SENTINEL_AUTHOR_CAP): the same
    name on two sources is two people. A short digest: a name may hold any character, and the key
    is stored once per author, hour and scope. None: the post names no author (never capped)."""
    if not post.author:
        return None
    source = post.source or ""
    return hashlib.blake2b(f"{len(source)}:{source}{post.author}".encode(), digest_size=8).hexdigest()


# The text cap (store: SENTINEL_TEXT_CAP) compares texts as words: links and mentions vary between
# copies of one raid text (a tracking suffix, the member it answers) and punctuation, emoji and case
# are the cheapest edits, so none of them makes a copy a new text. Digits stay: "ETH 1500" and
# "ETH 1600" are two statements.
# A bare link (`site.io/x`) is tried only where a dotted name starts (not after `a` or `a.`), its
# leading hyphens and hyphen-only labels taken along: tried at every `\b` in it, as before, one
# 10,000-character text of `a-a-a-...` or `a.a.a...` cost 1.7 s of the event loop (each try read to
# the end of the name and failed there). The words left are the same (tests/test_input_properties.py).
_LINK = re.compile(r"(?:https?://|www\.)\S+|(?<![\w-])(?<![\w-]\.)(?:-+\.)*-*\b[\w-]+(?:\.[\w-]+)+/\S*", re.IGNORECASE)
_MENTION = re.compile(r"<(?:@[!&]?|#|a?:\w+:)\d+>|@\w+")  # Discord's <@id>, <@&role>, <#channel>, <:emoji:id>; @name
_WORD = re.compile(r"\w+")
# Texts shorter than this once normalised are never text-capped: "gm", "lol", "wen moon", "thank
# you po" are the chatter of any hour, not a raid. On the Discord export before 2023, 66% of posts
# are this short; at 16 the 3-a-text cap holds back 0.31% of posts, most of them a game bot's line
# (docs/results/text_cap_threshold_pre2023.json; docs/alerts.md, the text cap).
TEXT_CAP_MIN_CHARS = 16


def normalised_text(text: str) -> str:
    """A post's text as the text cap compares it: NFKC, casefolded, links and mentions dropped,
    then its words (letters, digits, `_`) joined by single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD.findall(_MENTION.sub(" ", _LINK.sub(" ", folded))))


def text_key(text: str, min_chars: int = TEXT_CAP_MIN_CHARS) -> str | None:
    """The text cap's key for a post (store: SENTINEL_TEXT_CAP): a short digest of its normalised
    text, stored once per post in its author's and its text's cells. None: shorter than `min_chars`
    once normalised (never text-capped)."""
    words = normalised_text(text)
    if len(words) < min_chars:
        return None
    return hashlib.blake2b(words.encode(), digest_size=8).hexdigest()


def scopes_for(post: Post) -> list[str]:
    scopes = ["all", *(f"asset:{a}" for a in post.assets)]
    if post.channel:
        scopes.append(f"channel:{post.channel}")
    if post.source:
        scopes.append(f"source:{post.source}")
    return scopes


def pair_scopes_for(post: Post) -> list[str]:
    """Hidden scopes of a channel's and a source's posts about one asset (`channel:general|asset:ETH`).
    Never judged or listed; incident grouping reads them to tell whether a channel moved because of
    that asset (stream/alerts/grouping.explain). `all`'s share of an asset is the asset scope itself."""
    parents = [s for s in (f"channel:{post.channel}" if post.channel else "", f"source:{post.source}" if post.source else "") if s]
    return [f"{parent}|asset:{asset}" for parent in parents for asset in post.assets]


def channel_member(post: Post) -> str | None:
    """The post's entry in the channel registry (keys.CHANNELS_KEY) for its event-time hour:
    `<hour>|source:S|channel:C`, `<hour>|channel:C` when it names no source; None without a channel.
    Names cannot hold `|` (contracts.normal_name), so the entry reads back unambiguously
    (grouping.sole_source)."""
    if not post.channel:
        return None
    hour = bucket_start(post.created_at, 3600)
    return f"{hour}|source:{post.source}|channel:{post.channel}" if post.source else f"{hour}|channel:{post.channel}"


# The scope a channel or source name is counted under once its kind's budget of new scopes is spent
# (ScopeBudget): `channel: (other)`, `source: (other)`. The leading space is what no post's name can
# hold (contracts.normal_name strips names), so no real channel or source is it; `(other)` alone is
# one (a name `{other}` becomes it).
OVERFLOW_NAME = " (other)"
FOLDED_KINDS = ("channel", "source")


@dataclass(frozen=True)
class Folded:
    """What a ScopeBudget did to one batch: the posts to count (names folded where the budget was
    spent; the others unchanged) and, per kind, how many posts and how many distinct names it folded."""

    posts: list[Post]
    posts_folded: dict[str, int]
    names_folded: dict[str, int]


class ScopeBudget:
    """How many new channel and source scopes each kind may gain per event-time hour, `per_hour`.
    Each name a post gives becomes a scope, with its buckets, roll-ups, ids and judging state in
    Redis, a judgement on every detector round and a row on the console and in the daily report: a
    flood of distinct names (a bot posting under a fresh channel name each time) grows every one of
    those by one scope a post. Past the budget a new name's posts count in its kind's overflow
    scope (OVERFLOW_NAME) instead, and still in `all`, their assets and their other kind's scope;
    scopes already written (`known`) are never folded, and the published record keeps the name.
    Per worker and per hour of its event-time frontier (its watermark as each post was read, which a
    post stamped ahead does not move; `fold`), so a replay of
    one input folds the same names however fast it runs. The frontier's hour, not each post's own:
    posts stamped across the last two days (all on time within the dedupe window) would otherwise
    get a budget for each of those hours. 0: no budget."""

    HOURS_KEPT = 3  # hours of admitted names remembered behind the frontier's

    def __init__(self, per_hour: int) -> None:
        self.per_hour = per_hour
        self._admitted: dict[tuple[str, int], set[str]] = {}  # (kind, frontier hour) -> new scopes admitted
        self._newest = -math.inf  # the newest event time seen

    @staticmethod
    def candidates(posts: Iterable[Post]) -> set[str]:
        """The scopes a budget may fold: which of them exist is the caller's to ask (WindowStore.known_scopes)."""
        return {f"{kind}:{name}" for post in posts for kind in FOLDED_KINDS if (name := getattr(post, kind))}

    def fold(self, posts: Sequence[Post], known: Iterable[str], frontiers: Sequence[float] | None = None) -> Folded:
        """`frontiers`: each post's event-time frontier, the newest of its worker's partitions'
        watermarks once it was read (BatchProcessor), which a post stamped ahead of its partition's clock does not move; one
        stamped a day ahead would otherwise put the budget's hour there for that day. Without one
        (-inf: no watermark yet, or none given) the post's own time stands in."""
        if self.per_hour <= 0:
            return Folded(list(posts), {}, {})
        known = set(known)
        out: list[Post] = []
        counts: Counter[str] = Counter()
        names: dict[str, set[str]] = {}
        for i, post in enumerate(posts):
            at = frontiers[i] if frontiers is not None else -math.inf
            self._newest = max(self._newest, at if at > -math.inf else post.created_at)
            hour = bucket_start(self._newest, 3600)
            changes: dict[str, str | None] = {}
            for kind in FOLDED_KINDS:
                name = getattr(post, kind)
                scope = f"{kind}:{name}"
                if not name or name == OVERFLOW_NAME or scope in known:
                    continue
                admitted = self._admitted.setdefault((kind, hour), set())
                # Admitted this hour or in one remembered before it: a scope already, whether or not
                # its write has registered it yet (`known`), so batching changes nothing.
                if any(scope in earlier for (held, _), earlier in self._admitted.items() if held == kind):
                    continue
                if len(admitted) < self.per_hour:
                    admitted.add(scope)
                    continue
                changes[kind] = OVERFLOW_NAME
                counts[kind] += 1
                names.setdefault(kind, set()).add(name)
            out.append(replace(post, channel=changes.get("channel", post.channel), source=changes.get("source", post.source)) if changes else post)
        self._forget_old()
        return Folded(out, dict(counts), {kind: len(found) for kind, found in names.items()})

    def _forget_old(self) -> None:
        if self._admitted:
            newest = max(hour for _, hour in self._admitted)
            self._admitted = {k: v for k, v in self._admitted.items() if k[1] > newest - self.HOURS_KEPT * 3600}


def is_pair_scope(scope: str) -> bool:
    return "|asset:" in scope


def matches_scope(scope: str, pattern: str) -> bool:
    """A scope against a silence's, override's or filter's pattern: a glob (`asset:*`), or the
    scope's own name, which matches itself even where it reads as a glob (`channel:[EN] general`)."""
    return scope == pattern or fnmatch.fnmatchcase(scope, pattern)


# The most steps (one pattern on one character, from one state) `common_matches` takes: 17 s of a
# loaded 2-core machine (load 3) for 60 globs over a wide alphabet, which ran past ten minutes with
# the 50,000 states alone; a list of 56 patterns over three prefixes needs about half of it (5.6 s there).
COMMON_MATCHES_WORK = 30_000_000


class TooIntertwined(ValueError):
    """The patterns' common matches take more states than `common_matches` reads."""


def _glob_tokens(pattern: str) -> list[str]:
    """A glob as fnmatch reads it, one token per character it consumes: `*`, `?`, a bracket
    expression (its source, `[a-c]`, `[!x]`, found as `fnmatch.translate` finds its end), or a
    literal character (an unclosed `[` is one)."""
    tokens, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j < n:
                tokens.append(pattern[i:j + 1])
                i = j + 1
                continue
        if not (c == "*" and tokens and tokens[-1] == "*"):  # `**` is `*`
            tokens.append(c)
        i += 1
    return tokens


def _takes(token: str, char: str) -> bool:
    if token in ("*", "?"):
        return True
    if len(token) > 1:  # a bracket expression: fnmatch itself says whether it takes the character
        return fnmatch.fnmatchcase(char, token)
    return token == char


def _closed(tokens: list[str], places: Iterable[int]) -> frozenset[int]:
    """The places in `tokens` reachable without a character: past each `*` (it takes none too)."""
    out, todo = set(), list(places)
    while todo:
        k = todo.pop()
        if k not in out:
            out.add(k)
            if k < len(tokens) and tokens[k] == "*":
                todo.append(k + 1)
    return frozenset(out)


def common_matches(patterns: Sequence[str], limit: int = 50_000, work: int = COMMON_MATCHES_WORK) -> list[tuple[frozenset[str], str]]:
    """Every set of `patterns` that one name matches together as globs (fnmatch: `*`, `?`, `[..]`),
    each with the shortest such name: `asset:B*` and `*:BTC` share `asset:B:BTC`-like names and
    `asset:BTC`, though neither pattern matches the other as written. Exact, not a guess from the
    patterns' own names: the globs are read as one automaton (a set of places in each pattern per
    state), over one character of each class that tells the patterns' characters and brackets
    apart (each character they name, one between each two of those, one beyond). A name equal to
    a pattern matches it as well (`matches_scope`): that case is the pattern's own name's, not
    this. TooIntertwined past `limit` states, or past `work` steps of one pattern on one character:
    the states alone bound neither the time nor the memory (each is tried with every character of
    the alphabet, for every pattern), and 16 keyword globs (`channel:*pump*`...) reached 50,000 states
    in 45 s of a worker's start on a loaded machine before this bound (session 57's review).
    `detector.override_problems` reads it only where the values given can break the hysteresis."""
    tokens = [_glob_tokens(p) for p in patterns]
    named = sorted({ord(c) for p in patterns for c in p} | {ord("a")})
    probes = set(named)
    for low, high in zip(named, named[1:]):
        if high - low > 1:
            probes.add(low + 1)
    probes.add(named[-1] + 1)
    alphabet = [chr(c) for c in sorted(probes) if c <= 0x10FFFF and not 0xD800 <= c <= 0xDFFF]
    start = tuple(_closed(t, [0]) for t in tokens)
    seen: dict[tuple[frozenset[int], ...], str] = {start: ""}
    queue = deque([start])
    found: dict[frozenset[str], str] = {}
    moves: list[dict[tuple[frozenset[int], str], frozenset[int]]] = [{} for _ in tokens]  # each pattern's steps, read once

    def move(i: int, places: frozenset[int], char: str) -> frozenset[int]:
        if not places:
            return places
        key = (places, char)
        if key not in moves[i]:
            t = tokens[i]
            moves[i][key] = _closed(t, [k + (t[k] != "*") for k in places if k < len(t) and _takes(t[k], char)])
        return moves[i][key]

    spent = 0
    while queue:
        state = queue.popleft()
        name = seen[state]
        spent += len(alphabet) * len(tokens)
        if spent > work:
            raise TooIntertwined(f"{len(patterns)} patterns overlap in more ways than {work} steps read")
        matched = frozenset(p for p, t, places in zip(patterns, tokens, state) if len(t) in places)
        if matched and matched not in found:
            found[matched] = name
        for char in alphabet:
            step = tuple(move(i, places, char) for i, places in enumerate(state))
            if step not in seen and any(step):
                if len(seen) >= limit:
                    raise TooIntertwined(f"{len(patterns)} patterns overlap in more than {limit} ways")
                seen[step] = name + char
                queue.append(step)
    return list(found.items())


def bucket_start(ts: float, bucket_s: int) -> int:
    return int(ts // bucket_s) * bucket_s


def dedupe_window_s(retention: str, window: str) -> int:
    """SENTINEL_DEDUPE_WINDOW in seconds: the retention when empty, never beyond it (a post older than
    the retention would land in buckets already trimmed)."""
    retention_s = setting_duration("retention", retention)
    if not window.strip():
        return retention_s
    window_s = setting_duration("dedupe_window", window)
    if not 0 < window_s <= retention_s:
        raise ValueError(f"SENTINEL_DEDUPE_WINDOW must be above zero and at most SENTINEL_RETENTION ({retention_s} s)")
    return window_s


def pair_retention_s(retention: str, pair_retention: str, reference_s: int) -> int:
    """SENTINEL_PAIR_RETENTION in seconds, capped at the retention. Incident grouping reads the pair
    scopes from `reference_s` before a parent's onset, so they must outlive that span; what is kept
    beyond it is how far before the boundary an onset may lie and still be read whole."""
    retention_s = setting_duration("retention", retention)
    kept = min(setting_duration("pair_retention", pair_retention), retention_s)
    if kept <= reference_s:
        raise ValueError(f"SENTINEL_PAIR_RETENTION ({kept} s, capped at SENTINEL_RETENTION) must exceed incident grouping's "
                         f"reference span ({reference_s} s)")
    return kept


@dataclass(frozen=True)
class Kept:
    """How far back the readers of the windows (alert judging, incident grouping) still read, so a
    write trims no bucket they will read: a scope's buckets go no further than `line(scope)`.

    Trimming follows the slowest input partition, and judging can run far behind it: a replay of
    sparse chatter moves a partition by days in one batch, and a scope catches up at most
    `engine.MAX_BOUNDARIES` boundaries a round. A bin the sequential detector took into its baseline
    and then found trimmed when it left would read as empty, so the baseline kept it for good; and
    whether it was trimmed depended on where the batches were cut, so two replays of one input gave
    different records. `scopes`: per scope, the first bucket its next judgement reads (the engine's
    `judged` set); `every`: for every scope, what grouping may still read (a retention before the
    correlation cursor); `pairs`: the same for the hidden pair scopes (a pair retention before it).
    Missing or infinite: no reader holds that scope back."""

    scopes: Mapping[str, float] = field(default_factory=dict)
    every: float = math.inf
    pairs: float = math.inf

    def line(self, scope: str) -> float:
        if is_pair_scope(scope):
            return self.pairs
        return min(self.scopes.get(scope, math.inf), self.every)


def kept_trim(trim_before: int, line: float, bucket_s: int) -> int:
    """A write's trim line for one scope: `trim_before`, or the bucket of `line` where a reader
    still needs it (`Kept`); whole buckets only."""
    return trim_before if line == math.inf else min(trim_before, bucket_start(line, bucket_s))


def ended_kept(keep: Kept, newest: Mapping[str, float], lookback_s: int, bucket_s: int) -> Kept:
    """`Kept` once the input has ended and judging is through it (`AlertEngine.settle(ended=True)`):
    `keep`, with no scope's line later than its newest bucket less `lookback_s` (the window and
    baseline). `newest`: each scope's newest bucket start, which every run of one input has.
    A scope judged past its newest post before the end left the set of scopes to judge at the
    boundary its last round reached, and that is where the batches were cut and which partitions
    counted as idle (wall clock) then; its next judgement would read from there less `lookback_s`.
    Its newest bucket less `lookback_s` is at or before that, so it keeps what judging would read,
    the same in every run. A scope judged through the end at settling holds at its last boundary
    less `lookback_s`, the same in every run too; grouping's lines (`every`, `pairs`) stay."""
    scopes = dict(keep.scopes)
    for scope, start in newest.items():
        scopes[scope] = min(scopes.get(scope, math.inf), bucket_start(start, bucket_s) - lookback_s)
    return Kept(scopes, every=keep.every, pairs=keep.pairs)


def pair_horizon(watermark: float, low: float, pair_retention_s: int, retention_s: int, horizon: float | None = None) -> int:
    """The event time before which the pair scopes' buckets and ids are dropped: a pair retention
    behind the slowest input partition (`low`), whose boundaries grouping is still reading, but
    never more than a retention behind the newest post (or behind `horizon`, the buckets' own
    edge, `trim_horizon`, where the caller knows it): a partition gone quiet holds them back that
    far at most."""
    bound = watermark - retention_s if horizon is None else min(horizon, watermark - retention_s)
    return int(max(min(watermark, low) - pair_retention_s, bound))


# How long a partition whose last write left posts unread (plag:<p> > 0) may go unwritten and still
# hold the others back (SENTINEL_ALERT_LAGGING_PARTITION). Idle should mean "nothing left to read":
# in a catch-up Faust reads one partition at a time in large chunks, so one with a backlog goes
# unwritten for minutes while another races hours ahead, and taking it as idle judges boundaries
# (final) without its posts and trims its baselines. Capped, not forever: a partition that is never
# read again (the topic shrank, the stats outlived its consumer) would otherwise mute every alert
# with no alert of its own (the lag metric covers assigned partitions only). A dead worker's
# partitions are handed over within the group's session timeout; SentinelWorkersDown (5 min) and
# SentinelFallingBehind (10 min) have fired well before this.
LAGGING_IDLE_S = 1800.0


def frontier(stats: Mapping[str, float], partitions: int, now: float, idle_s: float, ended: bool = False,
             lagging_idle_s: float = LAGGING_IDLE_S) -> float:
    """The event time every live partition has reached, from the stats hash (pwm:<p>, pseen:<p>,
    plag:<p>). A partition is idle, and does not hold the others back, when nothing is left to read
    on it: its last write left no lag (plag:<p> 0, or unknown: never heard from, or stats written
    before the field) and it has not been written for `idle_s` of wall time (Flink's idle sources).
    One whose last write left posts unread is being read however long since (Kafka Streams' rule,
    KIP-695), up to `lagging_idle_s` (LAGGING_IDLE_S says why a cap).
    `ended`: the input has ended (a replay), so no partition holds the others back: the newest
    post any of them carried."""
    reported = {int(k.split(":", 1)[1]): v for k, v in stats.items() if k.startswith("pwm:")}
    if not reported:
        return float("-inf")
    if ended:
        return max(reported.values())
    seen = {int(k.split(":", 1)[1]): v for k, v in stats.items() if k.startswith("pseen:")}
    lag = {int(k.split(":", 1)[1]): v for k, v in stats.items() if k.startswith("plag:")}
    since = stats.get("pwm_since", now)
    live = []
    for p in range(max(partitions, max(reported) + 1)):
        last_report = seen.get(p, since)
        patience = max(idle_s, lagging_idle_s) if p in reported and lag.get(p, 0) > 0 else idle_s
        if now - last_report > patience:
            continue  # idle: does not hold the others back
        if p not in reported:
            return float("-inf")  # not heard from yet, and not idle long enough to be ignored
        live.append(reported[p])
    return min(live) if live else max(reported.values())


def partitions_outgrown(configured: int, assigned: Iterable[int], topic_count: int | None) -> int | None:
    """How many partitions the posts topic has now, where that is more than `configured`
    (SENTINEL_PARTITIONS); None where the count still holds. Known from the topic's metadata
    (`topic_count`, None where it could not be read) and from the partitions assigned (one
    numbered N or more means the topic has more than N). `frontier` counts partitions
    0..configured-1 and those reported since: a partition added to the topic that no worker has
    written for yet is neither, so boundaries would be judged final, and baselines trimmed, without
    its posts. Partitions are only ever added, so fewer than configured here is a metadata read
    that failed, not a shrunken topic (the worker's start-up check covers a count set too high)."""
    seen = max([topic_count or 0, *(p + 1 for p in assigned)])
    return seen if seen > configured else None


def partitions_mismatch(topic: str, configured: int, count: int, consequence: str, *, counted: bool = True) -> str:
    """The one line that says the posts topic's partition count is not SENTINEL_PARTITIONS: the
    start-up check's refusal and a running worker's exit at a rebalance (`consequence` says which)
    word it alike, so the operator greps one line and reads one fix. `counted`: `count` was read
    from the broker; otherwise only an assigned partition says the topic has at least that many,
    and naming it as the count to set would send the operator round a second restart."""
    if counted:
        return (f"topic {topic} has {count} partitions but SENTINEL_PARTITIONS is {configured}: {consequence}; "
                f"set SENTINEL_PARTITIONS={count} and roll the workers (docs/operations.md, \"Scale\")")
    return (f"topic {topic} has at least {count} partitions (its count could not be read) but SENTINEL_PARTITIONS is "
            f"{configured}: {consequence}; set SENTINEL_PARTITIONS to the topic's partition count and roll the workers "
            f"(docs/operations.md, \"Scale\")")


def trim_horizon(watermark: float, floor: float, retention_s: int) -> float:
    """The event time before which buckets may go: a retention behind `floor`, the event time every
    live input partition has reached (`frontier`), and never later than a retention behind the
    newest post. Judging reads a boundary's baseline behind the slowest live partition, so trimming
    behind the newest post alone would empty the baselines of a partition read days behind another
    (a catch-up) and drop its posts as late. -inf where no floor is known (a partition of the topic
    not heard from yet and not idle): nothing goes by event time, only by the buckets' wall-clock
    TTL (the watermark-low rule of Flink's min over inputs with idleness)."""
    if floor == float("-inf") or watermark == float("-inf"):
        return float("-inf")
    return min(watermark, floor) - retention_s


def is_late(created_at: float, watermark: float, limit_s: int) -> bool:
    """Further behind `watermark` than `limit_s`. Against its partition's watermark and the dedupe
    window: its id may be forgotten, so a redelivery could not be told from a first delivery.
    Against the trim horizon (`trim_horizon`, limit 0): its buckets may be gone."""
    return created_at < watermark - limit_s


# How many of a partition's latest posts vote on its watermark (PartitionClock): enough that a
# source with a third of the posts does not reach a majority of them by chance (65 of 128 posts is
# 4 standard deviations above its mean), few enough that a source that stopped stops voting soon.
CLOCK_POSTS = 128
# A source with no post among the partition's latest CLOCK_SILENT_POSTS stops voting: a scraper
# that died would otherwise hold the watermark until the other sources outvote its old posts.
CLOCK_SILENT_POSTS = 32
# A jump of the reference further than max_ahead at once, and its first value, must be backed by
# this many posts besides two thirds of the votes: after a restart the votes are few, and two posts
# of a fast source are a majority of three; a replay's first line may be the fast source's.
CLOCK_JUMP_POSTS = 16


@dataclass
class SourceClock:
    """One source's event time as its posts on one partition tell it."""

    at: float = float("-inf")  # its newest post, but for a lone jump not yet confirmed
    pending: float | None = None  # a post more than max_ahead past `at`, waiting for the source's next one
    pending_key: Hashable = None  # that post's key (its id), for saying which post it was
    last: int = 0  # the partition's post count at its latest post
    behind: int | None = None  # the partition's post count when `at` was last at or behind the reference


class PartitionClock:
    """An input partition's event-time watermark, which one bad clock cannot carry off.

    The newest post is not the watermark: posts are partitioned by id, so every source's posts share
    every partition, and one source stamping its posts hours ahead (local time written as UTC) would
    put every partition's watermark hours ahead of the rest, whose posts would then all be judged
    late. Instead each source (the post's `source`; absent is one source of its own) keeps a clock
    on the partition, its newest post, and the partition's `reference` is the newest time that
    sources holding more than half of the partition's last `posts` posts have all reached: a
    weighted median, so a minority of posts cannot move it (NTP's rule that a minority of clocks
    does not set the time). A tie goes to the slower clock. A source's lone post more than
    `max_ahead_s` past its clock (or past the reference, for a source's first post once the
    reference is known) moves nothing until the source's next post confirms it (at or past it, less
    max_ahead): a clock bug in one post moves no clock, a lull that ends moves it one post late. A
    jump of the reference further than max_ahead, and its first value, need two thirds of the votes
    and `jump_posts` posts behind them: a partition has no watermark until then (its first post
    may be the fast source's), and a clock that starts from a stored `mark` starts from there.

    The watermark (`mark`) is the newest clock of a source that agrees with the reference: at most
    max_ahead past it, and at or behind it at some post among the partition's latest `silent_posts`.
    Honest sources fall back to the reference whenever the majority posts after them, so the
    watermark is the newest post, as if there were one clock, and judging waits for no majority; a
    source stamping an hour or more ahead never does, and is left out. The watermark never moves
    back.

    Posts keep their own time; `ahead` says which ones run more than max_ahead past the reference
    (they are counted where they say, and judged when the stream gets there). Everything here is a
    function of the partition's posts in offset order (and the `mark` it starts from), so any
    worker reading the partition reaches the same watermarks."""

    def __init__(self, max_ahead_s: float, mark: float = float("-inf"), posts: int = CLOCK_POSTS,
                 silent_posts: int = CLOCK_SILENT_POSTS, jump_posts: int = CLOCK_JUMP_POSTS):
        if max_ahead_s <= 0 or not 0 < silent_posts <= posts:
            raise ValueError("max_ahead must be longer than zero, and 0 < silent_posts <= posts")
        self.max_ahead_s = max_ahead_s
        self.mark = mark  # the watermark
        self.reference = mark  # what sources holding most of the latest posts agree on (a restart: the stored watermark)
        self.posts = posts
        self.silent_posts = silent_posts
        self.jump_posts = jump_posts
        self._read = 0  # posts taken
        self._recent: deque[str] = deque()  # the latest posts' sources, oldest first
        self._votes: Counter[str] = Counter()
        self._clocks: dict[str, SourceClock] = {}

    def observe(self, created_at: float, source: str | None, key: Hashable = None) -> list[Hashable]:
        """Take the partition's next post (offset order; `key` names it, e.g. its id) and move the
        reference and the watermark (`mark`). Returns the keys of the posts this showed to be
        ahead, each once: this one, where it is more than max_ahead past the reference and its
        source's clock stands by it (a source running fast), and a lone post of its source that
        this one did not follow (a clock bug). A lone post that its source's next post follows (the
        first after a lull) is not ahead."""
        name = source or ""
        self._read += 1
        self._recent.append(name)
        self._votes[name] += 1
        if len(self._recent) > self.posts:
            gone = self._recent.popleft()
            self._votes[gone] -= 1
            if not self._votes[gone]:  # no post of it left among the latest: it stops voting
                del self._votes[gone]
                self._clocks.pop(gone, None)
        clock = self._clocks.setdefault(name, SourceClock())
        clock.last = self._read
        known = clock.at if clock.at > float("-inf") else self.reference
        found: list[Hashable] = []
        if clock.pending is not None and created_at >= clock.pending - self.max_ahead_s:
            clock.at, clock.pending = max(clock.at, created_at, clock.pending), None  # two posts agree: the source moved on
        elif known == float("-inf") or created_at <= known + self.max_ahead_s:
            if clock.pending is not None:  # its next post did not follow it there: a lone post from the future
                found.append(clock.pending_key)
                clock.pending = None
            clock.at = max(clock.at, created_at)
        else:
            if clock.pending is not None:
                found.append(clock.pending_key)
            clock.pending, clock.pending_key = created_at, key
        self._advance()
        if clock.pending is None and self.ahead(created_at):
            found.append(key)
        return found

    def ahead(self, created_at: float) -> bool:
        """Stamped more than max_ahead past the reference."""
        return self.reference > float("-inf") and created_at > self.reference + self.max_ahead_s

    def _advance(self) -> None:
        live = [(s, c) for s, c in self._clocks.items() if self._read - c.last < self.silent_posts]
        voting = sorted(((c.at, self._votes[s]) for s, c in live), reverse=True)
        known = self.reference > float("-inf")
        majority, _ = _quorum(voting, 1, 2)
        if known and majority <= self.reference + self.max_ahead_s:
            self.reference = max(self.reference, majority)
        else:
            # Further than max_ahead at once, or the first time: only as far as sources of two thirds
            # of the votes have come (a fast source that a run of its posts gave a bare majority
            # moves it no further than the rest), and with jump_posts posts behind it (after a
            # restart, when the votes are few; at the start, when the first posts may all be the
            # fast source's).
            most, held = _quorum(voting, 2, 3)
            if (known and most <= self.reference + self.max_ahead_s) or held >= self.jump_posts:
                self.reference = max(self.reference, most)
        if self.reference == float("-inf"):
            return
        lead = self.reference
        for _, c in live:
            if c.at <= self.reference:
                c.behind = self._read
            elif c.at <= self.reference + self.max_ahead_s and c.behind is not None and self._read - c.behind < self.silent_posts:
                lead = max(lead, c.at)
        self.mark = max(self.mark, lead)


def _quorum(ranked: list[tuple[float, int]], num: int, den: int) -> tuple[float, int]:
    """The newest time that sources holding more than num/den of the votes have all reached, and
    the votes they hold (-inf, 0 where none). `ranked`: (clock, votes) per source, newest first."""
    total, held = sum(votes for _, votes in ranked), 0
    for at, votes in ranked:
        held += votes
        if den * held > num * total:
            return at, held
    return float("-inf"), 0


@dataclass(frozen=True)
class WindowStats:
    scope: str
    window_s: int
    start: int
    end: int
    posts: int
    positive: int
    negative: int
    neutral: int
    score_sum: float

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.posts if self.posts else 0.0

    def share(self, label: str) -> float:
        return getattr(self, label) / self.posts if self.posts else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "window": format_duration(self.window_s),
            "start": self.start,
            "end": self.end,
            "posts": self.posts,
            "labels": {label: getattr(self, label) for label in LABELS},
            "mean_score": round(self.mean_score, 6),
        }


def aggregate(scope: str, window_s: int, end: int, buckets: Iterable[Mapping[str, str]]) -> WindowStats:
    """Sum bucket hashes (as Redis returns them: field -> string) into one window."""
    totals = {"n": 0, "positive": 0, "negative": 0, "neutral": 0}
    score = 0.0
    for bucket in buckets:
        for name in totals:
            totals[name] += int(bucket.get(name, 0) or 0)
        score += float(bucket.get("score_sum", 0.0) or 0.0)
    return WindowStats(scope, window_s, end - window_s, end, totals["n"], totals["positive"], totals["negative"], totals["neutral"], score)
