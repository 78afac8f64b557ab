"""Notifications per event on the demo stream: `sentinel run examples/demo-stream.jsonl` with a real
local webhook (Apprise json://), per detector, without and with incident grouping. Counts what a
risk team's Slack would receive for the demo's one ETH swing.

    .venv/bin/python bench/demo_notices.py [--detectors zscore,sequential] [--groupings none,incidents] [--bodies]
        [--out docs/results/demo_notices.json]

`--bodies` keeps each grouped notice's whole text (the payload's `message`), as the risk team reads it.

Runs on the embedded stack (`sentinel run` starts its own broker and Redis), the real classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from workers import Hook  # noqa: E402

STREAM = ROOT / "examples" / "demo-stream.jsonl"
PAYLOAD_KEYS = ("incident_id", "root_scope", "state", "reason", "severity", "opened", "at")  # notify.notice_fields


def run(detector: str, grouping: str, hook: Hook, workdir: Path, bodies: bool = False) -> dict:
    out = workdir / f"{detector}-{grouping}"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SENTINEL_ALERT_DETECTOR": detector, "SENTINEL_ALERT_GROUPING": grouping,
           "SENTINEL_APPRISE_URLS": hook.url, "SENTINEL_NOTIFY_CHART": "false"}
    hook.accepted.clear()
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(STREAM), "--alerts-out", str(out / "alerts.jsonl")],
                       env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    records = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    titles = [p["title"] for p in hook.accepted]
    resolved = sum(t.startswith("[RESOLVED]") for t in titles)
    found = {"detector": detector, "grouping": grouping, "records": len(records), "incidents": len({r["incident_id"] for r in records}),
             "notifications": len(titles), "firing": len(titles) - resolved, "resolved": resolved, "titles": titles}
    if grouping == "incidents":
        # What a webhook reads of each notice besides its title: the payload's own keys, and the
        # body's line of times ("opened ...; as of ..." or, resolved, "...; declared over ...").
        found["notices"] = [{**{k: p[k] for k in PAYLOAD_KEYS if k in p},
                             "times": next((line for line in p["message"].splitlines() if line.startswith("opened ")), ""),
                             **({"title": p["title"], "message": p["message"]} if bodies else {})}
                            for p in hook.accepted]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default="zscore,sequential")
    parser.add_argument("--groupings", default="none,incidents")
    parser.add_argument("--bodies", action="store_true", help="keep each grouped notice's title and whole message")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    hook = Hook()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for detector in args.detectors.split(","):
                for grouping in args.groupings.split(","):
                    found = run(detector, grouping, hook, Path(tmp), bodies=args.bodies)
                    results.append(found)
                    print(f"{detector:10} {grouping:9} records {found['records']:3}  incidents {found['incidents']:2}  "
                          f"notifications {found['notifications']:3} (firing {found['firing']}, resolved {found['resolved']})", flush=True)
    finally:
        hook.close()
    if args.out:
        # The scorer and any other setting taken from the shell decide the notices: name them with the command.
        shell = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("SENTINEL_") and "APPRISE" not in k)
        args.out.write_text(json.dumps({"command": " ".join(filter(None, [shell, *sys.argv])), "stream": str(STREAM.relative_to(ROOT)), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
