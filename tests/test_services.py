"""The embedded stack starts real servers and never leaves one behind."""

import os

import pytest
import redis

from stream.services import embedded_stack, port_open


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; Popen.wait reaps ours.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"



@pytest.fixture()
def started(monkeypatch) -> list[int]:
    """PIDs of every server process the stack starts (observed, not replaced)."""
    import stream.services as services

    pids: list[int] = []
    real = services.Process.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        pids.append(self.proc.pid)

    monkeypatch.setattr(services.Process, "__init__", spy)
    return pids


def test_stack_starts_serves_and_stops(started):
    with embedded_stack() as stack:
        assert redis.Redis.from_url(stack.redis_url).ping()
        assert port_open(int(stack.kafka_broker.rsplit(":", 1)[1]))
        assert len(started) == 2 and all(alive(pid) for pid in started)
    assert not any(alive(pid) for pid in started)


def test_stack_stops_on_error(started):
    with pytest.raises(RuntimeError, match="boom"):
        with embedded_stack():
            raise RuntimeError("boom")
    assert started and not any(alive(pid) for pid in started)
