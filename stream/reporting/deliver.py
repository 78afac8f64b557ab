"""Send a report file through the configured Apprise services, as an attachment (`sentinel report
--notify`, the daily CronJob).

The services and the secret-safe logging are the alerts' (stream/alerts/notify.py: the same
`SENTINEL_APPRISE_URLS` / `SENTINEL_APPRISE_CONFIG`, parsed and escaped the same way). Routing: a
report is no alert and has no severity, so it goes to services tagged `report` or `always` and to
untagged ones; a pager tagged `critical` is not woken by a daily report.

Nothing configured at all (the documented default: alerts stay in Kafka and notify nobody) is
`NotConfigured`, so a caller that sends only where a service exists (the CronJob's
`--notify-if-configured`) can tell it from services that take no report, a routing mistake.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from apprise import AppriseAttachment, NotifyFormat, NotifyType

from stream.alerts import message
from stream.alerts.notify import (build_apprise, describe, explained, fitted, one_per_service, retry_delays, route, service_key,
                                   split_entries)

if TYPE_CHECKING:
    from apprise.plugins.base import NotifyBase

    from stream.settings import Settings

log = logging.getLogger(__name__)

REPORT_TAG = "report"


Fit = Callable[[str, int, Callable[[str], int]], str]  # (text, a service's limit, its size as sent) -> the text that fits


@dataclass(frozen=True)
class ReportDelivery:
    targeted: int  # services the report was routed to
    sent: int  # services that accepted it
    failed: list[str] = field(default_factory=list)  # log-safe names of those that never did

    @property
    def ok(self) -> bool:
        return self.targeted > 0 and not self.failed


class NotConfigured(ValueError):
    """No Apprise service is configured at all: no URL entry and no config file."""


def report_services(settings: Settings) -> list[NotifyBase]:
    """The services a report goes to. NotConfigured when there are none at all (empty, blank or
    comments-only URLs and no config file); ValueError when an entry is bad or services exist but
    none takes a report."""
    urls = settings.apprise_urls.get_secret_value() if settings.apprise_urls is not None else None
    if not split_entries(urls or "") and settings.apprise_config is None:
        raise NotConfigured("no Apprise service is configured (SENTINEL_APPRISE_URLS and SENTINEL_APPRISE_CONFIG are unset or empty)")
    # One entry per endpoint (`one_per_service`): one configured under `report` and `always` got it twice.
    targets = one_per_service(route(list(build_apprise(urls, settings.apprise_config)), REPORT_TAG))
    if not targets:
        raise ValueError("no Apprise service takes the report: tag one `report` or `always`, or leave one untagged")
    return targets


def deliver_report(
    targets: Sequence[NotifyBase], path: Path, title: str, body: str, *, attempts: int = 5, backoff: float = 1.0, backoff_max: float = 30.0,
    sleep: Callable[[float], None] = time.sleep, fit: Fit = message.fit_body, body_max: int = 0,
    on_accept: Callable[[str], None] | None = None,
) -> ReportDelivery:
    """Each service in turn, up to `attempts` tries with doubling waits; one that accepted is
    never sent to again because another failed (nor, by the caller, in a run again: `on_accept`).
    `fit`: the body made to fit each service's limit (`notify.body_for`; `render.summary_text`), or
    `body_max` where that is less (SENTINEL_NOTIFY_BODY_MAX, as the worker's notices).
    `on_accept(service_key)` runs as each service accepts, before the next is tried: the caller
    marks it there, so a run killed while a later service's retries wait (an evicted pod) has its
    earlier acceptances marked and the Job's retry does not send them the report again."""
    delays = retry_delays(attempts, backoff, backoff_max)
    failed = []
    for server in targets:
        # Fitted to the service's limit (a storm day's ran past it, cut blindly or refused, until session
        # 56) once per service, as a notice is (`notify.fitted`): the same text on every attempt.
        text, body_format = fitted(server, title, body, body_max, fit)
        for attempt in range(1, attempts + 1):
            ok, error = explained(partial(_send, server, path, title, text, body_format))  # an SMTP refusal in words
            if ok:
                if on_accept is not None:
                    on_accept(service_key(server))
                break
            log.warning("report delivery attempt failed", extra={"url": describe(server), "attempt": attempt, "attempts": attempts,
                                                                  **({"error": error} if error else {})})
            if attempt < attempts:
                sleep(delays[attempt - 1])
        else:
            failed.append(describe(server))
    return ReportDelivery(targeted=len(targets), sent=len(targets) - len(failed), failed=failed)


def _send(server: NotifyBase, path: Path, title: str, text: str, body_format: NotifyFormat) -> tuple[bool, str | None]:
    """One blocking attempt: (accepted, error type name or None). Exception text can carry a full
    request URL with its token, so only the type is kept."""
    try:
        # A fresh attachment per attempt: an attachment object keeps read state.
        attach = AppriseAttachment(str(path), asset=server.asset)
        return bool(server.notify(body=text, title=title, notify_type=NotifyType.INFO, body_format=body_format, attach=attach)), None
    except Exception as exc:  # noqa: BLE001 - a plugin bug is a failed attempt, not a crash
        return False, type(exc).__name__
