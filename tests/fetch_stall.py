"""Test-only: make aiokafka stop fetching one partition of a live worker, on demand.

Imported by a worker process the test starts (`tests/test_http.py`), before the worker runs. It
reproduces the fault Faust's "Aiokafka stopped fetching" check was written for: aiokafka's fetcher
leaves the partition out of its fetch requests, as it does for a partition it holds paused, while
the worker, its group membership and its other partitions go on as before. While the file
`$FETCH_STALL_FILE` exists, partition `$FETCH_STALL_PARTITION` of `$FETCH_STALL_TOPIC` is not
fetched; once a fetch request has been built without it (so no fetch that could still bring its
records is in flight: aiokafka builds one only for a broker with none in flight), the file
`$FETCH_STALL_FILE.on` says so. Removing the file fetches it again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

TRIGGER = Path(os.environ["FETCH_STALL_FILE"])
STALLED = (os.environ["FETCH_STALL_TOPIC"], int(os.environ["FETCH_STALL_PARTITION"]))
ON = TRIGGER.with_name(TRIGGER.name + ".on")


class _Without:
    """The assignment as `_get_actions_per_node` reads it (`tps`, `state_value`), less some partitions."""

    def __init__(self, assignment: Any, left_out: set[Any]) -> None:
        self._assignment = assignment
        self.tps = set(assignment.tps) - left_out

    def state_value(self, tp: Any) -> Any:
        return self._assignment.state_value(tp)


def install() -> None:
    original = Fetcher._get_actions_per_node

    def _get_actions_per_node(self: Fetcher, assignment: Any) -> Any:
        if not TRIGGER.exists():
            return original(self, assignment)
        left_out = {tp for tp in assignment.tps if (tp.topic, tp.partition) == STALLED}
        actions = original(self, _Without(assignment, left_out) if left_out else assignment)
        if left_out and actions[0] and not ON.exists():  # actions[0]: the fetch requests built
            ON.touch()
        return actions

    Fetcher._get_actions_per_node = _get_actions_per_node


install()
