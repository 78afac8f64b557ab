"""Deliver alert notifications through Apprise: severity routing, per-service retries, a chart.

Routing (explicit, over Apprise's server objects, because Apprise's own tag filter never selects
untagged services once a tag is given): a notification of severity S goes to every service tagged
S, every service tagged `always`, and every untagged service, so one plain URL works out of the
box. A resolution says the highest severity its incident reached and goes to every service any of
its firing notifications went to (the severities its outbox entry names, less any whose every
firing notification a silence held back or no service accepted), each once: a warning-only
service that heard an incident open hears it end after it turned critical. Grouped, only the
services a firing notice reached hear it, where delivery's marks say so (`only`, by `service_key`).

Delivery: every targeted service is tried concurrently, each up to `attempts` times with
exponential backoff. A service that accepted is never sent to again because another one failed.
Apprise's calls block (requests, smtplib), so each runs in a thread via `asyncio.to_thread`.

Secrets: only `server.url(privacy=True)` and `service_name` reach our log lines; exception text
(which can carry full request URLs) is reduced to the exception's type. Apprise's own DEBUG/TRACE
output includes full webhook URLs (Slack's tokens are path segments) and is dropped; its INFO and
above lines are passed through `redact`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import hashlib
import ipaddress
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
from apprise import AppriseAsset, AppriseAttachment, NotifyFormat, NotifyType
from apprise.config.base import ConfigBase
from apprise.plugins.custom_form import NotifyForm
from apprise.plugins.custom_json import NotifyJSON
from apprise.plugins.custom_xml import NotifyXML
from apprise.plugins.email import NotifyEmail
from apprise.plugins.gotify import NotifyGotify
from apprise.plugins.mattermost import NotifyMattermost
from apprise.plugins.ntfy import NotifyNtfy, NtfyMode
from apprise.plugins.rocketchat import NotifyRocketChat

from stream.logs import redact
from stream.alerts import message
from stream.alerts.grouping import Notice
from stream.alerts.incidents import AlertRecord
from stream.alerts.precision import TrackRecord

if TYPE_CHECKING:
    from apprise.plugins.base import NotifyBase

    from stream.settings import Settings

log = logging.getLogger(__name__)

ALWAYS_TAG = "always"  # Apprise's own "send regardless of the tag filter" convention

# One entry starts with an optional tag list and "=", then a scheme: "critical,warning=json://".
_ENTRY_START = re.compile(r"(?:[a-z0-9_:-]+(?:,[a-z0-9_:-]+)*=)?[a-z0-9]{1,32}://", re.IGNORECASE)
_SCHEME = re.compile(r"(?:[^=\s]*=)?([a-z0-9]{1,32})://", re.IGNORECASE)


# --- configuration --------------------------------------------------------------------------------


def split_entries(urls: str) -> list[str]:
    """Split `SENTINEL_APPRISE_URLS` into Apprise TEXT-config lines, one service per line.

    The rule: entries are separated by newlines or whitespace (so no spaces inside an entry), and
    by a comma only where the comma is followed by the start of a new entry, i.e. `scheme://` or
    `tags=scheme://`. Commas therefore keep working inside a tag list (`critical,warning=json://h`)
    and inside a URL (`mailto://...?to=a@x.org,b@x.org`). Lines starting with `#` or `;` are
    comments, as in an Apprise TEXT config.
    """
    entries: list[str] = []
    for line in urls.splitlines():
        if line.strip().startswith(("#", ";")):
            continue
        for token in line.split():
            entries.extend(_split_on_entry_commas(token))
    return [e for e in entries if e]


def _split_on_entry_commas(token: str) -> list[str]:
    parts: list[str] = []
    start = 0
    head = _ENTRY_START.match(token)
    pos = head.end() if head else 0  # commas inside the leading tag list never split
    while (comma := token.find(",", pos)) >= 0:
        nxt = _ENTRY_START.match(token, comma + 1)
        if nxt:
            parts.append(token[start:comma])
            start, pos = comma + 1, nxt.end()
        else:
            pos = comma + 1
    parts.append(token[start:])
    return parts


def build_apprise(urls: str | None, config_path: Path | None, asset: AppriseAsset | None = None) -> apprise.Apprise:
    """An Apprise object holding every configured service, loaded now (not lazily).

    `urls` uses Apprise's TEXT config syntax per entry (`[tag1,tag2=]URL`), split by
    `split_entries`. Each entry is parsed on its own by Apprise's TEXT config parser, so a bad
    entry is reported by position instead of silently emptying the whole list (Apprise drops
    the entire config on one unparseable line). Tag groups and `include` lines need
    `config_path`. Raises ValueError on every entry and a file that yields no service, one line
    each, naming the variable and the entry's position and scheme, never the URL (its tokens are
    secrets): a typo in alert routing should stop the worker at start, not lose alerts quietly, and
    each entry named at once costs one restart, not one per entry. Apprise's own messages while
    loading are silenced: they print the URL whole ("Unparseable URL slack://T000/B000/...").

    Services are materialised once; a config file is read at start, not re-read later.
    """
    _install_apprise_log_filter()
    asset = asset or AppriseAsset()
    app = apprise.Apprise(asset=asset)
    problems = []
    for n, entry in enumerate(split_entries(urls or ""), start=1):
        # The static parser, not AppriseConfig.add_config: the latter DEBUG-logs the raw content.
        with _apprise_quiet():
            services, _includes = ConfigBase.config_parse_text(entry, asset=asset)
        if services:
            app.add(services)
        else:
            problems.append(f"SENTINEL_APPRISE_URLS entry {n}: {_entry_problem(entry)}")
    if config_path is not None:
        try:
            app.add(_config_services(Path(config_path), asset))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("\n".join(problems))
    return app


def _config_services(path: Path, asset: AppriseAsset) -> list[NotifyBase]:
    if not path.is_file():
        raise ValueError("SENTINEL_APPRISE_CONFIG: not a file")
    config = apprise.AppriseConfig(asset=asset)
    with _apprise_quiet():
        added = config.add(str(path))
        services = config.services() if added else []
    if not added:
        raise ValueError("SENTINEL_APPRISE_CONFIG: the file could not be read")
    if not services:
        raise ValueError("SENTINEL_APPRISE_CONFIG: the file defines no service Apprise can load (is every URL in it well formed?)")
    return list(services)


def _entry_problem(entry: str) -> str:
    """Why an entry of SENTINEL_APPRISE_URLS loaded no service, in words safe to print: its scheme,
    never the rest (a token or password)."""
    match = _SCHEME.match(entry)
    if not match:
        return "no scheme:// (an Apprise URL such as slack://... or json://...)"
    scheme = match.group(1).lower()
    from apprise.manager_plugins import NotificationManager

    if scheme not in NotificationManager().schemas():
        return f"scheme {scheme}:// is not a known service"
    return f"{scheme}:// is a known service, but Apprise cannot load this URL: a part is missing or malformed (Apprise's wiki gives each service's URL form)"


# --- routing --------------------------------------------------------------------------------------


def tag_names(server: NotifyBase) -> set[str]:
    # Apprise tags are AppriseTag objects (with priority/retry metadata) that compare as strings.
    return {str(tag).lower() for tag in server.tags}


def route(servers: Iterable[NotifyBase], *severities: str) -> list[NotifyBase]:
    """Services for a notification routed for `severities` (a resolution's are every severity its
    incident's firing notifications went out at): tagged with any of them, tagged `always`, or
    untagged; each once, in the configured order."""
    wanted = {severity.lower() for severity in severities} | {ALWAYS_TAG}
    return [s for s in servers if not s.tags or tag_names(s) & wanted]


def one_per_service(servers: Iterable[NotifyBase]) -> list[NotifyBase]:
    """The first configured entry of each service (`service_key`) among `servers`, in order (since
    session 54). One endpoint configured twice (under two severities or tags that both route a
    notice, or with other options of its own) is sent a notification once, through its first entry,
    whose options (format, other parameters) it goes with; before, each entry sent it. Entries that
    differ in a credential header's value (`+Authorization=GenieKey team-a` and `... team-b`: one
    gateway URL whose key says which tenant it pages) stay apart, as before: `service_key` leaves
    credentials out, so they share a key, but each may reach a team the other does not. Compared in
    memory only, never hashed or stored."""
    first: dict[tuple[str, tuple[tuple[str, str], ...]], NotifyBase] = {}
    for server in servers:
        first.setdefault((service_key(server), _credential_headers(server)), server)
    return list(first.values())


def shared_keys(servers: Iterable[NotifyBase]) -> set[str]:
    """The service keys that name configured entries differing in a credential header (since session
    55): `one_per_service` sends to each, but the told marks keep one field per key for them all, so
    they cannot say which of them heard a notice. Compared in memory only, never hashed or stored."""
    seen: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for server in servers:
        seen.setdefault(service_key(server), set()).add(_credential_headers(server))
    return {key for key, variants in seen.items() if len(variants) > 1}


def by_service(outcomes: Iterable[tuple[str, bool]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The services (`service_key`) that accepted a notification and those that refused it, from
    each routed entry's (key, accepted), in order, each once (pure). One endpoint configured twice
    is one key, and since session 54 is sent a notification through one entry alone
    (`one_per_service`); where outcomes still name a key twice, an acceptance wins: the endpoint has
    the notice. Listed as refused too, a retry to the refused (`AlertDelivery._settle`) sent it to
    both entries again, a duplicate where it showed (until session 53)."""
    outcomes = list(outcomes)
    accepted = tuple(dict.fromkeys(key for key, ok in outcomes if ok))
    refused = tuple(dict.fromkeys(key for key, ok in outcomes if not ok and key not in accepted))
    return accepted, refused


def notify_type(state: str, severity: str) -> NotifyType:
    if state == "resolved":
        return NotifyType.SUCCESS
    return NotifyType.FAILURE if severity == "critical" else NotifyType.WARNING


def retry_delays(attempts: int, backoff: float, backoff_max: float) -> list[float]:
    """Waits between attempts: backoff, doubled each time, capped at backoff_max (attempts - 1 of them)."""
    return [min(backoff * 2**i, backoff_max) for i in range(max(attempts - 1, 0))]


def keyed(server: NotifyBase, key: str | None) -> NotifyBase:
    """The service as it should send one incident's notification: PagerDuty gets the incident id as
    its dedup key and Opsgenie as its alias, so every notification of one incident (and its
    resolution) lands on one page there. A shallow copy: the configured object is shared by
    concurrent deliveries and must not change."""
    field = {"pagerduty": "dedup", "opsgenie": "alias"}.get(str(getattr(server, "secure_protocol", "")))
    if not key or field is None:
        return server
    copy_ = copy.copy(server)
    setattr(copy_, field, key)
    return copy_


def with_fields(server: NotifyBase, fields: Mapping[str, str] | None) -> NotifyBase:
    """The service as it should send one notification with `fields` (`incident_id`, `state`, ...)
    as top-level keys of its JSON payload, for a webhook to read without parsing the text.

    Apprise's `notify` takes nothing per call beyond title, body, type, format and attachments; the
    JSON plugin's extra keys are its URL's `:key=value` tokens (`payload_extras`), one set per
    configured URL. So a shallow copy of a `json://` service gets this notification's keys beside
    them, as `keyed` gives a pager its key. The operator's own tokens win a clash (`:incident_id=x`
    sends x). Other services are returned as they are: Slack, e-mail and the rest carry the text
    only, and `form://`/`xml://` are left as configured."""
    extras = getattr(server, "payload_extras", None)
    if not fields or not isinstance(server, NotifyJSON) or not isinstance(extras, dict):
        return server
    copy_ = copy.copy(server)
    copy_.payload_extras = {**fields, **extras}
    return copy_


def service_key(server: NotifyBase) -> str:
    """A stable, secret-free name for one configured service: the daily cap's counter field and the
    told marks' `svc:<key>` (16 hex digits of a SHA-256; since session 51). Hashed: the URL's
    scheme, user, host, port and path as Apprise writes it, which say where it sends (a mail's
    recipients, a chat's channels and a webhook's tokens are path segments), and the parameters
    that name recipients (`_recipients`: Mattermost's channels, a mail's copies, a custom
    webhook's `-`/`:` entries), so two services that tell different people never share a key (a
    shared one was one daily count, counted by both, and one told mark: since session 51). Not
    hashed: the password, also where a plugin writes it as the user or host (a hash of a weak SMTP
    password could be brute-forced by whoever reads Redis; a rotated one leaves the key as it was), a
    webhook's headers whose names or values say they carry a credential (Authorization, X-Api-Key, Bearer ...; the
    others count since session 54, `_receiver_headers`: a gateway may route by one) and the other parameters, which Apprise versions write differently (2.x adds `retry=`,
    `wait=` and `optional=` to every URL and drops a mail's `from=` and `format=`, Slack's gains
    `mode=` and `timestamp=`) and an operator edits without changing where it sends."""
    return hashlib.sha256(_identity(server).encode()).hexdigest()[:16]


def _identity(server: NotifyBase) -> str:
    """What `service_key` hashes (see there); the log-safe name for a plugin whose `url()` fails."""
    try:
        # No fragment: Apprise writes a Rocket.Chat channel as a bare `/#risk`, which a fragment
        # would drop, and two channels would share a key.
        parts = urlsplit(server.url(privacy=False), allow_fragments=False)
    except Exception:  # noqa: BLE001 - a plugin whose url() fails: fall back on the log-safe name
        return describe(server)
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]  # never the password after it
    # Nor where a plugin writes its password elsewhere: voip.ms and Twist before the `:`, Growl and
    # Simplepush as the user, Bluesky and Free Mobile as the host.
    password = getattr(server, "password", None)
    user, host = ("" if password and unquote(part) == password else part for part in (unquote(user), host))
    return "\0".join([parts.scheme.lower(), user, host, parts.path.rstrip("/"), *_recipients(server, parts.scheme.lower(), parts.query),
                      *_receiver_headers(server)])


# Recipients that are no template token: a mail's copies, an Apprise API server's tags (which pick
# the recipients it notifies there).
_RECIPIENT_ARGS = {"cc", "bcc"}
_RECIPIENT_ARGS_OF = {"apprise": {"tags"}, "apprises": {"tags"}}
# A custom webhook's own query (`-name=`) and payload (`:name=`) entries: what a shared endpoint
# routes by. Its headers (`+name=`) are `_receiver_headers`': an Authorization header is a secret.
_RECIPIENT_KWARGS = {"params", "payload"}


def _recipients(server: NotifyBase, scheme: str, query: str) -> list[str]:
    """The parameters of a service's URL that say whom it sends to, each as `name=value`, sorted:
    a plugin's targets written as a parameter (Mattermost's `to=#channel`), a mail's `cc=` and
    `bcc=`, a custom webhook's `-name=` and `:name=`. Not the others, which Apprise versions write
    differently and an operator edits without changing who hears (`service_key`); nor a private
    one (a password)."""
    args: Mapping[str, Any] = getattr(server, "template_args", {}) or {}
    tokens: Mapping[str, Any] = getattr(server, "template_tokens", {}) or {}
    prefixes = {spec.get("prefix") for name, spec in (getattr(server, "template_kwargs", {}) or {}).items()
                if name in _RECIPIENT_KWARGS and isinstance(spec, Mapping)}
    named = _RECIPIENT_ARGS | _RECIPIENT_ARGS_OF.get(scheme, set())
    found = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        spec = _spec(args, name)
        alias = spec.get("alias_of")
        # What it stands for: a template token (2.x: Mattermost's `to` is `targets`) or another
        # parameter (1.9: its `channel` is `channels`).
        meant = (_spec(tokens, alias) or _spec(args, alias)) if isinstance(alias, str) else {}
        if spec.get("private") or meant.get("private"):
            continue
        if str(meant.get("type", "")).startswith("list:"):
            # One recipient list however a version writes it: `to=#risk` (2.3) or `channel=risk`
            # (1.9), in any order.
            found.add("to=" + ",".join(sorted({part.lstrip("#") for part in re.split(r"[\s,]+", value) if part.lstrip("#")})))
        elif name in named:
            found.add(f"{name}=" + ",".join(sorted({part for part in re.split(r"[\s,]+", value) if part})))
        elif name[:1] in prefixes:
            found.add(f"{name}={value}")
    return sorted(found)


# A header whose name says it carries a credential: its value is never hashed (a weak one could be
# brute-forced from the key by whoever reads Redis). Matched as parts of the lower-cased name; `sig`
# and `hmac` for a signature under a short name (X-Sig, X-Hmac-Sha256), `jwt`, `bearer`, `pwd`.
_SECRET_HEADER = re.compile(r"auth|token|key|secret|pass|pwd|sign|(?<![a-z])sig(?![a-z])|hmac|jwt|bearer|session|cookie|cred|api",
                            re.IGNORECASE)
# A header whose value says it carries a credential, whatever its name: it starts with an HTTP
# authentication scheme (`+X-Gateway=Bearer ...`, `Basic ...`), as an Authorization header's does.
_SECRET_VALUE = re.compile(r"\s*(bearer|basic|digest|token|negotiate|hawk|hoba|mutual|vapid|scram-sha-\d+|aws4-hmac-sha256)(\s|$)",
                           re.IGNORECASE)


def _receiver_headers(server: NotifyBase) -> list[str]:
    """A custom webhook's `+` headers that may say whom it sends to (a gateway routing by
    `X-Team`), each as `+name=value` (name lower-cased: HTTP header names are case-insensitive),
    sorted; since session 54, so two such webhooks of one URL stay two services. Never a header
    whose name says it is a credential (`_SECRET_HEADER`: Authorization, X-Api-Key, Cookie ...),
    neither its value nor its name, nor one whose value starts with an authentication scheme
    (`_SECRET_VALUE`: `Bearer ...`, `Basic ...`, under any name): two webhooks that differ only in
    those are one service, and a webhook with only such headers keeps its session-51 key. Empty for
    every other plugin."""
    kwargs = getattr(server, "template_kwargs", {}) or {}
    headers = getattr(server, "headers", None)
    if not isinstance(kwargs.get("headers"), Mapping) or not isinstance(headers, Mapping):
        return []
    return sorted(f"+{str(name).lower()}={value}" for name, value in headers.items()
                  if not _SECRET_HEADER.search(str(name)) and not _SECRET_VALUE.match(str(value)))


def _credential_headers(server: NotifyBase) -> tuple[tuple[str, str], ...]:
    """A custom webhook's `+` headers that `_receiver_headers` leaves out as credentials, as (name
    lower-cased, value), sorted: what tells apart, in memory alone (`one_per_service`), two entries
    of one service that may reach different tenants. Empty for every other plugin."""
    kwargs = getattr(server, "template_kwargs", {}) or {}
    headers = getattr(server, "headers", None)
    if not isinstance(kwargs.get("headers"), Mapping) or not isinstance(headers, Mapping):
        return ()
    return tuple(sorted((str(name).lower(), str(value)) for name, value in headers.items()
                        if _SECRET_HEADER.search(str(name)) or _SECRET_VALUE.match(str(value))))


def _spec(table: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """A plugin's description of one of its URL's parts (`template_args`, `template_tokens`), {} if none."""
    spec = table.get(name)
    return spec if isinstance(spec, Mapping) else {}


Admit = Callable[["NotifyBase"], Awaitable[str]]  # -> "send" | "limit" (send the limit notice instead) | "drop"


TEST_KEY = "sentinel-notify-test"  # the dedup key (alias) of `sentinel notify-test`'s page


def describe(server: NotifyBase) -> str:
    """A log-safe name for a service: Apprise's privacy URL (passwords and tokens masked)."""
    try:
        return redact(server.url(privacy=True))
    except Exception:  # a plugin's url() should not take a log line down with it
        return str(getattr(server, "service_name", type(server).__name__))


def cleartext(server: NotifyBase) -> str | None:
    """Why a service sends in clear text, or None: a custom webhook over http (`json://`, `xml://`,
    `form://`, not their `s` forms), or SMTP that never starts TLS (`mailto://` to a host Apprise
    does not know, or `mode=insecure`), whose login then crosses the network as it was typed; a
    self-hosted chat or push server on its http scheme (`mmost://`, `gotify://`, `rocket://`,
    `ntfy://HOST`: SELF_HOSTED), its webhook token or login in the request. The cloud services'
    plugins talk HTTPS whatever their scheme (a Slack URL's `secure` is False); a few other
    self-hosted plugins have an http scheme too and are not named. And TLS that checks no
    certificate (`verify=no`), as good as clear text to whoever can intercept it.
    None for a webhook, self-hosted or SMTP server on loopback (`127.0.0.1`, `::1`, `localhost`): a local MTA or
    a relay in the same pod, whose traffic crosses no network, was warned of at every start, which
    made the ordinary run of such an install log a WARNING (and `sentinel run` keep its log)."""
    if loopback(destination(server)):
        return None
    if isinstance(server, (NotifyJSON, NotifyXML, NotifyForm)) and not server.secure:
        return f"a webhook over plain http: use {min(_schemes(server), key=len)}s:// (https)"
    if isinstance(server, NotifyEmail) and str(getattr(server, "secure_mode", "")).lower() == "insecure":
        login = " with its user and password in clear text" if getattr(server, "password", None) else ""
        return f"SMTP without TLS{login}: use mailtos:// (STARTTLS, or mode=ssl on port 465)"
    if self_hosted_over_http(server):
        return f"a self-hosted service over plain http: use {type(server).secure_protocol}:// (https)"
    if getattr(server, "verify_certificate", True) is False:  # any plugin's `verify=no`
        return "TLS without checking the certificate (verify=no): whoever stands in between reads it; remove verify=no"
    return None


# Self-hosted servers whose plugin sends over http on its plain scheme (Apprise 2.x: `self.schema =
# "https" if self.secure else "http"`); ntfy only to a server of its own (its cloud mode is https).
SELF_HOSTED = (NotifyMattermost, NotifyGotify, NotifyRocketChat, NotifyNtfy)


def self_hosted_over_http(server: NotifyBase) -> bool:
    if not isinstance(server, SELF_HOSTED) or server.secure:
        return False
    return not (isinstance(server, NotifyNtfy) and server.mode == NtfyMode.CLOUD)


def destination(server: NotifyBase) -> str | None:
    """The host a custom webhook, a self-hosted server or an SMTP service connects to (an email's
    `smtp=` over its URL's host), or None for any other plugin, whose host part may be a token."""
    if isinstance(server, (NotifyJSON, NotifyXML, NotifyForm)) or self_hosted_over_http(server):
        return str(server.host or "") or None
    if isinstance(server, NotifyEmail):
        return str(getattr(server, "smtp_host", "") or server.host or "") or None
    return None


def loopback(host: str | None) -> bool:
    """Whether `host` is this machine's loopback (`localhost`, 127.0.0.0/8, `::1`, bracketed or not).
    A name other than `localhost` may resolve anywhere: not loopback."""
    if not host:
        return False
    host = host.strip("[]").lower()
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cleartext_services(servers: Iterable[NotifyBase]) -> list[str]:
    """A log-safe line per service that sends in clear text (`cleartext`): said at start, by the
    worker and `sentinel notify-test`, not refused (a webhook inside a trusted network is a choice)."""
    return [f"{describe(server)}: {why}" for server in servers if (why := cleartext(server))]


# --- delivery -------------------------------------------------------------------------------------


def notice_fields(notice: Notice) -> dict[str, str]:
    """An incident notice's keys in a JSON webhook's payload (`with_fields`), beside title and message."""
    return {"incident_id": notice.incident_id, "root_scope": notice.root_scope, "state": notice.state, "reason": notice.reason,
            "severity": notice.severity, "opened": notice.opened, "at": notice.at}


def record_fields(record: AlertRecord) -> dict[str, str]:
    """An ungrouped alert's keys in a JSON webhook's payload (`with_fields`)."""
    return {"alert_id": record.alert_id, "incident_id": record.incident_id or record.alert_id, "scope": record.scope,
            "kind": record.kind, "state": record.state, "severity": record.severity}


@dataclass(frozen=True)
class Delivery:
    notified: bool  # at least one service sent to, and every one sent to accepted (the daily cap's holds aside)
    # Targeted services (by `service_key`, since session 53: an endpoint configured twice is one) that
    # still failed after every attempt, and none of whose entries accepted (`by_service`).
    failures: int
    attempts: int  # the most attempts any one targeted service needed (the retry rounds used)
    targeted: int = 0
    sent: int = 0  # targeted services that accepted
    # Routed services the daily cap held back (sent the one limit notice, or nothing): a deliberate
    # hold, not a failure (`AlertDelivery._settle`).
    capped: int = 0
    # The services that accepted it (`service_key` of each as configured): delivery marks them told
    # of a firing notice, and a resolution goes to those alone (`AlertDelivery._told_services`).
    accepted: tuple[str, ...] = ()
    # The services that refused it after their retries (`service_key`): a claim after its worker
    # died, or its own worker's delivery again after a failed publish or ack, sends it to these
    # alone (since session 52; `AlertDelivery._settle` marks them).
    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    attempts: int


class Notifier:
    """Formats an `AlertRecord` and delivers it to the services its severity routes to."""

    def __init__(
        self,
        app: apprise.Apprise,
        attempts: int = 5,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        samples: int = 3,
        chart: bool = True,
        daily_cap: int = 0,
        console_url: str = "",
        window: str = "1h",
        body_max: int = 0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.app = app
        self.targets: list[NotifyBase] = list(app)  # flattened once: config files are not re-read
        self.attempts = attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.samples = samples
        self.daily_cap = daily_cap
        self.console_url = console_url  # SENTINEL_CONSOLE_URL: each notification links to its page there
        self.window = window  # SENTINEL_ALERT_WINDOW: a volume is told as posts per this window
        # SENTINEL_NOTIFY_BODY_MAX: the most characters of any body, below each service's own limit
        # (Slack takes 35,000 but advises some 4,000 for reading); 0: the service's own.
        self.body_max = body_max
        # Asked per service before each notification (AlertDelivery counts per service and day in
        # Redis); None sends everything.
        self.admit: Admit | None = None
        self.chart = chart  # whether the caller should render a chart; deliver() attaches what it gets
        # Per-service outcomes since start (for metrics): accepted, and failed after all retries.
        self.sent_total = 0
        self.failed_total = 0
        self.attempts_total = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> "Notifier":
        urls = settings.apprise_urls.get_secret_value() if settings.apprise_urls is not None else None
        return cls(
            build_apprise(urls, settings.apprise_config),
            attempts=settings.notify_attempts,
            backoff=settings.notify_backoff,
            backoff_max=settings.notify_backoff_max,
            samples=settings.alert_samples,
            chart=settings.notify_chart,
            daily_cap=settings.notify_daily_cap,
            console_url=settings.console_url,
            window=settings.alert_window,
            body_max=settings.notify_body_max,
        )

    def targets_for(self, *severities: str, only: Collection[str] | None = None) -> list[NotifyBase]:
        """The services routed for `severities`; with `only`, those among them whose `service_key`
        is in it (a resolution's: the services a firing notice of it reached)."""
        routed = route(self.targets, *severities)
        return routed if only is None else [server for server in routed if service_key(server) in only]

    async def deliver(self, record: AlertRecord, chart_png: bytes | None = None, routes: Sequence[str] = (),
                      only: Collection[str] | None = None) -> Delivery:
        """One transition's notification (`SENTINEL_ALERT_GROUPING=none`), routed for `routes` (a
        resolution: every severity its alert's firing notifications went out at), else its own.
        `only`: the services (by `service_key`) among them it goes to (a claim's or a redelivery's:
        those that refused it the first time)."""
        context = {"alert_id": record.alert_id, "scope": record.scope, "severity": record.severity}
        text = message.body(record, samples=self.samples, console_url=self.console_url, now=time.time(), routes=routes)
        return await self._deliver(context, tuple(routes) or (record.severity,), message.title(record), text,
                                   notify_type(record.state, record.severity), chart_png, record.alert_id, key=record.incident_id,
                                   fields=record_fields(record), only=only)

    async def test_each(self, severity: str) -> list[tuple[str, bool]]:
        """One test notification to every service `severity` routes to, side by side (no daily cap:
        a test is not an alert): (the service, log-safe with its tags, and whether it accepted).
        A pager (PagerDuty, Opsgenie) gets one fixed key, so repeated tests land on one page there."""
        routed = self.targets_for(severity)
        outcomes = await asyncio.gather(*(self._deliver_one(keyed(server, TEST_KEY), {"test": severity}, message.test_title(severity),
                                                            message.test_body(severity, self.console_url), NotifyType.INFO, None)
                                          for server in routed))
        return [(described, outcome.ok) for described, outcome in zip(servers_description(routed), outcomes)]

    async def deliver_notice(self, notice: Notice, records: Sequence[AlertRecord] = (), chart_png: bytes | None = None,
                             track: TrackRecord | None = None, recent: Mapping[str, Sequence[float]] | None = None,
                             routes: Sequence[str] = (), verdict: Mapping[str, Any] | None = None,
                             told_at: Mapping[str, str] | None = None, acks: Sequence[Mapping[str, Any]] = (),
                             only: Collection[str] | None = None, since_last: Mapping[str, Any] | None = None,
                             since_heard: Collection[str] | None = None, heard_before: Collection[str] | None = None) -> Delivery:
        """One incident's notification (stream/alerts/grouping.py), with the sample posts of the
        `records` it goes out with, the track record of its kinds and, for a reminder, where its
        firing scopes are now (`recent`, see message.recent_level); routed for `routes` (a
        resolution's `Entry.route_severities`), else its own severity.
        `verdict`: one already given, which a resolution says instead of asking for it. `told_at`: a
        resolution's `Entry.told_at`, when it was first told at each severity. `acks`: its
        acknowledgements, oldest first, each listed. `only`: a resolution's, the services (by
        `service_key`) that heard a firing notice of it, or a claim's or a redelivery's, those that
        refused this one the first time; the others routed hear nothing. `since_last`: an update's
        or a reminder's `Entry.since_last`, what changed since the incident's previous notice; with
        `since_heard` (the services, by `service_key`, that heard that notice) said to those alone,
        the others getting the body without it, as each service's body is its own (`body_for`). A
        service key that names several configured entries differing in a credential header (two
        tenants of one gateway, `one_per_service`) is one told mark for them all, which cannot say
        which of them heard that notice: none of them reads the line. `heard_before`: the services
        (by `service_key`) that heard some firing notice of the incident, where the told marks know
        (None where not); an update or a reminder to any other is titled as a first notice, as it
        is the first it hears (a `critical=` pager first told by the escalation read "(update)")."""
        context = {"incident_id": notice.incident_id, "scope": notice.root_scope, "severity": notice.severity}
        now = time.time()

        def body(since: Mapping[str, Any] | None) -> str:
            return message.notice_body(notice, records, samples_shown=self.samples, console_url=self.console_url, track=track,
                                       window=self.window, recent=recent, now=now, verdict=verdict, routes=routes, told_at=told_at,
                                       acks=acks, since_last=since)

        text = body(since_last)
        unread = body(None) if since_last is not None and since_heard is not None else text  # the line is never in it
        heard = set(since_heard or ()) - shared_keys(self.targets)
        title = message.notice_title(notice)
        # One hearing the incident for the first time: its title reads as a first notice's.
        first_title = message.notice_title(replace(notice, reason="new")) if notice.reason in ("update", "repeat") else title
        before = None if heard_before is None else set(heard_before)

        def per_service(server: NotifyBase) -> tuple[str, str]:
            key = service_key(server)
            return (first_title if before is not None and key not in before else title), (text if key in heard else unread)

        differs = unread != text or (before is not None and first_title != title)
        return await self._deliver(context, tuple(routes) or (notice.severity,), title, text,
                                   notify_type(notice.state, notice.severity), chart_png, notice.incident_id, key=notice.incident_id,
                                   fields=notice_fields(notice), only=only, said_for=per_service if differs else None)

    async def _deliver(self, context: dict[str, Any], severities: Sequence[str], head: str, text: str, kind: NotifyType,
                       chart_png: bytes | None, name: str, key: str | None = None,
                       fields: Mapping[str, str] | None = None, only: Collection[str] | None = None,
                       said_for: Callable[[NotifyBase], tuple[str, str]] | None = None) -> Delivery:
        """`said_for`: a service's own title and body (by the service as configured), where they
        differ: an update's since-last line goes only to the services that heard the notice it counts
        from, and one hearing the incident for the first time is titled as a first notice."""
        routed = one_per_service(self.targets_for(*severities, only=only))
        if not routed:
            log.info("no notification service for this severity", extra=context)
            return Delivery(notified=False, failures=0, attempts=0)
        targets: list[tuple[NotifyBase, NotifyBase]] = []  # (as it sends this one, as configured: what the logs name)
        capped = []
        verdicts: dict[str, str] = {}  # service_key -> the daily cap's verdict: a service counts once
        for server in routed:
            if (service := service_key(server)) not in verdicts:
                verdicts[service] = await self.admit(server) if self.admit is not None else "send"
            verdict = verdicts[service]
            if verdict == "send":
                targets.append((with_fields(keyed(server, key), fields), server))
            elif verdict == "limit":
                capped.append(server)
        if capped:
            await asyncio.gather(*(self._deliver_one(server, {**context, "limit": "daily"}, message.LIMIT_TITLE, message.limit_body(self.daily_cap),
                                                     NotifyType.WARNING, None) for server in capped))
        if len(targets) < len(routed):
            log.warning("daily notification cap reached for some services", extra={**context, "capped": len(routed) - len(targets)})
        if not targets:
            return Delivery(notified=False, failures=0, attempts=0, targeted=len(routed), capped=len(routed))
        # Apprise attaches files by path; the chart lives in a private temp dir for this delivery
        # only (mkdtemp/rmtree of one small file are too quick to be worth a thread).
        tmp = Path(tempfile.mkdtemp(prefix="sentinel-chart-")) if chart_png else None
        try:
            chart_path = await _write_chart(tmp, name, chart_png) if tmp and chart_png else None
            outcomes = await asyncio.gather(
                *(self._deliver_one(server, context, *(said_for(configured) if said_for else (head, text)), kind, chart_path, configured)
                  for server, configured in targets)
            )
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        sent = sum(o.ok for o in outcomes)
        accepted, refused = by_service([(service_key(configured), outcome.ok) for (_, configured), outcome in zip(targets, outcomes)])
        return Delivery(
            # A service the daily cap held back is no failure: one that accepted was told (until
            # session 51 such a notice was published `notified: false`, though it reached someone).
            notified=not refused,
            failures=len(refused),
            attempts=max(o.attempts for o in outcomes),
            targeted=len(outcomes),
            sent=sent,
            capped=len(routed) - len(targets),
            accepted=accepted,
            refused=refused,
        )

    async def _deliver_one(
        self,
        server: NotifyBase,
        about: dict[str, Any],
        head: str,
        text: str,
        kind: NotifyType,
        chart_path: Path | None,
        configured: NotifyBase | None = None,
    ) -> _Outcome:
        context: dict[str, Any] = {
            **{k: v for k, v in about.items() if k != "severity"},
            "service": server.service_name,
            # The service as configured: a copy's URL carries this notification's payload keys
            # (`with_fields`: a forum's channel name among them) and a pager's key.
            "url": describe(configured or server),
        }
        delays = retry_delays(self.attempts, self.backoff, self.backoff_max)
        # Fitted once per service and notification, in a thread (CPU: a market-wide notice of 5,000
        # scopes took seconds to fit Google Chat), and the same body sent on every retry: fitted
        # again on each attempt (until session 56) it cost that much again each time.
        body, body_format = await asyncio.to_thread(fitted, server, head, text, self.body_max)
        for attempt in range(1, self.attempts + 1):
            self.attempts_total += 1
            ok, error = await asyncio.to_thread(_send, server, head, body, body_format, kind, chart_path)
            if ok:
                self.sent_total += 1
                return _Outcome(True, attempt)
            ctx = {**context, "attempt": attempt, "attempts": self.attempts}
            if error:
                ctx["error"] = error
            if attempt < self.attempts:
                log.warning("notification attempt failed; retrying", extra={**ctx, "retry_in": delays[attempt - 1]})
                await asyncio.sleep(delays[attempt - 1])
            else:
                log.warning("notification attempt failed", extra=ctx)
        self.failed_total += 1
        log.error("notification failed after all attempts", extra={**context, "attempts": self.attempts, **({"error": error} if error else {})})
        return _Outcome(False, self.attempts)


async def _write_chart(directory: Path, alert_id: str, png: bytes) -> Path:
    # The name is what email clients and chat services show; the suffix gives the image/png type.
    path = directory / f"chart-{re.sub(r'[^A-Za-z0-9_-]', '', alert_id)[:40] or 'alert'}.png"
    await asyncio.to_thread(path.write_bytes, png)
    return path


def _send(
    server: NotifyBase, head: str, body: str, body_format: NotifyFormat, kind: NotifyType, chart_path: Path | None
) -> tuple[bool, str | None]:
    """One blocking attempt of a body already fitted (`fitted`). Returns (accepted, what failed or None): `explained`."""
    return explained(lambda: _notify(server, head, body, body_format, kind, chart_path))


def explained(attempt: Callable[[], tuple[bool, str | None]]) -> tuple[bool, str | None]:
    """One blocking attempt (accepted, an exception's type name or None), with an SMTP server's
    refusal in words where it raised nothing: Apprise itself says only "Connection error while
    submitting email", its reason at DEBUG, which never goes out; noted here for this attempt
    (`smtp_reason`). Alerts and reports alike."""
    notes: list[str] = []
    token = _ATTEMPT_NOTES.set(notes)  # this thread's, in the context asyncio.to_thread copied
    try:
        ok, error = attempt()
    finally:
        _ATTEMPT_NOTES.reset(token)
    return ok, error or (None if ok else smtp_reason(notes))


def _notify(server: NotifyBase, head: str, body: str, body_format: NotifyFormat, kind: NotifyType,
            chart_path: Path | None) -> tuple[bool, str | None]:
    try:
        # A fresh attachment object per attempt and service: attachments keep read state, and
        # services run concurrently.
        attach = AppriseAttachment(str(chart_path), asset=server.asset) if chart_path else None
        ok = server.notify(body=body, title=head, notify_type=kind, body_format=body_format, attach=attach)
        return bool(ok), None
    except Exception as exc:  # noqa: BLE001 - a plugin bug is a failed attempt, not a crashed worker
        return False, type(exc).__name__


def fitted(server: NotifyBase, head: str, text: str, body_max: int = 0,
           fit: Callable[[str, int, Callable[[str], int]], str] | None = None) -> tuple[str, NotifyFormat]:
    """A notification's plain-text body as one service is sent it, on every attempt: fitted to the
    most it takes for the title `head` (`body_limit`, `body_for`), or `body_max` where that is less
    (`capped_limit`, SENTINEL_NOTIFY_BODY_MAX). TEXT: the body is plain text. Each
    plugin then converts it for its medium (Slack escapes `& < >`), and nothing is read as markup.
    A mail sent as HTML gets ours (`message.html_text`). The text unfitted where fitting fails (a
    plugin's bug): a sizing must never cost the notification. Still in the service's format: sent as
    TEXT to a mail that sends HTML, Apprise converted it its own way (every space non-breaking, so no
    line wrapped) or, an API's under Apprise 1.9, not at all (its lines run together, an `&` read as
    markup); it is our escaped HTML there as when it fits. `fit`: as `body_for`'s (a report's own)."""
    try:
        return body_for(server, text, capped_limit(body_limit(server, head), body_max), head, fit)
    except Exception as exc:  # noqa: BLE001 - the service may still take it whole
        unfitted = _unfitted(server, text)
        log.warning("could not fit a notification to its service; sending it unfitted",
                    extra={"service": getattr(server, "service_name", ""), "error": type(exc).__name__, "format": unfitted[1].value})
        return unfitted


def _unfitted(server: NotifyBase, text: str) -> tuple[str, NotifyFormat]:
    """`text` whole, in the format the service is sent (`body_for`'s, without the fitting)."""
    try:
        html = sends_html(server)
    except Exception:  # noqa: BLE001 - a plugin that cannot say its format: plain text, which every one takes
        html = False
    return (message.html_text(text), NotifyFormat.HTML) if html else (text, NotifyFormat.TEXT)


def capped_limit(limit: int, body_max: int) -> int:
    """The most characters of body a service is sent (pure): its own `limit` (`body_limit`; 0 where
    its plugin gives none), or the operator's `body_max` (SENTINEL_NOTIFY_BODY_MAX) where that is
    less or the service has none; 0 (no cap) where neither is set."""
    if body_max <= 0:
        return limit
    return min(limit, body_max) if limit > 0 else body_max


def body_for(server: NotifyBase, text: str, limit: int = 0, head: str = "",
             fit: Callable[[str, int, Callable[[str], int]], str] | None = None) -> tuple[str, NotifyFormat]:
    """A plain-text body as a service is handed it, with its format: as it is (TEXT), but as our own
    HTML to a mail service that sends HTML (`sends_html`). Alerts and reports alike. `limit`: the
    most characters the service takes (`body_limit`, for the title `head`), as sent (the HTML's
    length for HTML, and as Apprise converts it for the service: `sent_size`); 0: no cap. `fit`
    makes the text fit (text, limit, size): an alert's samples and related scopes are left out
    (`message.fit_body`), a report's asset lines (`render.summary_text`, since session 56)."""
    fit = fit or message.fit_body  # looked up at each call, not bound at import (a test counts its calls)
    if sends_html(server):
        return message.html_text(fit(text, limit, lambda t: len(message.html_text(t)))), NotifyFormat.HTML
    return fit(text, limit, lambda t: sent_size(server, t, head)) if limit > 0 else text, NotifyFormat.TEXT


def sent_size(server: NotifyBase, text: str, head: str = "") -> int:
    """How long a plain-text body is as Apprise sends it (its default overflow mode, `upstream`):
    converted to the service's own format first (Telegram's HTML, each line break a `\r\n`; Google Chat's
    Markdown, `_` escaped), the title folded in where the service has none, counted here as
    `body_limit` already allows for it (`len(head) + 2`), its markup (`<b>...</b>`) beyond that
    counted. Measured as plain text, a notice fitted to Telegram went out 36 characters past its
    4,096. Apprise's own preparation of a send (`_build_send_calls`, Apprise 2.x, no I/O); the
    plain length where this Apprise has none or it fails."""
    build = getattr(server, "_build_send_calls", None)
    if not text or build is None:
        return len(text)
    try:
        calls = list(build(body=text, title=head, body_format=NotifyFormat.TEXT, overflow=apprise.OverflowMode.UPSTREAM))
        folded = len(head) + 2 if head and getattr(server, "title_maxlen", 1) <= 0 else 0
        return max(len(str(call.get("body") or "")) for call in calls) - folded if calls else len(text)
    except Exception:  # noqa: BLE001 - a sizing guess must never fail a notification
        return len(text)


def body_limit(server: NotifyBase, head: str) -> int:
    """The most characters of body a service takes: its Apprise plugin's `body_maxlen` (Slack
    35,000, Discord 2,000, Telegram 4,096, Mattermost 4,000, PagerDuty 1,024, 32,768 where a plugin
    says none, Apprise 2.3), less the title where the service has no title field and Apprise puts
    it at the body's head (`title_maxlen` 0), or where the limit is the title's and the body's
    together (`overflow_amalgamate_title`: Discord sends `title\r\nbody` as one `content` of 2,000,
    and a body of 2,000 alone was refused). Apprise's default overflow mode (`upstream`) sends a
    longer body as it is, for the service to cut blindly or refuse; `truncate` cut it at the limit
    itself, the console link and the actions with it. 0 where the plugin gives no number."""
    maxlen = getattr(server, "body_maxlen", 0)
    if not isinstance(maxlen, int) or maxlen <= 0:
        return 0
    if head and (getattr(server, "title_maxlen", 1) <= 0 or getattr(server, "overflow_amalgamate_title", False) is True):
        # Apprise joins them with "\r\n"; an amalgamated title it counts with room for a split's
        # " [1/2]" counter (`overflow_max_display_count_width`, 12), which its truncate mode keeps too.
        width = getattr(server, "overflow_max_display_count_width", 0)
        maxlen -= len(head) + max(2, width if isinstance(width, int) and getattr(server, "title_maxlen", 1) > 0 else 2)
    return max(maxlen, 1)


# Apprise's mail services other than SMTP (`mailto://`), by URL scheme: SES, SendGrid, Mailgun,
# Office 365, SparkPost, SMTP2Go, Postmark and Resend send HTML only, the others (Apprise 2.x)
# with `format=html`, as SMTP's. Not Telegram, whose HTML is a few inline tags (Apprise reduces it), nor a chat.
MAIL_SCHEMES = frozenset({"ses", "sendgrid", "mailgun", "o365", "azure", "sparkpost", "smtp2go", "postmark", "resend",
                          "brevo", "mailersend", "acs", "groundmail", "sendpulse"})


def _schemes(server: NotifyBase) -> set[str]:
    """The URL schemes of a service's plugin (a name or a tuple of them, in Apprise 1.9 and 2.x)."""
    found: set[str] = set()
    for attr in ("protocol", "secure_protocol"):
        value = getattr(server, attr, None)
        found.update([value] if isinstance(value, str) else value or ())
    return {s.lower() for s in found if isinstance(s, str)}


def sends_html(server: NotifyBase) -> bool:
    """Whether a mail service sends its notices as HTML: SMTP's with `format=html` on its URL under
    Apprise 2.x, by default under 1.9 (unless `format=text`); an API's (`ses://`, `sendgrid://`...,
    `MAIL_SCHEMES`) always or with `format=html`. Apprise's text-to-HTML conversion writes every space as
    `&nbsp;`, and no line of such a mail wrapped (`message.html_text`); Apprise 1.9 converted
    nothing on this path, and an API's HTML was our text as it was, its lines run together."""
    if not (isinstance(server, NotifyEmail) or _schemes(server) & MAIL_SCHEMES):
        return False
    resolve = getattr(server, "resolve_format", None)  # Apprise 2.x
    formats = resolve(NotifyFormat.TEXT) if callable(resolve) else server.notify_format
    return bool(formats == NotifyFormat.HTML)


# --- Apprise's own logging -----------------------------------------------------------------------


# Apprise's DEBUG lines of the attempt running in this thread that give an exception's text
# ("Socket Exception: ..."), for `smtp_reason`; None outside an attempt.
_ATTEMPT_NOTES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("attempt_notes", default=None)
_NOTED = "Socket Exception"
# smtplib's refusals, as its exceptions say them (Apprise notes `str(e)`), in the operator's words.
# Only these are ever said: an exception's own text may quote a URL's secret path.
_SMTP_REASONS = (
    (re.compile(r"SMTP AUTH extension not supported by server"),
     "the SMTP server offers no login (AUTH) but the URL gives a user and password: remove them, or use the server's "
     "port that takes a login (587 with mode=starttls, 465 with mode=ssl)"),
    (re.compile(r"\(53[45], "), "the SMTP server refused the URL's user and password"),
    (re.compile(r"STARTTLS extension not supported by server"),
     "the SMTP server offers no STARTTLS: use mode=ssl on its SSL port (465), or mode=insecure where the network is trusted"),
)


def smtp_reason(notes: Sequence[str]) -> str | None:
    """Why an SMTP server refused an attempt, from Apprise's noted DEBUG lines (pure), in words of
    our own (never the lines: no secret can pass); None where no known refusal is among them."""
    return next((reason for note in notes for pattern, reason in _SMTP_REASONS if pattern.search(note)), None)


# While a service is being loaded, Apprise's messages about it quote its URL whole: none go out.
_APPRISE_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("apprise_quiet", default=False)
# Any URL in an Apprise message: a web address keeps its host (what failed is worth knowing), an
# Apprise service URL keeps only its scheme (its "host" is often a token: slack://T000/..., tgram://BOT).
_APPRISE_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31})://([^\s'\"<>()]*)")


def _cut_url(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    if scheme.lower() in ("http", "https"):
        host = re.split(r"[/?#]", rest.rpartition("@")[2], maxsplit=1)[0]
        return f"{scheme}://{host}/***" if host else f"{scheme}://***"
    return f"{scheme}://***"


@contextlib.contextmanager
def _apprise_quiet() -> Iterator[None]:
    token = _APPRISE_QUIET.set(True)
    try:
        yield
    finally:
        _APPRISE_QUIET.reset(token)


def redact_apprise(text: str) -> str:
    """An Apprise log message with no URL's secret in it (pure): `redact`, then every URL cut to its
    scheme (and the host of an http(s) one)."""
    return _APPRISE_URL.sub(_cut_url, redact(text))


class _AppriseLogFilter(logging.Filter):
    """Drops Apprise's DEBUG/TRACE lines (they print full webhook URLs and payloads) and every line
    logged while a service is loaded (they quote its URL), and cuts the URLs out of the rest.
    Installed on the `apprise` logger, which every Apprise plugin logs through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            notes = _ATTEMPT_NOTES.get()
            if notes is not None and str(record.msg).startswith(_NOTED):  # the format, not a payload, read first
                notes.append(record.getMessage())
            return False
        if _APPRISE_QUIET.get():
            return False
        try:
            text = record.getMessage()
        except Exception:  # malformed %-args: let logging report it as it normally would
            return True
        record.msg, record.args = redact_apprise(text), ()
        return True


def _apprise_enabled_for(level: int) -> bool:
    """The `apprise` logger's `isEnabledFor`: its level (INFO), or DEBUG within an attempt in this
    thread (`explained`), whose exception text the filter notes and drops. Not the logger at DEBUG:
    a child logger (`apprise.xmpp`) inherits the level, and its records pass only the filters of
    their own logger, not `apprise`'s, so its DEBUG lines (URLs, payloads) reached the log."""
    if logging.DEBUG <= level < logging.INFO and _ATTEMPT_NOTES.get() is not None:
        return True
    # INFO and above as the rest of the process logs: not below the root's level (SENTINEL_LOG_LEVEL),
    # which a logger with a level of its own no longer inherits.
    return level >= max(_APPRISE_LOG.level, logging.getLogger().getEffectiveLevel())


_APPRISE_LOG = logging.getLogger("apprise")


def _install_apprise_log_filter() -> None:
    logger = _APPRISE_LOG
    if not any(isinstance(f, _AppriseLogFilter) for f in logger.filters):
        logger.addFilter(_AppriseLogFilter())
    # And so its children: none of their DEBUG lines is even made; none under the root's level either.
    logger.setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
    logger.isEnabledFor = _apprise_enabled_for  # type: ignore[method-assign]


def servers_description(servers: Sequence[NotifyBase]) -> list[str]:
    """Log-safe descriptions with tags, for a start-up line such as "notifying: ..."."""
    return [f"{describe(s)} tags={','.join(sorted(tag_names(s))) or '-'}" for s in servers]
