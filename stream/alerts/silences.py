"""Silences: a scope pattern (and optionally a kind) whose transitions are still recorded but not
notified until a wall-clock time. The matching is pure; the rest is their Redis hash
(`keys.SILENCES_KEY`: silence id -> JSON), who made each (`keys.SILENCE_AUTHORS_KEY`), and the
audit log's entries for made and lifted (`audit`)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import redis.asyncio as aioredis

from stream.alerts import audit
from stream.alerts.grouping import root_kinds
from stream.contracts import name_problem, normal_name
from stream.keys import AUDIT_KEY, SILENCE_AUTHORS_KEY, SILENCES_KEY
from stream.timefmt import shown
from stream.windows import OVERFLOW_NAME, matches_scope


@dataclass(frozen=True)
class Silence:
    id: str
    scope: str  # a scope or a glob pattern (asset:*)
    kind: str | None
    until: float  # wall clock, epoch seconds
    reason: str
    created_at: float
    by: str = ""  # who made it; "" for a silence made before this was kept
    via: str = ""  # console | cli

    def matches(self, scope: str, kind: str, now: float) -> bool:
        return now < self.until and matches_scope(scope, self.scope) and (self.kind is None or self.kind == kind)


MAX_SILENCE_S = 30 * 86400  # longer is a configuration change, not a silence
SCOPE_PREFIXES = ("asset", "channel", "source")
SCOPE_FORMS = "all, or asset:, channel: or source: and a name or a glob (asset:ETH, asset:*, channel:general, source:reddit)"


def scope_name(scope: str) -> str:
    """A scope as its windows are named, or ValueError: `all`, or `asset:`, `channel:` or `source:`
    and a name (`contracts.name_problem`), which may be a glob (`* ? [ ]`: no scope name holds
    those reserved characters' meaning otherwise, and a name matches itself anyway). The prefix
    and `all` in any case (`ALL`, `Asset:ETH`); an asset's ticker upper-cased, as in every scope
    (`asset:btc` would match nothing); channel and source names keep their case, as posts give
    them."""
    scope = scope.strip()
    if scope.casefold() == "all":
        return "all"
    prefix, sep, name = scope.partition(":")
    prefix = prefix.strip().lower()
    if not sep or prefix not in SCOPE_PREFIXES or not name.strip():
        raise ValueError(f"scope: {SCOPE_FORMS}")
    if prefix != "asset" and name != OVERFLOW_NAME:  # the overflow scope's name is its own, leading space and all
        name = normal_name(name)  # as a post's channel or source name is counted: `Crypto | Signals` as `Crypto ¦ Signals`
    problem = name_problem(name, joiners=prefix != "asset")
    if problem:
        raise ValueError(f"scope: the name after {prefix}: {problem}")
    return f"{prefix}:{name.upper() if prefix == 'asset' else name}"


def silence_request(scope: str, duration_s: int) -> str:
    """The scope pattern a silence is stored with (`scope_name`), or ValueError."""
    scope = scope_name(scope)
    if not 0 < duration_s <= MAX_SILENCE_S:
        raise ValueError("duration: more than zero and at most 30d")
    return scope


def unmatched(pattern: str, known: Sequence[str]) -> str | None:
    """A warning when `pattern` matches none of the scopes seen so far (`WindowStore.scopes`): a
    silence may be set ahead of an expected event, but a typo silences nothing."""
    if any(matches_scope(scope, pattern) for scope in known):
        return None
    near = [scope for scope in known if scope.casefold() == pattern.casefold()]
    hint = f" (did you mean {', '.join(near[:3])}? names are case-sensitive)" if near else ""
    return f"no scope seen so far matches {pattern}{hint}: the silence holds back nothing until posts come for it"


def silenced_by(silences: list[Silence], scope: str, kind: str, now: float) -> Silence | None:
    return next((s for s in silences if s.matches(scope, kind, now)), None)


def silences_over(silences: list[Silence], scope: str, now: float) -> list[Silence]:
    """The silences in force over `scope` (its own name or a pattern matching it), of any kind: what
    a scope's page says holds its alerts back."""
    return [s for s in silences if now < s.until and matches_scope(scope, s.scope)]


def silence_of_incident(silences: list[Silence], root_scope: str, members: Sequence[Mapping[str, Any]], now: float) -> Silence | None:
    """The silence holding an incident's notices back: every kind the incident is about
    (`grouping.root_kinds`) is silenced over its root, and this is the first kind's silence. A
    silence of one kind does not hide news of another (a volume spike silenced for a listing, the
    sentiment drop beside it is still told), as a silenced alert in a notification group does in
    Alertmanager. Delivery applies it; the console shows it."""
    found = [silenced_by(silences, root_scope, kind, now) for kind in root_kinds(root_scope, members)]
    return found[0] if found and all(found) else None


def holding(silences: list[Silence], root_scope: str, members: Sequence[Mapping[str, Any]], now: float) -> list[Silence]:
    """Every silence that holds an incident's notices back, one per kind it is about where they
    differ (`silence_of_incident`'s rule; empty where not every kind is silenced over its root):
    what a page names when it says another silence holds them."""
    found = [silenced_by(silences, root_scope, kind, now) for kind in root_kinds(root_scope, members)]
    if not found or not all(found):
        return []
    return list({s.id: s for s in found if s is not None}.values())


def holds_over(silence: Silence, scope: str, grouping: str, incidents: Sequence[Mapping[str, Any]],
               silences: list[Silence], now: float) -> dict[str, Any]:
    """What `silence`, in force over `scope`, holds back in truth, for the scope's page. Without
    grouping (SENTINEL_ALERT_GROUPING=none) delivery holds an alert's notice whose scope and kind it
    matches: this scope's alerts of its kind. With grouping, delivery asks only about an incident's
    root (`silence_of_incident`): a silence over a scope that is a member of another root's incident
    holds none of its notices. So, per open incident this scope is the root or a member of: whether
    its notices are held (`held`, by whatever silences), whether this silence is one that holds them
    (`by_this`), the kinds it is about, and its root (a member's incident is `member`); `held_by`:
    the id, pattern and kind of each silence holding them (`holding`), so "another silence" is
    named (until session 57 the page did not say which)."""
    if grouping == "none":
        return {"grouping": "none", "incidents": []}
    found: list[dict[str, Any]] = []
    for incident in incidents:
        root, members = incident["root_scope"], incident.get("members", [])
        if incident.get("state") != "open" or (root != scope and all(m["scope"] != scope for m in members)):
            continue
        kinds = root_kinds(root, members)
        by = holding(silences, root, members, now)
        held = bool(by)
        found.append({"incident_id": incident["incident_id"], "root_scope": root, "member": root != scope, "kinds": kinds,
                      "held": held, "by_this": held and any(silence.matches(root, kind, now) for kind in kinds),
                      "over_root": any(silence.matches(root, kind, now) for kind in kinds),
                      "held_by": [{"id": s.id, "scope": s.scope, "kind": s.kind} for s in by]})
    return {"grouping": grouping, "incidents": found}


# The silence hash holds exactly these fields: a version that reads a silence with one more (its
# author, say) refuses it, and during a rolling upgrade old and new versions share the hash. The
# author lives in SILENCE_AUTHORS_KEY instead.
STORED_FIELDS = ("id", "scope", "kind", "until", "reason", "created_at")

# KEYS: silences, their authors, the audit stream. ARGV: id, the silence, its author, AUDIT_ENTRIES,
# then the audit entry's fields. One script: a silence in force is always in the audit log.
_ADD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
return 1
"""

# KEYS as _ADD. ARGV: id, AUDIT_ENTRIES, then the audit entry's fields. Logged only by the call that
# removed it: two operators lifting one silence at once log it once.
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""


async def add_silence(client: aioredis.Redis, scope: str, duration_s: int, kind: str | None, reason: str,
                      *, by: str = "", via: str = "") -> Silence:
    """Store a silence, who made it (`by`) and through what (`via`), and log it; ValueError for a
    request `silence_request` or a reason `audit.reason_text` refuses."""
    scope = silence_request(scope, duration_s)
    reason = audit.reason_text(reason)
    now = time.time()
    silence = Silence(secrets.token_hex(4), scope, kind, now + duration_s, reason, now, by, via)
    stored = {name: getattr(silence, name) for name in STORED_FIELDS}
    logged = audit.entry("silence", by=by, via=via, target=silence.id, scope=scope, kind=kind or "",
                         until=shown(silence.until), reason=reason)
    await client.register_script(_ADD)(
        keys=[SILENCES_KEY, SILENCE_AUTHORS_KEY, AUDIT_KEY],
        args=[silence.id, json.dumps(stored), json.dumps({"by": by, "via": via}), audit.AUDIT_ENTRIES, *audit.flat(logged)])
    await _expire_with_the_last(client)
    return silence


async def _expire_with_the_last(client: aioredis.Redis) -> None:
    """The hashes go when their longest silence ends (expired ones are purged before that)."""
    current = await list_silences(client)
    if current:
        for key in (SILENCES_KEY, SILENCE_AUTHORS_KEY):
            await client.expireat(key, int(current[-1].until) + 60)


async def list_silences(client: aioredis.Redis, *, include_expired: bool = False) -> list[Silence]:
    """Reads only: expired silences go in `purge_expired`."""
    now = time.time()
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(SILENCES_KEY)
        pipe.hgetall(SILENCE_AUTHORS_KEY)
        stored, authors = await pipe.execute()
    found = [_silence(raw, authors.get(ident)) for ident, raw in stored.items()]
    return sorted((s for s in found if include_expired or s.until > now), key=lambda s: s.until)


def _silence(raw: str, author: str | None) -> Silence:
    # Only the known fields: a later version may store more.
    fields = json.loads(raw)
    made = json.loads(author) if author else {}
    return Silence(**{name: fields[name] for name in STORED_FIELDS}, by=made.get("by", ""), via=made.get("via", ""))


async def purge_expired(client: aioredis.Redis) -> int:
    """Drop silences whose time is up, and authors whose silence is gone (a version from before
    authors were kept lifts or purges without them); the delivery loop calls this once per drain.
    Not logged: the entry that made a silence says when it ends."""
    now = time.time()
    expired = [s.id for s in await list_silences(client, include_expired=True) if s.until <= now]
    # One snapshot of both (MULTI): a silence made between two separate reads would look orphaned.
    async with client.pipeline(transaction=True) as pipe:
        pipe.hkeys(SILENCES_KEY)
        pipe.hkeys(SILENCE_AUTHORS_KEY)
        stored, authors = await pipe.execute()
    orphans = set(authors) - set(stored)
    async with client.pipeline(transaction=False) as pipe:
        if expired:
            pipe.hdel(SILENCES_KEY, *expired)
        if expired or orphans:
            pipe.hdel(SILENCE_AUTHORS_KEY, *expired, *orphans)
        done = await pipe.execute()
    return int(done[0]) if expired else 0


async def remove_silence(client: aioredis.Redis, silence_id: str, *, by: str = "", via: str = "") -> bool:
    """Lift a silence and log who did; False if there is none with that id. ValueError for one that
    has ended but is not yet purged: lifting it said "lifted" and logged an `unsilence` after its
    end, as if someone had cut it short, while one already purged was "no silence with id"."""
    found = next((s for s in await list_silences(client, include_expired=True) if s.id == silence_id), None)
    if found is None:
        return False
    if found.until <= time.time():
        raise ValueError(f"silence {found.id} over {found.scope} already ended at {shown(found.until)} (wall clock): nothing to lift")
    logged = audit.entry("unsilence", by=by, via=via, target=found.id, scope=found.scope, kind=found.kind or "",
                         until=shown(found.until), reason="")
    return bool(await client.register_script(_REMOVE)(
        keys=[SILENCES_KEY, SILENCE_AUTHORS_KEY, AUDIT_KEY], args=[silence_id, audit.AUDIT_ENTRIES, *audit.flat(logged)]))


# Restoring silences after Redis lost them (`sentinel restore-silences`, docs/operations.md,
# "Backup and disaster recovery"): of the alert state operators made by hand, which no replay of
# forum-posts rebuilds (silences, acknowledgements, verdicts, the audit log), the silences are what
# must be back before anything notifies, so they are exported (`sentinel silences --json`) and put
# back as they were: same id, scope, kind, end, reason and author.
MAX_SILENCE_ID_CHARS = 64
# How far the restoring host's clock may run behind the one that made a silence (its `until`).
RESTORE_CLOCK_SLACK_S = 3600


def restorable(lines: Sequence[str], now: float) -> tuple[list[Silence], int]:
    """The silences of an export (`sentinel silences --json`, one JSON object a line; blank lines
    skipped) still in force at `now`, and how many had ended. ValueError naming the line for one
    that is not a silence: nothing is restored from a file with a bad line. Pure."""
    from stream.alerts.detector import KINDS

    found: list[Silence] = []
    ended = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            silence = _exported(json.loads(line), KINDS)
        except (ValueError, TypeError, KeyError) as exc:
            problem = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"line {number}: not a silence as `sentinel silences --json` writes it ({problem})") from None
        if silence.until > now + MAX_SILENCE_S + RESTORE_CLOCK_SLACK_S:
            # A made-up `created_at` would pass the length rule in `_exported`: the end, too, may lie
            # no further ahead than a silence made now could (give or take two hosts' clocks).
            raise ValueError(f"line {number}: not a silence as `sentinel silences --json` writes it "
                             "(until: at most 30d from now, as `sentinel silence --for` allows)")
        if silence.until <= now:
            ended += 1
        else:
            found.append(silence)
    return found, ended


def _exported(fields: Any, kinds: Sequence[str]) -> Silence:
    if not isinstance(fields, dict):
        raise ValueError("a JSON object")
    ident, kind = fields["id"], fields["kind"]
    if not isinstance(ident, str) or not ident or len(ident) > MAX_SILENCE_ID_CHARS or not ident.isascii() or not ident.isalnum():
        raise ValueError("id: letters and digits, at most 64")
    if kind is not None and kind not in kinds:
        raise ValueError(f"kind: one of {', '.join(kinds)} or null")
    until, created = fields["until"], fields["created_at"]
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t < 1e11 for t in (until, created)):
        raise ValueError("until and created_at: epoch seconds")
    if until - created > MAX_SILENCE_S + 1:  # as `silence_request`: a file is no way around the 30-day cap
        raise ValueError("until: at most 30d after created_at, as `sentinel silence --for` allows")
    by, via = fields.get("by", ""), fields.get("via", "")
    if not isinstance(by, str) or not isinstance(via, str) or len(via) > 20:
        raise ValueError("by and via: short text")
    by = audit.author_text(by)  # the rules `--by` has: no bidi override turning a table row around
    if not isinstance(fields["reason"], str):
        raise ValueError("reason: text")
    return Silence(ident, scope_name(str(fields["scope"])), kind, float(until), audit.reason_text(fields["reason"]), float(created), by, via)


# KEYS as _ADD. ARGV as _ADD. A silence whose id is already stored is left as it is (a restore run
# twice, or over silences made since): 0, nothing logged.
_RESTORE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
return 1
"""


async def restore_silences(client: aioredis.Redis, silences: Sequence[Silence], *, by: str = "", via: str = "") -> int:
    """Store each silence (`restorable`) as it was exported, its own author kept, unless its id is
    stored already; the audit log records who restored it (`by`, `via`) as a `silence` action.
    How many were stored."""
    restored = 0
    script = client.register_script(_RESTORE)
    for silence in silences:
        stored = {name: getattr(silence, name) for name in STORED_FIELDS}
        logged = audit.entry("silence", by=by, via=via, target=silence.id, scope=silence.scope, kind=silence.kind or "",
                             until=shown(silence.until), reason=f"restored: {silence.reason}" if silence.reason else "restored")
        restored += int(await script(keys=[SILENCES_KEY, SILENCE_AUTHORS_KEY, AUDIT_KEY],
                                     args=[silence.id, json.dumps(stored), json.dumps({"by": silence.by, "via": silence.via}),
                                           audit.AUDIT_ENTRIES, *audit.flat(logged)]))
    if silences:
        await _expire_with_the_last(client)
    return restored
