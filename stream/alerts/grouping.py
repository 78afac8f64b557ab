"""One incident per event (pure, no I/O): the transitions of many (scope, kind) alerts grouped into
incidents, and when the risk team is told about them.

An incident has a root scope and member scopes. The root is the most specific explanation of the
event: an asset before a channel, a channel before a source, a source before `all`. A parent scope
(all, source:, channel:) joins a firing asset's incident when that asset explains its move
(`explain`: the asset carries most of the parent's excess posts of the label since the parent's
onset, and the parent without the asset's posts is quiet; Adtributor's explanatory power, and
the explain-away test of ../shared/design/detection.md). `all` moved by several assets at once, no
one of which explains it, roots a market-wide incident listing them. Every kind of one root
(sentiment_drop with volume_spike on asset:ETH) belongs to one incident. Parents an asset explains
before it has fired (a classifier's errors dilute its move, and they have more posts) share one
incident, which the asset roots when it fires (`explained_by`). When no asset explains a parent's
move (most chatter names none), the same test asks the channels and sources firing in it
(`nests`): `all` by any of them, a source by a channel whose posts in the span are all that
source's (`sole_source`; `channel:general` is one scope for every source with a `general`), the
channel before the source. So a channel, its source and `all` moving on the same posts (one
channel of one source) are one incident rooted at the channel, not three.

Notifications follow Alertmanager's grouping, in event time so a replay notifies as the live run
did: the first waits `group_wait` so members can join; after it, an update goes out at most every
`group_interval`, and only when the news is worth one: another kind on the root, another asset in a
market-wide move, or a higher severity (a parent joining because the root explains it is listed in
the next notice but does not cause one: that is what turned one event into a wall of messages); a still-firing,
unacknowledged incident is repeated every `repeat_interval` while its root fires; one resolved
message closes it. When the root has resolved, members still firing get `group_interval` to resolve
too. Those still firing then are checked (`still_tail`): one that has not moved on its own since
the root resolved (its posts of the label since then within its rate before the onset) is the
event's tail (a channel's detector is slower to clear than the asset's: its swing is diluted by
the other assets' posts; an asset of a market-wide move clears after `all`, whose posts it is a
part of); one that has moved becomes an incident of its own (nothing is swallowed). With only the
tail left, the incident is told over then (`over_told`): the tail's records go out under its id
without a notice, its members are checked again every `group_interval` (one that moves leaves as
above), and a new firing on the root is a new incident; nothing that is news joins an incident
told over (it would go out under an id nobody is told of again).

Every transition record is still published (with `incident_id` and `root_scope`); only the
root's records carry a notification, so members' records say `notified: false`.

`advance` is a pure function of the state, one boundary's transitions and the explanations the
shell computed for them (`questions` lists what it must compute), so the worker that holds the
correlation cursor (stream/alerts/correlator.py) and the in-memory simulation agree.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from stream.alerts.incidents import SEVERITY_RANK, AlertRecord, ranked
from stream.stored import from_stored
from stream.timefmt import epoch, iso

PRECEDENCE = {"asset": 0, "channel": 1, "source": 2, "all": 3}
# The label whose posts a kind is about: its excess is what an explanation must account for.
LABEL_OF_KIND = {"sentiment_drop": "negative", "sentiment_surge": "positive", "volume_spike": "n"}


@dataclass(frozen=True)
class GroupConfig:
    group_wait_s: int = 300
    group_interval_s: int = 900
    repeat_interval_s: int = 4 * 3600
    # The asset carries most of the parent's excess posts of the label (Adtributor's explanatory
    # power, here for one element: a clear majority)...
    explain_share: float = 0.6
    # ... and the parent without it could not have fired on its own: its excess below this Poisson z.
    # A chart fires at b = 14 nats, which a Poisson excess reaches near z = sqrt(2 b) = 5.3; noise in
    # the rest of `all` reaches z = 3 often enough over a long swing to split one event in two.
    quiet_z: float = 4.0
    reference_s: int = 6 * 3600  # the span before the onset that gives the expected rate

    def __post_init__(self) -> None:
        if min(self.group_wait_s, self.group_interval_s, self.repeat_interval_s) < 0:
            raise ValueError("group wait, group interval and repeat interval must not be negative")
        if not 0.5 < self.explain_share <= 1.0:
            raise ValueError("the explaining share must be above one half (and at most 1)")


def rank(scope: str) -> int:
    return PRECEDENCE.get(scope.split(":", 1)[0], 1)


def is_asset(scope: str) -> bool:
    return scope.startswith("asset:")


def pair_scope(parent: str, asset: str) -> str:
    """The hidden scope of a parent's posts about one asset (stream/windows.pair_scopes_for)."""
    return asset if parent == "all" else f"{parent}|{asset}"


def nests(parent: str, part: str) -> bool:
    """Whether `part`, a channel or a source, may explain non-asset `parent`'s move when no asset
    does: any of them `all`'s (its posts are all in `all`, so its own scope is its share), a
    channel a source's (when the channel's posts are all that source's: `sole_source`). A channel
    has no such part; a source is no part of a channel."""
    kind = part.split(":", 1)[0]
    if part == parent or kind not in ("channel", "source"):
        return False
    return parent == "all" or (parent.startswith("source:") and kind == "channel")


def sole_source(members: Iterable[str], channel: str) -> str | None:
    """The one source whose posts `channel` holds, from the channel registry's members over the
    hours read (windows.channel_member: `<hour>|source:S|channel:C`, or `<hour>|channel:C` for a
    post that named no source); None when it holds several sources' posts, or posts of none.
    A channel read as a source's part must hold that source's posts alone, or another source's
    move in a channel of the same name would explain it."""
    sources = {rest.rpartition("|")[0] for rest in (m.split("|", 1)[1] for m in members) if rest.rpartition("|")[2] == channel}
    return sources.pop() if len(sources) == 1 and "" not in sources else None


# --- explanations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Posts of a kind's label in the reference span before the onset and since the onset."""

    before: float
    since: float


@dataclass(frozen=True)
class Question:
    """Is `parent`'s `kind` (firing since `onset`) explained by one of `candidates` (asset scopes,
    then the channels and sources firing that `nests` puts in it)?
    With `since` (a tail check, `tail_questions`): has `parent` moved on its own since `since`, when
    its incident's root (the one candidate: an asset, a parent, or `all`) resolved? Read from `parent` alone: its rate before `onset`
    against its posts since `since`, so no pair scope, and no `within`, is involved."""

    parent: str
    kind: str
    onset: int
    boundary: int
    candidates: tuple[str, ...]
    since: int | None = None

    def span(self) -> tuple[int, int]:
        """The read that `Counts.since` counts: from the onset, or from `since` for a tail check."""
        return (self.onset if self.since is None else self.since), self.boundary


@dataclass(frozen=True)
class Explanation:
    # The one asset that explains the parent's move or, when no asset does, the one channel or
    # source (`nests`); a tail check: the root it is the tail of.
    asset: str = ""
    market: tuple[str, ...] = ()  # or: the assets that explain `all`'s move together
    # Why, for the logs (not part of the answer): the parent's excess posts, the largest asset share
    # of it and that asset, and the Poisson z of the parent without that asset (a tail check: the
    # member's z since its root resolved).
    excess: float = field(default=0.0, compare=False)
    top: str = field(default="", compare=False)
    share: float = field(default=0.0, compare=False)
    rest_z: float = field(default=0.0, compare=False)


def excess(counts: Counts, before_s: float, since_s: float) -> float:
    return counts.since - counts.before / before_s * since_s if before_s > 0 else counts.since


def explain(question: Question, parent: Counts, pairs: Mapping[str, Counts], config: GroupConfig, market: bool = True) -> Explanation:
    """The explain-away test on one parent's move (see the module docstring): the parts in
    `pairs` are tried the most specific first (a channel before a source), then by share.
    `market`: several together may explain it (assets; not channels and sources)."""
    before_s, since_s = config.reference_s, max(question.boundary - question.onset, 1)
    total = excess(parent, before_s, since_s)
    if total <= 0:
        return Explanation(excess=round(total, 1))
    shares = {a: excess(c, before_s, since_s) / total for a, c in pairs.items()}
    ranked = sorted(shares, key=lambda a: (rank(a), -shares[a], a))
    top = min(shares, key=lambda a: (-shares[a], rank(a), a), default="")
    why: dict[str, Any] = {"excess": round(total, 1)}
    if top:
        why.update(top=top, share=round(shares[top], 3))
    for asset in ranked:
        if shares[asset] < config.explain_share:
            continue
        rest = Counts(parent.before - pairs[asset].before, parent.since - pairs[asset].since)
        expected = max(rest.before / before_s * since_s, 1.0)
        rest_z = (rest.since - expected) / math.sqrt(expected)
        if asset == top:
            why["rest_z"] = round(rest_z, 2)
        if rest_z < config.quiet_z:
            return Explanation(asset=asset, **why)
    movers = tuple(sorted(a for a, s in shares.items() if s > 0))
    if market and len(movers) >= 2 and sum(shares[a] for a in movers) >= config.explain_share:
        return Explanation(market=movers, **why)
    return Explanation(**why)


def still_tail(question: Question, parent: Counts, config: GroupConfig) -> Explanation:
    """A tail check: the member is the event's tail (its root, the one candidate, is named) if
    its posts of the label since the root resolved are no more than its rate before the onset
    allows (z under `quiet_z`); otherwise it has moved on its own since. The z counts the noise of
    the rate as well as of the count: checked hours after the onset, the span since is as long as
    the reference, and a reference that came out low by chance made a quiet channel look moved."""
    start, end = question.span()
    ratio = max(end - start, 1) / config.reference_s
    expected = max(parent.before * ratio, 1.0)
    z = (parent.since - expected) / math.sqrt(expected + ratio * ratio * parent.before)
    why: dict[str, Any] = {"excess": round(parent.since - expected, 1), "top": question.candidates[0], "rest_z": round(z, 2)}
    return Explanation(asset=question.candidates[0], **why) if z < config.quiet_z else Explanation(**why)


def within(question: Question, earliest_onset: int) -> Question:
    """The question read from `earliest_onset` at the latest: the pair scopes are kept for less than
    the windows (SENTINEL_PAIR_RETENTION), and a parent and its pairs must be read over the same
    spans. An onset that old is rare (a detector reports a change within the hour or two after it),
    and the test then asks whether one asset explains the move's most recent part."""
    if question.onset >= earliest_onset:
        return question
    return replace(question, onset=min(earliest_onset, question.boundary))


def reads_pairs(question: Question) -> bool:
    """Whether the question reads a hidden pair scope: a channel's or a source's share of an asset
    (`all`'s is the asset's own scope; a tail check reads its parent alone)."""
    return question.since is None and question.parent != "all" and any(is_asset(c) for c in question.candidates)


def readable(question: Question, retention_s: int, pair_retention_s: int, config: GroupConfig) -> Question:
    """The question as the windows can answer it, from its boundary alone: read no further back
    than a retention before the boundary, or a pair retention where it reads a pair scope
    (`within`; a tail check's span since its root resolved starts there at the earliest). The
    writes keep every scope that far behind the correlation cursor (windows.Kept), which is
    behind every boundary grouped next, so each read is whole. Until session 41 the limit was
    where the writes had trimmed the pair scopes when the question was read, which in a replay
    depends on how far the partitions had run ahead of grouping: the same input gave different
    answers."""
    earliest = question.boundary - (pair_retention_s if reads_pairs(question) else retention_s)
    found = within(question, earliest + config.reference_s)
    if found.since is not None and found.since < earliest:
        found = replace(found, since=min(earliest, found.boundary))
    return found


def _asks_source_about_channels(question: Question) -> bool:
    return question.since is None and question.parent.startswith("source:") and any(c.startswith("channel:") for c in question.candidates)


def registry_span(question: Question, config: GroupConfig) -> tuple[int, int] | None:
    """The hours of the channel registry a question needs (exclusive bounds on the entries' hour
    starts: every hour overlapping its reads), or None: it asks no source about a channel."""
    if not _asks_source_about_channels(question):
        return None
    return question.onset - config.reference_s - 3600, question.boundary


def parts_readable(question: Question, members: Iterable[str]) -> Question:
    """The question without the channels that cannot be read as its source's part: those whose
    posts in the hours read (`members`, registry_span) are not that source's alone (`sole_source`)."""
    if not _asks_source_about_channels(question):
        return question
    members = list(members)
    kept = tuple(c for c in question.candidates if not c.startswith("channel:") or sole_source(members, c) == question.parent)
    return question if kept == question.candidates else replace(question, candidates=kept)


def explanations(asked: Sequence[Question], counts: Callable[[Question, str], Counts], config: GroupConfig) -> dict[tuple[str, str], Explanation]:
    """Every question's answer, by (parent, kind), from `counts(question, scope)` (the parent's and
    each candidate's pair scope). A parent asked twice keeps the answer that names an asset."""
    out: dict[tuple[str, str], Explanation] = {}
    for q in asked:
        if q.since is not None:
            found = still_tail(q, counts(q, q.parent), config)
        else:
            parent = counts(q, q.parent)
            found = explain(q, parent, {a: counts(q, pair_scope(q.parent, a)) for a in q.candidates if is_asset(a)}, config)
            parts = [c for c in q.candidates if nests(q.parent, c)]
            if parts and not found.asset and not found.market:
                # No asset, alone or with others: a channel or a source, read from its own scope.
                nested = explain(q, parent, {c: counts(q, c) for c in parts}, config, market=False)
                found = nested if nested.asset else found
        previous = out.get((q.parent, q.kind))
        if previous is None or (not previous.asset and found.asset):
            out[(q.parent, q.kind)] = found
    return out


# --- incidents --------------------------------------------------------------------------------------


@dataclass
class Member:
    scope: str
    kind: str
    firing: bool
    severity: str
    onset: str
    metric: str
    value: float
    baseline: float

    @property
    def key(self) -> str:
        return member_key(self.scope, self.kind)


def member_key(scope: str, kind: str) -> str:
    return f"{scope}|{kind}"


@dataclass
class Incident:
    id: str
    root: str
    opened: int  # event time of its first transition
    members: dict[str, Member] = field(default_factory=dict)
    market: bool = False
    notified: int | None = None  # event time of the latest notification; None: not yet told
    changed: bool = False  # scopes or kinds joined, or the severity rose, since the latest notice
    acked: str | None = None
    root_resolved: int | None = None  # when the last of the root's kinds resolved
    tail_checked: int | None = None  # when the members still firing after the root were last found its tail
    held: list[dict[str, Any]] = field(default_factory=list)  # the root's records until the first notice
    emitted: bool = False  # some record already went out under this id
    merged_into: str | None = None  # folded into another incident before anyone heard of it
    # Rooted at a parent whose move an asset explains before that asset has fired itself: other
    # parents it explains join here, and the asset becomes the root when it fires.
    explained_by: str = ""
    # When it was told over while its tail still fired (see `_split`); it stays only to take the
    # tail's records and checks, and tells nobody anything more.
    over_told: int | None = None
    # Per member key, [event time (ISO), posts, z, baseline posts] of the judgement its level is from
    # (z and baseline posts since session 57: an older entry has two elements): a member's level
    # is updated by its own records only, so an update hours in showed a member's level at its
    # first firing as if it held to the notice's time. Beside the members, not in `Member`: a
    # worker before session 46 drops an unknown incident field (`from_json`) but not a member's.
    judged: dict[str, list[Any]] = field(default_factory=dict)
    # The highest severity a notice of it went out with: its resolution must reach every service
    # that heard it begin or escalate, even once the member that made it critical has calmed to a
    # warning, or left it at the tail check (`_split`). None: not yet told.
    routed: str | None = None
    # Every severity a firing notice of it went out at, lowest first: its resolution goes to the
    # services each of them reached (`resolution_routes`), so a warning-only service that heard it
    # open hears it end after it turned critical. `routed` stays beside it: older workers keep that.
    told_severities: list[str] = field(default_factory=list)
    # The highest severity a member reached while in it, told or not: a member that fired critical
    # and then warning within one group wait left no trace of it in `routed` or in its own severity.
    reached: str | None = None
    # Per severity, the event time (ISO) of the first firing notice at it: a resolution says when
    # the incident escalated, since a warning-only service last heard it as a warning.
    told_at: dict[str, str] = field(default_factory=dict)
    # How many firing notices of it were made (new, update, repeat): its resolution entry carries
    # it, and delivery routes the resolution per service only where its own marks count as many
    # (`Entry.firing_notices`). None: unknown, a worker before session 50 made one or rewrote the
    # state (it drops this field), and the resolution is routed per severity, as before.
    notices: int | None = None
    # What its latest firing notice said (`told_of`): its root, severity and, per member key, the
    # member's severity while firing or None once resolved; the next notice says what changed since
    # (`since_last`). None: not told yet, or told last by a worker before session 54 (it drops this
    # field when it rewrites the state): that notice says nothing of what changed, and later ones do.
    last_told: dict[str, Any] | None = None

    def firing(self) -> list[Member]:
        return [m for m in self.members.values() if m.firing]

    def severity(self) -> str:
        return _highest(*([m.severity for m in self.firing()] or [m.severity for m in self.members.values()])) or "warning"

    def peak_severity(self) -> str:
        """The highest severity it reached, told or held by a member: what a resolution says. Told
        over while its tail still fires, `severity()` is the tail's (warning), and a critical
        incident's resolution said warning."""
        return _highest(*(m.severity for m in self.members.values()), self.routed, self.reached) or "warning"

    def resolution_routes(self) -> tuple[str, ...]:
        """The severities its resolution is routed for: every one a firing notice of it went out at.
        `routed` too, which a worker that kept no list (one older, or one that dropped the list on
        rewriting the state) still raised; neither known: the peak, as before."""
        return tuple(ranked([*self.told_severities, *filter(None, [self.routed])]) or [self.peak_severity()])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Incident":
        # Fields a newer version added are dropped, so a worker left behind in a rolling upgrade
        # reads the state instead of failing every correlation round.
        members = {k: from_stored(Member, m) for k, m in data["members"].items()}
        return from_stored(cls, data, members=members)


@dataclass
class GroupState:
    incidents: dict[str, Incident] = field(default_factory=dict)  # the open ones, by id
    merged: list[Incident] = field(default_factory=list)  # folded away during the current `advance` (not stored)

    def to_json(self) -> dict[str, Any]:
        return {"incidents": {k: v.to_json() for k, v in self.incidents.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "GroupState":
        return cls({k: Incident.from_json(dict(v)) for k, v in (data or {}).get("incidents", {}).items()})

    def holding(self, key: str) -> Incident | None:
        for incident in self.incidents.values():
            if key in incident.members:
                return incident
        return None

    def rooted_at(self, scope: str) -> Incident | None:
        for incident in self.incidents.values():
            if incident.root == scope and incident.over_told is None:
                return incident
        return None

    def next_due(self, config: GroupConfig) -> int | None:
        """The earliest event time at which a timer of some incident falls due."""
        times = [t for incident in self.incidents.values() for t in _timers(incident, config)]
        return min(times) if times else None


@dataclass(frozen=True)
class Notice:
    """One notification about one incident."""

    incident_id: str
    root_scope: str
    state: str  # firing | resolved
    reason: str  # new | update | repeat | resolved
    severity: str
    at: str  # event time (ISO-8601 UTC) of the boundary that sent it
    opened: str
    market: bool
    members: list[dict[str, Any]]
    acked: str | None = None

    @property
    def kinds(self) -> list[str]:
        return sorted({m["kind"] for m in self.members})

    @property
    def root_kinds(self) -> list[str]:
        return root_kinds(self.root_scope, self.members)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Notice":
        # An outbox entry a newer worker wrote may carry notice fields this version lacks.
        return from_stored(cls, data)


def root_kinds(root_scope: str, members: Sequence[Mapping[str, Any]]) -> list[str]:
    """What an incident is about: the kinds its root fired, or every member's while no member is the
    root. A notice's title names them, and a silence over the root for one of them holds it back."""
    return sorted({m["kind"] for m in members if m["scope"] == root_scope}) or sorted({m["kind"] for m in members})


@dataclass(frozen=True)
class Entry:
    """What goes to the outbox: records to publish and, optionally, the notice that announces them
    (their `notified` is then the notice's delivery outcome)."""

    records: tuple[dict[str, Any], ...] = ()
    notice: Notice | None = None
    # The severities the notice is routed for (a resolution's `Incident.resolution_routes`); empty:
    # its own severity. Beside the notice, not a `Notice` field: a worker before session 46 refuses
    # a notice field it does not know, and reads only `records` and `notice` of an entry.
    route_severities: tuple[str, ...] = ()
    # A resolution's: per severity a firing notice of it went out at, when the first did (event
    # time, `Incident.told_at`), lowest first; beside the notice for the same reason.
    told_at: tuple[tuple[str, str], ...] = ()
    # A resolution's: when its incident's latest firing notice was made (event time, ISO,
    # `Incident.notified`). Delivery's told marks that end before it missed a notice a worker that
    # keeps none delivered, and count as told (`incidents.marks_behind`); beside the notice as above.
    last_notified: str = ""
    # A resolution's: how many firing notices its incident made (`Incident.notices`); None: unknown.
    # Delivery routes it only to the services its marks say heard one, where they count as many
    # (`AlertDelivery._told_services`); beside the notice as above.
    firing_notices: int | None = None
    # An update's or a reminder's: what changed since the incident's previous notice (`since_last`);
    # None when that notice's content is unknown (see `Incident.last_told`). Beside the notice for
    # the reason above.
    since_last: dict[str, Any] | None = None


def incident_id(root: str, boundary: int, salt: str = "") -> str:
    return hashlib.sha256(f"incident|{root}|{boundary}|{salt}".encode()).hexdigest()[:20]


def questions(state: GroupState, boundary: int, transitions: Sequence[AlertRecord], config: GroupConfig,
              active: Iterable[str] = ()) -> list[Question]:
    """The explanations `advance` needs for this boundary's transitions: one per parent firing anew,
    and one per parent that roots an incident nobody was told about yet (a better root may take
    it). Candidates: the assets firing now or in an open incident, and the `active` ones (assets
    with recent posts): a market-wide move often shows in `all` before any one asset has evidence
    enough to fire. And the tail checks due at `boundary` (`tail_questions`)."""
    firing_assets = {m.scope for i in state.incidents.values() for m in i.firing() if is_asset(m.scope)}
    new_assets = {t.scope for t in transitions if t.state == "firing" and not t.repeat and is_asset(t.scope)}
    candidates = tuple(sorted(firing_assets | new_assets | {a for a in active if is_asset(a)}))
    # The channels and sources that may explain a parent no asset explains: those firing in an open
    # incident (not one told over) or firing anew now, which `advance` places before their parents.
    firing_parts = {m.scope for i in state.incidents.values() if i.over_told is None for m in i.firing() if not is_asset(m.scope)}
    new_parts = {t.scope for t in transitions if t.state == "firing" and not t.repeat and not is_asset(t.scope)}
    parts = sorted(firing_parts | new_parts, key=lambda s: (rank(s), s))

    def of(parent: str) -> tuple[str, ...]:
        return candidates + tuple(p for p in parts if nests(parent, p))

    out = []
    for t in transitions:
        if t.state == "firing" and not t.repeat and not is_asset(t.scope) and _holder(state, t) is None and of(t.scope):
            out.append(Question(t.scope, t.kind, _onset_of(t), boundary, of(t.scope)))
    for incident in state.incidents.values():
        if _unannounced_parent(incident):
            for m in incident.firing():
                if of(m.scope):
                    out.append(Question(m.scope, m.kind, _member_onset(m, incident), boundary, of(m.scope)))
    return out + tail_questions(state, boundary, config)


def tail_questions(state: GroupState, boundary: int, config: GroupConfig) -> list[Question]:
    """Members still firing after their root resolved, due for the tail check at `boundary`: has
    each one moved on its own since the root resolved (`still_tail`)? Whatever the root: an asset,
    a parent, or `all` of a market-wide move, whose assets often clear after `all` does (until
    session 40 only an asset's incident was checked, and a market-wide one was told resolved while
    its assets still fired, which were then paged as new incidents of the same event)."""
    return [Question(m.scope, m.kind, _member_onset(m, incident), boundary, (incident.root,), since=incident.root_resolved)
            for incident in state.incidents.values() if _tail_due(incident, boundary, config)
            for m in incident.firing() if m.scope != incident.root]


def _member_onset(m: Member, incident: Incident) -> int:
    return int(epoch(m.onset)) if m.onset else incident.opened


def _tail_check_at(incident: Incident, config: GroupConfig) -> int | None:
    """When the members still firing after the root resolved are next looked at (None: not pending)."""
    if incident.root_resolved is None or not incident.firing():
        return None
    return (incident.tail_checked or incident.root_resolved) + config.group_interval_s  # a check comes after the resolution


def _tail_due(incident: Incident, boundary: int, config: GroupConfig) -> bool:
    at = _tail_check_at(incident, config)
    return at is not None and boundary >= at


def _reroutable(incident: Incident) -> bool:
    """Rooted at a parent, not market-wide, and nobody told of it yet: a better root may still take it."""
    return _unannounced_parent(incident) and not incident.emitted


def _unannounced_parent(incident: Incident) -> bool:
    """Rooted at a parent, not market-wide, not told yet: a better root may take it (`_reroutable`),
    or, though a member's record went out under its id, a channel that explains it may become its
    root (`_reroot`)."""
    return not is_asset(incident.root) and not incident.market and incident.notified is None


def advance(
    state: GroupState, boundary: int, transitions: Sequence[AlertRecord], answers: Mapping[tuple[str, str], Explanation],
    config: GroupConfig, acks: Mapping[str, str] | None = None,
) -> tuple[GroupState, list[Entry], list[Incident]]:
    """Move the incidents one boundary on: this boundary's transitions (any order; they are sorted
    here), then the timers due at it. Returns the state, the outbox entries and every incident that
    changed (closed ones included), for the incident history."""
    state = GroupState({k: _copy(v) for k, v in state.incidents.items()})
    before = set(state.incidents)
    for incident_id_, reason in (acks or {}).items():
        if incident_id_ in state.incidents:
            state.incidents[incident_id_].acked = reason
    out: list[Entry] = []
    touched: dict[str, Incident] = {}
    for t in sorted(transitions, key=lambda r: (rank(r.scope), r.scope, r.kind, r.state != "resolved")):
        incident = _place(state, t, boundary, answers, config)
        touched[incident.id] = incident
        out += _record(state, incident, t, boundary, config)
    released = _reroot(state, answers)
    if released:
        out.append(Entry(tuple(released)))
    for incident in sorted(state.incidents.values(), key=lambda i: (i.opened, i.id)):
        entries = _timers_due(state, incident, boundary, config, answers)
        if entries:
            touched[incident.id] = incident
            out += entries
    for ident in set(state.incidents) - before:
        touched.setdefault(ident, state.incidents[ident])
    for gone in state.merged:  # nobody heard of it: the history drops it (see Incident.merged_into)
        touched[gone.id] = gone
    state.merged = []
    return state, out, list(touched.values())


def history_status(state: GroupState, incident: Incident) -> str:
    """What the incident history says of an incident `advance` touched: `merged` (folded into
    another before anyone heard of it), `open`, or `resolved` (closed, or told over while its
    tail still clears)."""
    if incident.merged_into:
        return "merged"
    return "open" if incident.id in state.incidents and incident.over_told is None else "resolved"


def flush(state: GroupState, boundary: int) -> tuple[GroupState, list[Entry], list[Incident]]:
    """The input has ended (a replay): incidents still in their group wait are announced now, since
    nothing more can join them."""
    state = GroupState({k: _copy(v) for k, v in state.incidents.items()})
    waiting = [i for i in sorted(state.incidents.values(), key=lambda i: (i.opened, i.id)) if i.notified is None]
    return state, [_announce(i, "new", boundary) for i in waiting], waiting


def _copy(incident: Incident) -> Incident:
    return replace(incident, members={k: replace(m) for k, m in incident.members.items()},
                   held=list(incident.held), judged={k: list(v) for k, v in incident.judged.items()})


def _member(t: AlertRecord) -> Member:
    return Member(t.scope, t.kind, t.state == "firing", t.severity, t.onset, t.metric, t.value, t.baseline)


def _judged(incident: Incident, t: AlertRecord) -> None:
    """Note when, and on how many posts, a member's level was judged (`Incident.judged`), and since
    session 57 its z and its baseline's posts, which its notice line says as a single alert's does."""
    incident.judged[member_key(t.scope, t.kind)] = [t.window_end, t.posts, t.zscore, t.baseline_posts]


def _onset_of(t: AlertRecord) -> int:
    return int(epoch(t.onset)) if t.onset else int(epoch(t.window_start))


def _place(state: GroupState, t: AlertRecord, boundary: int, answers: Mapping[tuple[str, str], Explanation],
           config: GroupConfig) -> Incident:
    """The incident a transition belongs to, joining or opening one as the rules say."""
    key = member_key(t.scope, t.kind)
    held = state.holding(key)
    if held is not None and not _anew_after_over(held, t):
        return held
    if held is not None:  # the member leaves the incident told over; one with no tail left goes
        del held.members[key]
        held.judged.pop(key, None)
        if not held.firing():
            del state.incidents[held.id]
    own = state.rooted_at(t.scope)
    if own is not None:
        return _join(own, t)
    if is_asset(t.scope):
        # An asset moving the same way during a market-wide move is part of it.
        market = _market_of(state, t.kind)
        if market is not None:
            return _join(market, t)
        waiting = _explained_by(state, t.scope)
        if waiting is not None:
            return _root_at_asset(waiting, t)
        return _open(state, t.scope, boundary, t)
    found = answers.get((t.scope, t.kind), Explanation())
    if found.asset:
        # The asset's incident, or the channel's or source's that explains it: the incident in
        # which that scope fires, whatever its root.
        target = _holding_scope(state, found.asset) or _explained_by(state, found.asset)
        if target is not None:
            return _join(target, t)
        incident = _open(state, t.scope, boundary, t)
        if is_asset(found.asset):  # a channel or a source explains only while it fires
            incident.explained_by = found.asset
        return incident
    if found.market:
        market = _market_of(state, t.kind)
        if market is not None:
            return _join(market, t)
        if t.scope == "all":
            incident = _open(state, "all", boundary, t)
            _make_market(state, incident, found, t.kind)
            return incident
    return _open(state, t.scope, boundary, t)


def _anew_after_over(held: Incident, t: AlertRecord) -> bool:
    """`t` fires anew on a member of an incident that was told over: the risk team heard that event
    end, so this is news (a new incident, or another's), not part of the old one."""
    return held.over_told is not None and t.state == "firing" and not t.repeat


def _holder(state: GroupState, t: AlertRecord) -> Incident | None:
    """The incident that takes `t`: the one holding its scope and kind, unless `_anew_after_over`."""
    held = state.holding(member_key(t.scope, t.kind))
    return None if held is not None and _anew_after_over(held, t) else held


def _explained_by(state: GroupState, asset: str) -> Incident | None:
    """The incident of parents `asset` explains, opened before the asset fired (see `_root_at_asset`)."""
    return next((i for i in sorted(state.incidents.values(), key=lambda i: (i.opened, i.id))
                 if i.explained_by == asset and i.over_told is None), None)


def _root_at_asset(incident: Incident, t: AlertRecord) -> Incident:
    """The asset that explained the parents' move fires: it becomes the incident's root, the most
    specific explanation. Once anyone was told, that is news (the next update says where the move
    is); the records published so far keep the root they were published with."""
    incident.root, incident.explained_by, incident.root_resolved, incident.tail_checked = t.scope, "", None, None
    _join(incident, t)
    if incident.notified is not None:
        incident.changed = True
    return incident


def _market_of(state: GroupState, kind: str) -> Incident | None:
    """The open market-wide incident of `kind`. One told over takes only its tail's records: a
    firing that is news must not join it, or it would go out under an incident nobody is told of."""
    return next((i for i in state.incidents.values()
                 if i.market and i.over_told is None and any(m.kind == kind for m in i.firing())), None)


def _make_market(state: GroupState, incident: Incident, found: Explanation, kind: str) -> None:
    """`all` moved with several assets: its incident becomes the market-wide one. The assets that
    explain it, and any other asset incident of the same kind nobody was told about yet, fold in."""
    incident.market = True
    for other in sorted(state.incidents.values(), key=lambda i: (i.opened, i.id)):
        if other is incident or not is_asset(other.root) or other.emitted or other.notified is not None:
            continue
        if other.root in found.market or any(m.kind == kind for m in other.firing()):
            _merge(state, other, incident)


def _holding_scope(state: GroupState, scope: str) -> Incident | None:
    """The open incident in which `scope` fires (not one told over, whose tail it may be)."""
    for incident in sorted(state.incidents.values(), key=lambda i: (i.opened, i.id)):
        if incident.over_told is None and any(m.scope == scope and m.firing for m in incident.members.values()):
            return incident
    return None


def _open(state: GroupState, root: str, boundary: int, t: AlertRecord) -> Incident:
    ident = incident_id(root, boundary, t.kind)
    incident = Incident(ident, root, boundary)
    state.incidents[ident] = incident
    return _join(incident, t)


def _join(incident: Incident, t: AlertRecord) -> Incident:
    if member_key(t.scope, t.kind) not in incident.members:
        incident.members[member_key(t.scope, t.kind)] = _member(t)
        _judged(incident, t)
        # News worth an update: another kind on the root, or another asset in a market-wide move.
        # A parent that joins because the root explains it says nothing new; the next notice lists it.
        if incident.notified is not None and (t.scope == incident.root or is_asset(t.scope)):
            incident.changed = True
    return incident


def _merge(state: GroupState, source: Incident, target: Incident) -> list[dict[str, Any]]:
    """Fold an incident nobody has heard of yet into another. Its held records move along, or, if
    the target was announced already, come back to be published now (as a member's: not notified)."""
    for key, member in source.members.items():
        if key not in target.members:
            target.members[key] = member
            if key in source.judged:
                target.judged[key] = source.judged[key]
    target.reached = _highest(target.reached, source.reached)
    del state.incidents[source.id]
    source.merged_into = target.id
    state.merged.append(source)
    if target.notified is None:
        target.held += source.held
        return []
    target.changed = target.changed or any(is_asset(m.scope) for m in source.members.values())
    target.emitted = True
    return [_about(r, target) for r in source.held]


def _reroot(state: GroupState, answers: Mapping[tuple[str, str], Explanation]) -> list[dict[str, Any]]:
    """Parents that fired first root incidents nobody was told about yet; once the assets fire, the
    better root takes them: the one asset that explains them, or, for `all` moved by several,
    a market-wide incident (which the other parents it explains then join). `all` goes first.
    Returns the records to publish now (see `_merge`)."""
    released: list[dict[str, Any]] = []
    for incident in sorted(state.incidents.values(), key=lambda i: (-rank(i.root), i.opened, i.id)):
        if incident.id not in state.incidents or not _unannounced_parent(incident) or not incident.firing():
            continue
        found = [answers.get((m.scope, m.kind), Explanation()) for m in incident.firing()]
        # A member explained by a scope firing in this same incident is accounted for (`all` by the
        # source that roots it); the others must all name one scope of another incident.
        inside = {m.scope for m in incident.firing()}
        assets = {f.asset for f in found if f.asset not in inside}
        if len(assets) == 1 and "" not in assets:
            scope = assets.pop()
            target = _holding_scope(state, scope)
            if target is None or target is incident:
                continue
            if _reroutable(incident):
                released += _merge(state, incident, target)
            elif not is_asset(scope) and target.root == scope and _reroutable(target):
                # A member's record went out under this incident's id already (`all`'s, joined to
                # the source that explains it), so it stays; the channel that explains it, whose own
                # incident nobody heard of, folds in and becomes its root, as an asset does when it
                # fires (`_root_at_asset`).
                _merge(state, target, incident)
                incident.root, incident.root_resolved, incident.tail_checked = scope, None, None
                incident.explained_by = target.explained_by or incident.explained_by
            continue
        if not _reroutable(incident):
            continue
        if any(f.market for f in found):
            kind = next(m.kind for m, f in zip(incident.firing(), found) if f.market)
            market = _market_of(state, kind)
            if market is not None and market is not incident:
                released += _merge(state, incident, market)
            elif incident.root == "all":
                _make_market(state, incident, next(f for f in found if f.market), kind)
    return released


def _record(state: GroupState, incident: Incident, t: AlertRecord, boundary: int, config: GroupConfig) -> list[Entry]:
    """Publish (or hold) one transition's record and apply it to the incident."""
    member = incident.members[member_key(t.scope, t.kind)]
    before = incident.severity()
    member.firing = t.state == "firing"
    if t.state == "firing":
        member.severity, member.onset, member.value, member.baseline = t.severity, t.onset or member.onset, t.value, t.baseline
        incident.reached = _highest(incident.reached, t.severity)
        _judged(incident, t)
    record = _public(t, incident)
    is_root = t.scope == incident.root
    if is_root:
        root_firing = any(m.firing for m in incident.members.values() if m.scope == incident.root)
        incident.root_resolved = None if root_firing else boundary
        incident.tail_checked = None
    if not incident.firing():
        return _close(state, incident, boundary, record, is_root)
    news = is_root and t.state == "firing" and not t.repeat
    escalated = SEVERITY_RANK.get(incident.severity(), 0) > SEVERITY_RANK.get(before, 0)
    if incident.notified is not None and (news or escalated):
        incident.changed = True
    if is_root and (incident.notified is None or news or escalated):
        # Announced by the next notice, which sets its `notified` and shows its sample posts: the
        # update saying the root turned critical carries the posts that made it so.
        incident.held.append(record)
        return []
    incident.emitted = True
    return [Entry((record,))]


def _highest(*severities: str | None) -> str | None:
    return max(filter(None, severities), key=lambda s: SEVERITY_RANK.get(s, 0), default=None)


def _public(t: AlertRecord, incident: Incident) -> dict[str, Any]:
    """The record as the outbox carries it (asdict: samples and context included)."""
    return _about(asdict(replace(t, notified=False)), incident)


def _about(record: dict[str, Any], incident: Incident) -> dict[str, Any]:
    """A record as one of this incident's: its id and root, and its acknowledgement if any."""
    return {**record, "incident_id": incident.id, "root_scope": incident.root, "acknowledged": incident.acked or ""}


def _notice(incident: Incident, reason: str, boundary: int) -> Notice:
    resolved = reason == "resolved"
    members = [
        {"scope": m.scope, "kind": m.kind, "firing": m.firing, "severity": m.severity, "onset": m.onset, "metric": m.metric,
         "value": m.value, "baseline": m.baseline, **judged_fields(incident, m), **_root_resolved_field(incident, m, resolved)}
        for m in sorted(incident.members.values(), key=lambda m: (m.scope != incident.root, rank(m.scope), m.scope, m.kind))
    ]
    severity = incident.peak_severity() if resolved else incident.severity()
    return Notice(incident.id, incident.root, "resolved" if resolved else "firing", reason, severity, iso(boundary),
                  iso(incident.opened), incident.market, members, incident.acked)


def judged_fields(incident: Incident, m: Member) -> dict[str, Any]:
    """A notice member's `judged` (event time of its level) and `posts` (behind it), where known, with
    `zscore` and `baseline_posts` where kept (an entry written before session 57 holds the first two)."""
    entry = list(incident.judged.get(m.key) or [])
    if not entry or not entry[0]:
        return {}
    weight = {"zscore": entry[2], "baseline_posts": entry[3]} if len(entry) >= 4 else {}
    return {"judged": entry[0], "posts": entry[1] if len(entry) > 1 else None, **weight}


def _root_resolved_field(incident: Incident, m: Member, resolved: bool) -> dict[str, Any]:
    """A resolution's root members' `root_resolved`: when the last of the root's kinds resolved (event
    time). The notice's `at` is when the incident was told over, a group interval or more later when
    a tail still cleared, and the resolution said 'as of' that time. On the members, not a `Notice`
    field: a worker before session 46 reads the outbox's notices with `Notice(**data)`, which refuses
    a field it does not know, but passes a member's keys through (`Notice.from_json` drops it since)."""
    if not resolved or m.scope != incident.root or incident.root_resolved is None:
        return {}
    return {"root_resolved": iso(incident.root_resolved)}


def _announce(incident: Incident, reason: str, boundary: int) -> Entry:
    notice = _notice(incident, reason, boundary)
    since = since_last(incident.last_told, incident.notified, notice)
    incident.last_told = told_of(notice)  # replaced, never changed in place: `_copy` shares it
    # `routed` (the highest told) first: from a worker that kept no list it is the only trace of
    # what that worker told, and raising it first lost a warning that worker told.
    incident.told_severities = ranked([*incident.told_severities, *filter(None, [incident.routed]), notice.severity])
    incident.routed = _highest(incident.routed, notice.severity)
    incident.told_at.setdefault(notice.severity, notice.at)
    # Counted from its first notice; once unknown (an older worker's), it stays unknown.
    incident.notices = 1 if incident.notified is None else incident.notices + 1 if incident.notices is not None else None
    records = _release(incident)
    incident.emitted = incident.emitted or bool(records)
    incident.notified, incident.changed = boundary, False
    return Entry(records, notice, since_last=since)


def told_of(notice: Notice) -> dict[str, Any]:
    """What a firing notice said, as `Incident.last_told` keeps it (small: it is stored each boundary)."""
    return {"root": notice.root_scope, "severity": notice.severity,
            "members": {member_key(m["scope"], m["kind"]): m["severity"] if m["firing"] else None for m in notice.members}}


def since_last(last: Mapping[str, Any] | None, last_at: int | None, notice: Notice) -> dict[str, Any] | None:
    """What `notice` says that its incident's previous notice (`last`, `told_of`, made at `last_at`)
    did not: members that joined, fired again or resolved, members whose severity rose or fell
    (`eased`: a critical member now a warning, which an incident still critical through another
    member did not show), and the root's and the incident's severity before and after. None when
    the previous one is unknown. An update said only the incident's state, and the team compared
    two messages to find the news."""
    if last is None or last_at is None or not isinstance(last.get("members"), dict):
        return None
    before: Mapping[str, str | None] = last["members"]
    changes: dict[str, Any] = {"at": iso(last_at), "root": {"from": last.get("root"), "to": notice.root_scope},
                               "severity": {"from": last.get("severity"), "to": notice.severity},
                               "joined": [], "fired": [], "resolved": [], "escalated": [], "eased": []}
    for m in notice.members:  # root first, then by precedence: the order the notice lists them
        key, who = member_key(m["scope"], m["kind"]), {"scope": m["scope"], "kind": m["kind"]}
        was = before.get(key)  # its severity while firing then, None once resolved
        if key not in before:
            changes["joined"].append(who)
        elif was is None and m["firing"]:
            changes["fired"].append(who)
        elif was is not None and not m["firing"]:
            changes["resolved"].append(who)
        elif was is not None and SEVERITY_RANK.get(m["severity"], 0) > SEVERITY_RANK.get(was, 0):
            changes["escalated"].append({**who, "from": was, "to": m["severity"]})
        elif was is not None and m["firing"] and SEVERITY_RANK.get(m["severity"], 0) < SEVERITY_RANK.get(was, 0):
            changes["eased"].append({**who, "from": was, "to": m["severity"]})
    return changes


def unchanged(since: Mapping[str, Any] | None) -> bool:
    """Whether `since` (`since_last`) says nothing changed since the previous notice: the same root
    and severity, no member joined, fired again, resolved or rose. False where it is unknown (None).
    A member that eased alone (`eased`, the incident's severity unchanged) is no news: as a severity
    that fell never sent an update, it is said by the next notice that goes for another reason."""
    if since is None:
        return False
    return (since["root"]["from"] == since["root"]["to"] and since["severity"]["from"] == since["severity"]["to"]
            and not any(since[key] for key in ("joined", "fired", "resolved", "escalated")))


def _close(state: GroupState, incident: Incident, boundary: int, record: dict[str, Any], is_root: bool) -> list[Entry]:
    """The last firing member resolved: one resolved notice, riding on the closing record if it is
    the root's (none if the incident was told over already). An incident over before its wait ended
    is still told first."""
    if incident.over_told is not None:
        del state.incidents[incident.id]
        return [Entry((record,))]
    entries = []
    if incident.notified is None:
        entries.append(_announce(incident, "new", boundary))
    elif incident.held:
        entries.append(Entry(_release(incident)))
    incident.emitted = True
    notice, routes, told_at, last = _notice(incident, "resolved", boundary), incident.resolution_routes(), _told_at(incident), _last(incident)
    entries += ([Entry((record,), notice, routes, told_at, last, incident.notices)] if is_root
                else [Entry((record,)), Entry((), notice, routes, told_at, last, incident.notices)])
    del state.incidents[incident.id]
    return entries


def _release(incident: Incident) -> tuple[dict[str, Any], ...]:
    # Held records learn their incident now: a re-rooted or merged incident changed it since.
    records = tuple(_about(r, incident) for r in incident.held)
    incident.held = []
    return records


def _timers(incident: Incident, config: GroupConfig) -> list[int]:
    if incident.notified is None:
        return [incident.opened + config.group_wait_s]
    tail = _tail_check_at(incident, config)
    if incident.over_told is not None:
        return [tail] if tail is not None else []
    times = []
    if incident.changed:
        times.append(incident.notified + config.group_interval_s)
    if _repeats(incident):
        times.append(incident.notified + config.repeat_interval_s)
    if tail is not None:
        times.append(tail)
    return times


def _repeats(incident: Incident) -> bool:
    """Reminders go while the root fires and nobody acknowledged it: once the root resolved, the
    members left are told about by the resolution or by incidents of their own."""
    return not incident.acked and incident.root_resolved is None and bool(incident.firing())


def _timers_due(state: GroupState, incident: Incident, boundary: int, config: GroupConfig,
                answers: Mapping[tuple[str, str], Explanation]) -> list[Entry]:
    if incident.id not in state.incidents:
        return []
    if incident.notified is None:
        return [_announce(incident, "new", boundary)] if boundary >= incident.opened + config.group_wait_s else []
    if _tail_due(incident, boundary, config):
        entries = _split(state, incident, boundary, answers)
        if entries or incident.id not in state.incidents:
            return entries
    if incident.over_told is not None:
        return []
    quiet = False
    if incident.changed and boundary >= incident.notified + config.group_interval_s:
        if not unchanged(since_last(incident.last_told, incident.notified, _notice(incident, "update", boundary))):
            return [_announce(incident, "update", boundary)]
        # What made it news undid itself within the group interval (a severity that rose and fell
        # back, the root resolving and firing again): the update would say the same as the last
        # notice, "Unchanged since the last notice". None goes; the records it held still do.
        incident.changed, quiet = False, True
    if _repeats(incident) and boundary >= incident.notified + config.repeat_interval_s:
        return [_announce(incident, "repeat", boundary)]
    if quiet and incident.held:
        incident.emitted = True
        return [Entry(_release(incident))]
    return []


def _split(state: GroupState, incident: Incident, boundary: int, answers: Mapping[tuple[str, str], Explanation]) -> list[Entry]:
    """The root resolved a while ago and some members still fire. Those that have not moved on
    their own since (`still_tail` named the root) are the event's tail; the others leave it, each
    scope an incident of its own (told about after its own group wait). The incident is told over
    now: with no tail left it closes; with a tail it stays, silent, for the tail's records and
    checks (again after `group_interval`) until the tail resolves."""
    tail = {m.key for m in incident.firing()
            if m.scope != incident.root and answers.get((m.scope, m.kind), Explanation()).asset == incident.root}
    still = [m for m in incident.firing() if m.key not in tail]
    for m in still:
        del incident.members[m.key]
    _open_each(state, still, boundary, incident.id, incident.judged)
    for m in still:
        # Its level's judgement went with it; kept here, it stayed in the stored state until this
        # incident closed. An older worker reads a member without one as before (no "(N posts by T)").
        incident.judged.pop(m.key, None)
    if tail:
        incident.tail_checked = boundary
    else:
        del state.incidents[incident.id]
    if incident.over_told is not None:
        return []
    incident.over_told = boundary
    entries = [Entry(_release(incident))] if incident.held else []
    # At its peak, to every service a firing notice reached: `routed`, `reached` and
    # `told_severities` kept what left.
    entries.append(Entry((), _notice(incident, "resolved", boundary), incident.resolution_routes(), _told_at(incident), _last(incident),
                         incident.notices))
    return entries


def _told_at(incident: Incident) -> tuple[tuple[str, str], ...]:
    return tuple((severity, incident.told_at[severity]) for severity in ranked(incident.told_at))


def _last(incident: Incident) -> str:
    """`Entry.last_notified`: its latest firing notice's time (a resolution does not move it)."""
    return iso(incident.notified) if incident.notified is not None else ""


def _open_each(state: GroupState, members: Sequence[Member], boundary: int, salt: str,
               judged: Mapping[str, list[Any]] | None = None) -> None:
    """Each scope of `members` an incident of its own, opened at `boundary`."""
    for scope in sorted({m.scope for m in members}, key=lambda s: (rank(s), s)):
        ident = incident_id(scope, boundary, salt)
        new = Incident(ident, scope, boundary)
        for m in members:
            if m.scope == scope:
                new.members[m.key] = replace(m)
                if judged and m.key in judged:
                    new.judged[m.key] = list(judged[m.key])
        state.incidents[ident] = new


def next_boundary(state: GroupState, staged: Iterable[int], after: int, until: int, step_s: int, config: GroupConfig) -> int | None:
    """The next grid boundary in (after, until] at which something happens: a staged transition
    (transitions staged late, at or before `after`, are taken at once) or a timer."""
    candidates = [max(b, after + step_s) for b in staged if b <= until]
    due = state.next_due(config)
    if due is not None:
        candidates.append(max(-(-due // step_s) * step_s, after + step_s))
    found = min(candidates) if candidates else None
    return found if found is not None and found <= until else None
