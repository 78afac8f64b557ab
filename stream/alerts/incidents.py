"""Incident lifecycle and the alert record contract (pure).

One incident per (scope, kind) at a time: idle -> firing -> (repeat) -> resolved -> idle. Each
transition yields one `AlertRecord`, published to `sentiment-alerts` and written by
`sentinel run --alerts-out`. The record's field names are a contract other tools read: keep them.

`step` is a pure function of the previous state and one judgement, so the Redis adapter can apply
it atomically (compare-and-set) and every worker that judges the same boundary agrees.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Collection, Iterable, Literal, Mapping, Sequence

from stream.alerts.detector import Kind, Severity, Signal, Thresholds
from stream.stored import from_stored
from stream.timefmt import epoch, format_duration, iso
from stream.windows import Sample

State = Literal["firing", "resolved"]

MIN_ID_PREFIX = 6
SEVERITY_RANK = {"warning": 0, "critical": 1}


def ranked(severities: Iterable[str]) -> list[str]:
    """`severities`, each once, lowest first."""
    return sorted(set(severities), key=lambda s: (SEVERITY_RANK.get(s, 0), s))


def incident_by_prefix(given: str, idents: Iterable[str]) -> str:
    """The incident `given` names: its whole id, or a unique start of it of at least MIN_ID_PREFIX
    characters (a narrow terminal's table once cut ids short). ValueError when the start is shorter
    or several ids begin with it; `given` itself when none does (the caller says it is unknown).
    The one rule for `sentinel ack`/`verdict` and the console's URLs and forms."""
    idents = set(idents)
    if given in idents:
        return given
    found = sorted(i for i in idents if i.startswith(given))
    if not found:
        return given
    if len(given) < MIN_ID_PREFIX:
        raise ValueError(f"{given!r} is shorter than an id: give its first {MIN_ID_PREFIX} characters or more, or the whole id")
    if len(found) > 1:
        raise ValueError(f"{given!r} starts several incidents' ids: {', '.join(found[:10])}{' ...' if len(found) > 10 else ''}; give more of it")
    return found[0]


UNGROUPED_HINT = ("with SENTINEL_ALERT_GROUPING=none alerts are not grouped into incidents, which ack and verdict act on: "
                  "an alert's notice gives the command that stops its notices (sentinel silence SCOPE --kind KIND --for 2h)")


def unknown_incident(said: str, grouped: bool) -> str:
    """`said` ("no open incident with id 'a1b2c3d4'"), and with grouping off why no id is one: an
    ungrouped alert's title ends with its own id's start, which `sentinel ack` took for an
    incident's and answered as if the id were wrong."""
    return said if grouped else f"{said}; {UNGROUPED_HINT}"


def root_kinds(summary: Mapping[str, Any]) -> list[str]:
    """The kinds the root of an incident summary moved in, sorted: `sentinel incidents` and the
    console's tables say them alike (the console listed them in member order). Not
    `grouping.root_kinds` (a notice's title, a silence's match), which falls back to every member's
    kinds while the root is not yet a member: these tables have always shown the root's own, empty then."""
    return sorted({m["kind"] for m in summary["members"] if m["scope"] == summary["root_scope"]})


def related_scopes(summary: Mapping[str, Any]) -> list[str]:
    """The scopes that moved with the root, each once, sorted (members are (scope, kind) pairs)."""
    return sorted({m["scope"] for m in summary["members"] if m["scope"] != summary["root_scope"]})


def not_acknowledged(given: str, summary: Mapping[str, Any] | None, *, command: bool = True, grouped: bool = True) -> str:
    """Why `sentinel ack` (or the console) acknowledged nothing: no incident by that name, or one
    that is over. Pasted from a notice after its incident resolved, the command said "no open
    incident with id ...", which read as a wrong id; a resolved incident sends no reminders, and
    what is left to say about it is its verdict (`command`: the shell's way to give it, else the
    console's form's)."""
    if summary is None:
        return unknown_incident(f"no open incident with id {given!r}", grouped)
    ident, state, at = summary.get("incident_id", given), summary.get("state", ""), summary.get("at")
    when = f" (declared over {iso(at)}, event time)" if state == "resolved" and isinstance(at, (int, float)) else ""
    how = f": sentinel verdict {ident} real (or false-alarm)" if command else " (real or false-alarm) on its page"
    return f"incident {ident} is {state}{when}: nothing to acknowledge, it sends no more reminders; record whether it was real instead{how}"


# The fields of an alert record, in order. Other tools read them; keep names and meanings stable.
RECORD_FIELDS = (
    "alert_id", "scope", "kind", "state", "severity", "window_start", "window_end", "value", "baseline",
    "zscore", "posts", "sample_post_ids", "notified", "fired_at", "onset", "incident_id", "root_scope", "acknowledged",
)


@dataclass(frozen=True)
class AlertRecord:
    alert_id: str
    scope: str
    kind: Kind
    state: State
    severity: Severity
    window_start: str  # ISO-8601 UTC, event time
    window_end: str
    value: float  # the current window's value of the metric that decided (see `metric`)
    baseline: float
    zscore: float
    posts: int  # posts in the current window
    sample_post_ids: list[str]
    notified: bool
    fired_at: str  # wall-clock time the incident first fired (ISO-8601 UTC)
    # The estimated start of the change (event time, ISO-8601 UTC): the sequential detector's
    # change-point estimate, or when the window detector's condition began to hold.
    onset: str = ""
    # The incident (one event, many scopes; stream/alerts/grouping.py) this transition belongs to,
    # and that incident's root scope. Without grouping: the alert_id and the scope itself.
    incident_id: str = ""
    root_scope: str = ""
    # `sentinel ack`'s reason, on the records of an incident published after it was acknowledged.
    acknowledged: str = ""
    # Context for the notification; not part of the published record.
    metric: str = ""  # mean_score | negative_share | positive_share | posts
    baseline_posts: int = 0
    window: str = "1h"
    repeat: bool = False
    samples: list[Sample] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        data = asdict(self)
        return {name: data[name] for name in RECORD_FIELDS}

    def with_delivery(self, notified: bool) -> "AlertRecord":
        return replace(self, notified=notified)


def record_from_json(data: dict[str, Any]) -> AlertRecord:
    """An AlertRecord back from `asdict` JSON (the outbox's and the staging set's form)."""
    samples = [from_stored(Sample, s) for s in data.get("samples", [])]
    return from_stored(AlertRecord, data, samples=samples)


def alert_id(scope: str, kind: str, fired_window_end: float) -> str:
    """Deterministic, so replays of one input give the same ids and a retried transition is recognisable."""
    digest = hashlib.sha256(f"{scope}|{kind}|{int(fired_window_end)}".encode()).hexdigest()
    return digest[:20]


@dataclass(frozen=True)
class Incident:
    """A firing incident, as stored between judgements."""

    alert_id: str
    kind: Kind
    severity: Severity
    fired_window_end: int  # the boundary that fired it (event time); while pending, when the condition began
    last_notified: int  # the boundary of the latest firing notification (event time)
    fired_at: str  # wall clock, ISO-8601 UTC
    pending: bool = False  # the condition holds but not yet for `for_s` (Prometheus' `for:`)
    onset: int = 0  # the estimated start of the change (event time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Incident":
        return from_stored(cls, data)


def _record(scope: str, incident: Incident, state: State, signal: Signal, boundary: int, window_s: int, repeat: bool) -> AlertRecord:
    return AlertRecord(
        alert_id=incident.alert_id, scope=scope, kind=incident.kind, state=state, severity=incident.severity,
        window_start=iso(boundary - window_s), window_end=iso(boundary), onset=iso(incident.onset) if incident.onset else "",
        # Rounded so records compare equal across runs whatever the float summation order did.
        value=round(signal.value, 6), baseline=round(signal.baseline, 6), zscore=round(signal.zscore, 3),
        posts=signal.posts, sample_post_ids=[], notified=False, fired_at=incident.fired_at,
        metric=signal.metric, baseline_posts=signal.baseline_posts, window=format_duration(window_s), repeat=repeat,
        # Ungrouped, each (scope, kind) incident is its own event; grouping (grouping.py) replaces both.
        incident_id=incident.alert_id, root_scope=scope,
    )


def told_through(told: Mapping[str, Sequence[str]], records: Sequence[AlertRecord],
                 open_ids: Iterable[str], held: Mapping[str, str] | None = None) -> tuple[dict[str, list[str]], list[list[str]]]:
    """Without grouping: per alert id, the severities its firing notifications went out at, after
    one scope's `records` (in order); and per record the severities its notification is routed for
    when that is more than its own (empty: its own alone). A resolution carries its alert's highest
    severity, so an alert that fired as a warning and was repeated as critical resolved to the
    critical services only: whoever heard the warning never heard it end. It goes to every severity
    its alert's firing notifications went out at (Alertmanager's `send_resolved`, per receiver).
    Only the alerts in `open_ids` (the scope's open ones) are kept: one that an older worker,
    which keeps no list, resolved is dropped too. `held`: per alert open before `records`, the
    severity its stored incident holds, the highest its firing notifications went out at (it rises
    only with a firing record): an older worker that told it keeps no list, so without it a warning
    that worker told was lost once a newer worker repeated the alert as critical."""
    after = {ident: list(severities) for ident, severities in told.items()}
    for ident, severity in (held or {}).items():
        after[ident] = ranked([*after.get(ident, []), severity])
    routes: list[list[str]] = []
    for record in records:
        if record.state == "firing":
            after[record.alert_id] = ranked([*after.get(record.alert_id, []), record.severity])
            routes.append([])
        else:
            # An alert that an older worker, which keeps no list, told throughout is routed as
            # before: its own severity.
            found = ranked([*after.pop(record.alert_id, []), record.severity])
            routes.append(found if found != [record.severity] else [])
    kept = set(open_ids)
    return {ident: severities for ident, severities in after.items() if ident in kept}, routes


def last_notified_through(notified: Mapping[str, int], records: Sequence[AlertRecord]) -> list[str]:
    """Without grouping: per record of one scope (in order), a resolution's alert's latest firing
    notice's time (ISO, event time; '' for a firing record, or where unknown), which its outbox entry
    carries (`last_notified`) against the told marks' `last` as an incident's does
    (`marks_behind`). `notified`: per alert open before `records`, its stored `last_notified` (the
    boundary of its latest firing record, new or repeat)."""
    latest = dict(notified)
    found: list[str] = []
    for record in records:
        if record.state == "firing":
            latest[record.alert_id] = int(epoch(record.window_end))
            found.append("")
        else:
            at = latest.pop(record.alert_id, None)
            found.append(iso(at) if at is not None else "")
    return found


# A firing notification's fate at one severity (`told_routes`): sent (some service accepted it),
# held (a silence held it back), failed (it reached no service: every one refused, or was capped).
TOLD_SENT, TOLD_HELD, TOLD_FAILED = "sent", "held", "failed"
TOLD_UNHEARD = (TOLD_HELD, TOLD_FAILED)
TOLD_LAST = "last"  # the marks' field: event time (ISO) of the latest firing notice marked (`marks_behind`)
# Since session 54's review: event time (ISO) of the latest firing notice of an incident that reached
# no service (a silence held it, every service refused it or the cap held it back, or none was
# routed), gone once that same notice reached some (a claim's second try). The next update
# says what changed since that notice (`Entry.since_last`), which nobody read: its line is left out.
TOLD_UNHEARD_AT = "unheard"
# The marks' fields per service (session 50, grouped): `svc:<service_key>` = sent once a firing notice
# reached that service, and `svc:notice:<outbox entry id>` = 1 for each firing notice marked so
# (`told_services` counts them). One field per notice, not a counter: a notice delivered twice (a
# claim after its worker died, a mark retried while Redis was away) is counted once, so the count
# never runs over and cannot meet the correlator's while another notice went unmarked.
TOLD_SERVICE = "svc:"
TOLD_NOTICE = "svc:notice:"
# Since session 55 (grouped): `heard:<service_key>` = the event time (ISO) of the incident's latest
# firing notice that service accepted. An update's "New since the last notice (T)" line goes to a
# service only where it is T (`heard_previous`): a critical-only pager first told at the escalation,
# or a service that refused or was capped last time, read "since the last notice" of one it never
# saw. Not under `svc:`: a session-54 worker reads every `svc:` field as a service (one whose value
# is `sent`), and would count one it could not find as removed.
TOLD_HEARD = "heard:"


def heard_previous(marks: Mapping[str, str], at: str) -> set[str]:
    """The services (`service_key`) whose latest heard firing notice of an incident is the one made at
    `at` (an update's `since_last.at`): those alone read its since-last line. Empty where no mark
    says so: the notice reached nobody, or a worker before session 55 delivered it (it writes no
    `heard:`), so no service is known to have read it."""
    return {name[len(TOLD_HEARD):] for name, value in marks.items() if name.startswith(TOLD_HEARD) and value == at}


def heard_by(marks: Mapping[str, str]) -> set[str]:
    """The services (`service_key`) with a `heard:` mark: each heard some firing notice of the incident."""
    return {name[len(TOLD_HEARD):] for name in marks if name.startswith(TOLD_HEARD)}


def heard_later(stored: str | None, at: str) -> bool:
    """Whether a firing notice made at `at` is a service's latest heard (`TOLD_HEARD`) over the one
    `stored`: a claim that finishes an older notice after a later one went out must not make the
    service seem to have heard the older one last. Unknown or unreadable `stored`: `at` is."""
    if not stored:
        return True
    try:
        return epoch(at) >= epoch(stored)
    except ValueError:
        return True


def told_fate(sent: int) -> str:
    """A firing notification's fate from how many services accepted it: `sent` once any did, else
    `failed` (every one refused after its retries, or the daily cap held it back): it told nobody,
    as a silenced one, and until session 49 it counted as told."""
    return TOLD_SENT if sent > 0 else TOLD_FAILED


def told_routes(routes: Sequence[str], fates: Mapping[str, str]) -> list[str]:
    """The severities a resolution goes out at: those of `routes` (the severities its incident's or
    alert's firing notifications were made at, `told_through` and `Incident.resolution_routes`)
    that some firing notification was sent at. `fates`: per severity, `sent` once one went out at
    it, else `held` once one was silenced or `failed` once one reached no service; a severity with
    no fate (delivered by a worker that keeps none, or its mark expired) counts as sent, as before.
    A service that heard nothing of it firing hears nothing of it ending, as Alertmanager sends a
    receiver a resolution only after a firing notification reached it. Empty: every firing
    notification was held back by a silence or reached no service."""
    return [severity for severity in routes if fates.get(severity) not in TOLD_UNHEARD]


def told_services(marks: Mapping[str, str], firing_notices: int, configured: Collection[str]) -> set[str] | None:
    """The services (`service_key`) an incident's resolution goes to, from its told marks: those a
    firing notice of it reached, where the marks account for every one of its `firing_notices` (as
    Alertmanager's notification log is kept per receiver: a receiver that was told of the firing
    hears the resolution, another does not, whatever its severity heard). None where they do not (a
    worker before session 50, which marks no service, delivered one; a claim finished one whose
    notified mark names no service, a session-50 worker's): the resolution is then
    routed per severity (`told_routes`), as before. A service added since the firing is in no mark
    and hears nothing.

    `configured`: the `service_key` of every service configured now. A marked service missing from
    it is a service that heard the firing and that the marks can no longer find: removed, moved to
    another host, user or path, or marked by a session-50 worker (its key hashed the whole URL,
    which an Apprise upgrade rewrites; since session 51 `service_key` leaves out the password and
    parameters). Matched by key, it would hear no resolution; None instead, so the resolution goes
    per severity, as before, rather than to fewer services than heard the firing."""
    counted = sum(1 for name in marks if name.startswith(TOLD_NOTICE))
    if counted != firing_notices or firing_notices < 1:
        return None
    heard = marked_services(marks)
    return heard if heard <= set(configured) else None


def notified_services(mark: str) -> list[str] | None:
    """The services (`service_key`) an entry's notified mark says accepted its notification: since
    session 51 the mark is their JSON list, so a claim that finds the entry notified marks them told
    where before it could not (its worker died between the two marks). None for a mark that names
    none (`1`, written before session 51) or cannot be read: the notice then goes unmarked."""
    try:
        found = json.loads(mark)
    except ValueError:
        return None
    if not isinstance(found, list) or not found or not all(isinstance(key, str) for key in found):
        return None
    return found


# An entry's notified mark's second field (since session 52): where some routed service refused its
# notification after its retries and another accepted it, the refused services' JSON list.
REFUSED_SUFFIX = ":refused"


def refused_field(entry_id: str) -> str:
    """The notified mark's field of the services that refused an entry's notification."""
    return f"{entry_id}{REFUSED_SUFFIX}"


# Its third (since session 53): beside the refused field, how many routed services the daily cap held
# back from that delivery, so the delivery that finishes it counts it `capped` as a notice the cap
# held back from some services and others accepted (a worker before session 53 neither writes nor
# reads it).
CAPPED_SUFFIX = ":capped"


def capped_field(entry_id: str) -> str:
    """The notified mark's field of how many services the daily cap held back from a partly delivered
    entry's notification."""
    return f"{entry_id}{CAPPED_SUFFIX}"


@dataclass(frozen=True)
class NotifiedMark:
    """An entry's notified mark as a claim or a redelivery reads it. `accepted`: the services that
    accepted its notification (None: a mark from before session 51, `1`, names none). `refused`: since session
    52, those that refused it after their retries while others accepted (a partly delivered
    notification): a claim sends it to these alone, never again to one that showed it to the risk
    team. Empty: finished (every routed service accepted it but those the daily cap held back), and
    a claim publishes it without notifying."""

    accepted: list[str] | None
    refused: tuple[str, ...] = ()
    # Since session 53, a partial mark's: the services the daily cap held back from it then.
    capped: int = 0

    @property
    def partial(self) -> bool:
        return bool(self.refused) and bool(self.accepted)


def notified_mark(value: str, refused: str | None, capped: str | None = None) -> NotifiedMark:
    """An entry's notified mark from its fields (`refused` None where there is none, as a worker
    before session 52 never writes one; `capped`, a partial mark's, None where there is none, as a
    worker before session 53 never writes one, or where it cannot be read: 0). A refused field that
    cannot be read, or beside a value that names no service, leaves the mark finished: a service
    that missed the notice is better than a duplicate to one that showed it. A service in both lists (one endpoint configured
    twice, one entry accepting and one refusing, as a session-52 worker marked it) accepted it:
    refused alone where none of its entries accepted (`notify.by_service`)."""
    accepted = notified_services(value)
    unheard = notified_services(refused) if refused is not None and accepted is not None else None
    refusers = tuple(key for key in unheard or () if key not in (accepted or ()))
    # ASCII digits alone: str.isdigit() also passes '²', which int() refuses (a stuck entry, every round).
    held = int(capped) if refusers and capped is not None and capped.isascii() and capped.isdigit() else 0
    return NotifiedMark(accepted, refusers, held)


def marked_services(marks: Mapping[str, str]) -> set[str]:
    """The services (`service_key`) the told marks say a firing notice reached (`svc:<key>` = sent)."""
    return {name[len(TOLD_SERVICE):] for name, fate in marks.items()
            if name.startswith(TOLD_SERVICE) and not name.startswith(TOLD_NOTICE) and fate == TOLD_SENT}


def marks_behind(last_marked: str | None, last_notified: str | None) -> bool:
    """Whether an incident's told marks miss a firing notice: the latest one the correlator made
    (`last_notified`, a resolution entry's, event time) is later than the latest one a delivery
    marked (`last_marked`). A worker that keeps no marks (before session 48), or keeps no `last`
    (session 48), delivered it, say a repeat after the silence that held the first notice lifted:
    the marks no longer say who heard it, so every severity counts as told (as before the marks).
    Unknown either side (an entry or marks from an older worker): the marks stand."""
    if not last_marked or not last_notified:
        return False
    try:
        return epoch(last_marked) < epoch(last_notified)
    except ValueError:  # unreadable: unknown, so told
        return True


def step(
    scope: str, incident: Incident | None, signal: Signal, th: Thresholds, *,
    boundary: int, window_s: int, repeat_s: int, for_s: int, now_iso: str, onset: int | None = None,
) -> tuple[Incident | None, AlertRecord | None]:
    """One judgement of one (scope, kind): the incident after it, and the record of a transition if any.

    The firing condition must hold at every judgement for `for_s` of event time before the incident
    fires (like a Prometheus rule's `for:`): a noise excursion past |z| >= 3 is brief, a swing is not.
    """
    if incident is None:
        if not signal.fires(th):
            return None, None
        incident = Incident("", signal.kind, signal.severity(th), boundary, boundary, "", pending=True)
    if incident.pending:
        # Pending survives a dip under the firing threshold but not a return to calm (the same
        # hysteresis as a firing incident), so a real swing hovering around |z| = 3 is not reset.
        if signal.calm(th):
            return None, None
        since = incident.fired_window_end
        if boundary - since < for_s or not signal.fires(th):
            return incident, None
        fired = Incident(alert_id(scope, signal.kind, boundary), signal.kind, signal.severity(th), boundary, boundary, now_iso,
                         onset=onset if onset is not None else since)
        return fired, _record(scope, fired, "firing", signal, boundary, window_s, repeat=False)
    if signal.calm(th):
        return None, _record(scope, incident, "resolved", signal, boundary, window_s, repeat=False)
    if boundary - incident.last_notified >= repeat_s and signal.fires(th):
        # A swing that is still above the firing threshold is re-announced; severity only escalates.
        severity: Severity = "critical" if "critical" in (incident.severity, signal.severity(th)) else "warning"
        again = replace(incident, last_notified=boundary, severity=severity)
        return again, _record(scope, again, "firing", signal, boundary, window_s, repeat=True)
    return incident, None
