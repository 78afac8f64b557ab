"""`make demo` is the main job on the embedded stack, notifying nobody, whatever the shell exports for
a real deployment (README, Quickstart): the Makefile unsets every connection and delivery setting
for it (DEMO_UNSET)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import AliasChoices

from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# The settings that point `sentinel run` and its worker at outside services, or say how to reach them.
OUTSIDE = ("kafka_", "redis_", "apprise_")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")


def make(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def demo_unset() -> set[str]:
    shown = make(["-s", "--eval", "show-demo-unset: ; @echo $(DEMO_UNSET)", "show-demo-unset"], dict(os.environ), ROOT)
    assert shown.returncode == 0, shown.stderr
    return set(shown.stdout.split())


def outside_variables() -> set[str]:
    """Every variable that sets a connection or delivery setting: SENTINEL_<FIELD> and its aliases."""
    names = set()
    for name, field in Settings.model_fields.items():
        if name.startswith(OUTSIDE):
            names.add(f"SENTINEL_{name.upper()}")
            if isinstance(field.validation_alias, AliasChoices):
                names.update(str(choice) for choice in field.validation_alias.choices)
    return names


def test_the_demo_unsets_every_connection_and_delivery_setting():
    # A setting added for the real cluster (a new Kafka or Redis option, another notifier source)
    # must be unset for the demo too, or an operator's shell reaches the cluster through it.
    missing = outside_variables() - demo_unset()
    assert not missing, f"Makefile's DEMO_UNSET lacks {sorted(missing)}"
    assert {"KAFKA_BROKER", "REDIS_URL", "SENTINEL_APPRISE_URLS", "SENTINEL_APPRISE_CONFIG"} <= demo_unset()


def test_the_demo_runs_on_the_embedded_stack_whatever_the_shell_exports(tmp_path):
    """The demo's own recipe, run in a directory of its own (a short stream for examples/, its out/
    there), with the operator's variables set to services that cannot be reached or loaded: each
    would fail the run if it were read (a Kafka connection error, 'invalid settings')."""
    examples = tmp_path / "examples"
    examples.mkdir()
    with (ROOT / "examples" / "demo-stream.jsonl").open(encoding="utf-8") as stream:
        (examples / "demo-stream.jsonl").write_text("".join(next(stream) for _ in range(40)), encoding="utf-8")
    (examples / "posts.txt").write_text("BTC to the moon\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update(
        KAFKA_BROKER="127.0.0.1:1", SENTINEL_KAFKA_BROKER="127.0.0.1:1",
        REDIS_URL="redis://127.0.0.1:1/0", SENTINEL_REDIS_URL="redis://127.0.0.1:1/0",
        SENTINEL_APPRISE_URLS="nosuchscheme://nowhere", SENTINEL_APPRISE_CONFIG=str(tmp_path / "no-such-apprise.yml"),
        # Read in any case by the settings, so unset in any case; and a half-configured TLS that
        # every command's settings check would refuse, the demo's classify step included.
        redis_url="redis://127.0.0.1:1/0", Sentinel_Kafka_Broker="127.0.0.1:1", SENTINEL_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        # The keyword scorer: the stack is what is under test, not the model.
        SENTINEL_BASE="lexicon", SENTINEL_CACHE_DIR=str(tmp_path / "cache"),
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
    )
    # `-o setup`: the test's own interpreter's venv, never (re)installed from here.
    done = make(["-o", "setup", f"VENV={Path(sys.executable).parent.parent}", "demo"], env, tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "embedded stack up" in done.stderr
    assert "127.0.0.1:1" not in done.stdout + done.stderr
    summary = json.loads((tmp_path / "out" / "demo-summary.json").read_text())
    assert summary["processed"] == 40 and summary["ended"] is True  # ended: the embedded stack's end
