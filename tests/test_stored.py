"""Stored records read back across versions (pure, no servers): a field a newer worker added is
dropped, a required field that is missing still fails and names itself. During a rolling upgrade
an older worker shares the outbox, the scope state and the grouping state with a newer one."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import pytest

from stream.alerts.grouping import GroupState, Incident, Member, Notice
from stream.alerts.incidents import AlertRecord
from stream.alerts.incidents import Incident as ScopeIncident
from stream.alerts.incidents import record_from_json
from stream.alerts.sequential import SeqState
from stream.stored import from_stored
from stream.windows import Sample


def stored(data: dict) -> dict:
    """As read back from Redis: JSON text and back."""
    return json.loads(json.dumps(data))


RECORD = AlertRecord(
    alert_id="a1", scope="asset:ETH", kind="sentiment_drop", state="firing", severity="warning",
    window_start="2026-03-04T11:00:00Z", window_end="2026-03-04T12:00:00Z", value=0.6, baseline=0.2, zscore=5.0,
    posts=40, sample_post_ids=["p1"], notified=False, fired_at="2026-03-04T12:00:05Z", onset="2026-03-04T11:50:00Z",
    metric="negative_share", samples=[Sample("p1", "eth is dumping", "negative", -0.9)],
)

NOTICE = Notice("i1", "asset:ETH", "firing", "new", "warning", "2026-03-04T12:05:00Z", "2026-03-04T12:00:00Z", False,
                [{"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True, "severity": "warning"}])


def test_an_outbox_record_with_a_newer_field_on_it_and_on_a_sample_reads_as_without():
    data = stored(asdict(RECORD))
    data["from_the_future"] = 1
    data["samples"][0]["from_the_future"] = "x"
    assert record_from_json(data) == RECORD


def test_an_outbox_notice_with_a_newer_field_reads_as_without():
    data = stored({"records": [asdict(RECORD)], "notice": {**NOTICE.to_json(), "from_the_future": {"a": 1}}})
    assert Notice.from_json(data["notice"]) == NOTICE


def test_a_scope_incident_with_a_newer_field_reads_as_without():
    incident = ScopeIncident("a1", "sentiment_drop", "warning", 1000, 1000, "2026-03-04T12:00:05Z", onset=900)
    assert ScopeIncident.from_json(stored({**incident.to_json(), "from_the_future": True})) == incident


def test_a_grouped_incidents_member_with_a_newer_field_reads_as_without():
    member = Member("asset:ETH", "sentiment_drop", True, "warning", "2026-03-04T11:50:00Z", "negative_share", 0.6, 0.2)
    state = GroupState({"i1": Incident("i1", "asset:ETH", 1000, {member.key: member})})
    data = stored(state.to_json())
    data["incidents"]["i1"]["members"][member.key]["from_the_future"] = 2
    assert GroupState.from_json(data) == state


def test_a_sequential_bank_with_a_newer_field_reads_as_without():
    state = SeqState.fresh(1000)
    data = stored(state.to_json())
    data["banks"]["volume"]["from_the_future"] = [1.0]
    assert SeqState.from_json(data).banks == state.banks


def test_a_missing_required_field_still_fails_and_names_it():
    data = stored(asdict(RECORD))
    del data["severity"], data["zscore"]
    with pytest.raises(TypeError, match="a stored AlertRecord lacks its required fields severity, zscore"):
        record_from_json(data)
    notice = NOTICE.to_json()
    del notice["members"]
    with pytest.raises(TypeError, match="a stored Notice lacks its required field members$"):
        Notice.from_json(notice)


def test_a_missing_field_with_a_default_takes_it():
    """A record an older worker wrote, before a field with a default was added, still reads."""
    data = stored(asdict(RECORD))
    del data["acknowledged"]
    assert record_from_json(data) == RECORD


def test_a_dropped_field_is_logged_once_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="stream.stored")
    for _ in range(3):
        from_stored(Sample, {"id": "p1", "text": "t", "label": "neutral", "score": 0.0, "logged_once": 1})
    told = [r for r in caplog.records if getattr(r, "field", None) == "logged_once"]
    assert len(told) == 1 and told[0].levelno == logging.DEBUG and told[0].type == "Sample"
