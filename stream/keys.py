"""Every Redis key the project writes, in one place: the code twin of docs/contracts.md, "Redis key
layout" (pure). Change a key here and there together; nothing else builds a key by hand.

Window keys carry their scope as a hash tag (`sentinel:{<scope>}:...`), so one scope's keys share a
Redis Cluster slot and its Lua script is cluster-safe. Early-warning keys share the `{alerts}` slot,
so an incident's compare-and-set and its outbox entry are one atomic script.
"""

from __future__ import annotations

KEY_PREFIX = "sentinel"

# Windows (stream/store.py)
STATS_KEY = f"{KEY_PREFIX}:{{all}}:stats"  # in the `all` slot: updated by the same script as `all`
SCOPES_KEY = f"{KEY_PREFIX}:{{all}}:scopes"  # sorted set: scope -> its newest post's event time (same script)
BATCHES_KEY = f"{KEY_PREFIX}:{{all}}:batches"  # sorted set: batch token -> its newest event time (the retention; same script)
# string `<random hex>:<epoch s>`, set once (SET NX) by the first worker to probe an empty Redis, its
# expiry pushed on at every probe (twice the longest retention: it goes only once no worker has run
# for that long): a worker that reads another value than it read before knows Redis lost its data
# or was replaced under it (stream/ops/http.py, `marker_news`). The `all` slot, as the windows' keys:
# on Redis Cluster it watches that slot's master alone.
DATA_MARKER_KEY = f"{KEY_PREFIX}:{{all}}:marker"
# sorted set: `<hour>|source:S|channel:C` (or `<hour>|channel:C`, no source) -> hour start: which sources
# each channel held posts of, hour by hour (same script; written only with incident grouping, which
# reads it: a channel explains a source's move only while its posts are that source's alone)
CHANNELS_KEY = f"{KEY_PREFIX}:{{all}}:channels"
# list, oldest first: the classifiers that labelled the buckets, each a JSON object {identity, since, at}
# (stream/alerts/epochs.py); one key, appended by a compare-and-set on its length (WindowStore.append_epoch)
MODEL_EPOCHS_KEY = f"{KEY_PREFIX}:{{all}}:model-epochs"


def bucket_key(scope: str, bucket: int) -> str:
    """Hash of one event-time bucket's counts and extreme posts."""
    return f"{bucket_prefix(scope)}{bucket}"


def sample_key(scope: str, bucket: int, end: str) -> str:
    """The text of a bucket's most negative (`lo`) or most positive (`hi`) post. Kept apart from the
    bucket's hash: one long value would turn the whole hash from Redis' compact encoding into a
    hash table, several times its size."""
    return f"{bucket_key(scope, bucket)}:{end}"


def bucket_prefix(scope: str) -> str:
    return f"{KEY_PREFIX}:{{{scope}}}:b:"


def index_key(scope: str) -> str:
    """Sorted set of the scope's bucket starts (member = score = bucket start)."""
    return f"{KEY_PREFIX}:{{{scope}}}:idx"


def index_pattern(scope_pattern: str) -> str:
    """A SCAN pattern over index keys; `scope_of_index` reads the scope back."""
    return index_key(scope_pattern)


def scope_of_index(key: str) -> str:
    """index_key(scope) -> scope."""
    return _scope_of(key, index_key(""))


def _scope_of(key: str, empty: str) -> str:
    """The scope of `key`, given the same key built for the empty scope (its `{}` marks the slot)."""
    before, after = empty.split("{}")
    return key[len(before) + 1: -(len(after) + 1)]


# Roll-up levels: a hash per scope and slot (`n`, labels, `score_sum`, `score_sq`) and a sorted set
# of the slots, beside the buckets. Hours feed the console's overview, days the daily report.
ROLLUP_INDEX = {"h": "hours", "d": "days"}


def rollup_prefix(scope: str, level: str) -> str:
    return f"{KEY_PREFIX}:{{{scope}}}:{level}:"


def rollup_index_key(scope: str, level: str) -> str:
    """Sorted set of the scope's slot starts at this level (member = score = slot start)."""
    return f"{KEY_PREFIX}:{{{scope}}}:{ROLLUP_INDEX[level]}"


def day_index_key(scope: str) -> str:
    return rollup_index_key(scope, "d")


def day_index_pattern(scope_pattern: str) -> str:
    return day_index_key(scope_pattern)


def scope_of_day_index(key: str) -> str:
    return _scope_of(key, day_index_key(""))


def report_sent_key(first_day: int, days: int) -> str:
    """Hash `svc:<service>` -> when that service accepted the report of these UTC days (`sentinel
    report --notify`): a retry sends to the others only (stream/reporting/sent.py)."""
    return f"{KEY_PREFIX}:report:sent:{first_day}:{days}"


def wait_key(tag: str) -> str:
    """The key SENTINEL_REDIS_WAIT_REPLICAS writes before a WAIT; `tag` puts it on one master's slots."""
    return f"{KEY_PREFIX}:{{{tag}}}:wait"


def cap_cells_prefix(scope: str) -> str:
    """Hashes `<prefix><hour start>`: the author cap's and the text cap's lists of that hour, field
    `<author key>:<label>` or `t<text key>:<label>` -> the first posts of that author's or text's by
    (event time, id), counted or not. The window script builds it from bucket_prefix (its last two
    characters, `b:`, replaced), so the two change together. (`ac:` held the author cap's counted
    posts in another layout before the text cap; those keys are no longer read and expire.)"""
    return f"{KEY_PREFIX}:{{{scope}}}:cc:"


def cap_cells_key(scope: str) -> str:
    """Sorted set of the hours that have cap cells (member = score = hour start), for trimming;
    built by the window script like cap_cells_prefix."""
    return f"{KEY_PREFIX}:{{{scope}}}:ccells"


def seen_key(scope: str) -> str:
    """Sorted set of post ids counted in this scope (score = event time), for idempotence."""
    return f"{KEY_PREFIX}:{{{scope}}}:seen"


# Early warning (stream/alerts/engine.py, delivery.py, silences.py)
ALERTS_PREFIX = f"{KEY_PREFIX}:{{alerts}}"
OPEN_KEY = f"{ALERTS_PREFIX}:open"  # scopes with a firing or pending incident
OUTBOX_KEY = f"{ALERTS_PREFIX}:outbox"  # stream of transition records
# hash outbox entry id -> JSON list of the services that accepted (before session 51: 1), and, since
# session 52, `<entry id>:refused` -> those that refused where others accepted (`incidents.refused_field`)
# and, since session 53, `<entry id>:capped` -> how many the daily cap held back then (`incidents.capped_field`)
NOTIFIED_KEY = f"{ALERTS_PREFIX}:notified"
# sorted set: outbox entry id -> its millisecond part, for each entry acknowledged, until the trim drops
# the entry (since session 54): a group re-created at the stream's start skips them (`AlertDelivery._skip_settled`)
SETTLED_KEY = f"{ALERTS_PREFIX}:settled"
SILENCES_KEY = f"{ALERTS_PREFIX}:silences"  # hash id -> silence JSON
SILENCE_AUTHORS_KEY = f"{ALERTS_PREFIX}:silences:by"  # hash silence id -> {"by", "via"} JSON (apart: older readers refuse unknown silence fields)
AUDIT_KEY = f"{ALERTS_PREFIX}:audit"  # stream: operators' actions (acknowledge, silence, unsilence); alerts/audit.py
ALERT_STATS_KEY = f"{ALERTS_PREFIX}:stats"  # transitions, notified, silenced, delivery_failed, capped, published, entries
STAGING_KEY = f"{ALERTS_PREFIX}:staging"  # sorted set: transition records (score = boundary) not yet grouped
DIRTY_KEY = f"{ALERTS_PREFIX}:dirty"  # sorted set: scope -> event time of its newest post, until judged past it
JUDGED_KEY = f"{ALERTS_PREFIX}:judged"  # sorted set: scope -> the last boundary judged (its `until`)
ASSETS_KEY = f"{ALERTS_PREFIX}:assets"  # sorted set: asset scope -> event time of its newest post (grouping's candidates)
CORRELATION_KEY = f"{ALERTS_PREFIX}:correlation"  # hash `until` (grouped through) and `state` (open incidents, JSON)
ACKS_KEY = f"{ALERTS_PREFIX}:acks"  # hash incident id -> acknowledgement reason
ACK_LOG_KEY = f"{ALERTS_PREFIX}:ack-log"  # hash incident id -> its acknowledgements, one JSON object a line (at, by, via, reason)
VERDICTS_KEY = f"{ALERTS_PREFIX}:verdicts"  # hash incident id -> its latest verdict JSON (verdict, by, via, reason, at); alerts/verdicts.py
INCIDENTS_KEY = f"{ALERTS_PREFIX}:incidents"  # hash incident id -> summary JSON (open and closed)
INCIDENTS_INDEX_KEY = f"{ALERTS_PREFIX}:incidents:idx"  # sorted set: incident id -> opened (event time)
OUTBOX_GROUP = "notifiers"  # the outbox's consumer group: one consumer per worker


def caps_key(day: str) -> str:
    """Hash service -> notifications sent that UTC day (SENTINEL_NOTIFY_DAILY_CAP)."""
    return f"{ALERTS_PREFIX}:caps:{day}"


def told_key(ident: str) -> str:
    """Hash severity -> sent | held | failed of one incident (or ungrouped alert): whether a firing
    notification of it went out at that severity, or only silenced ones, or only ones no service
    accepted (incidents.told_routes), and `last`, the latest firing notice's time
    (incidents.marks_behind), until its resolution is delivered. A key per incident, so that it expires an idle TTL after that
    incident's own last firing notice: in one hash for all, every incident's mark kept the marks of
    those never resolved (expired state, a resolution an older worker delivered) for good."""
    return f"{ALERTS_PREFIX}:told:{ident}"


def incident_key(scope: str) -> str:
    """Hash `until` (the last boundary judged) and `incidents` (JSON) of one scope."""
    return f"{ALERTS_PREFIX}:scope:{scope}"
