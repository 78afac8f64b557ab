"""What the risk team is told about one input: `sentinel run FILE` on the embedded stack with the
keyword scorer (SENTINEL_BASE=lexicon unless set) and a local Apprise json:// receiver, then the
records, incidents (by root), notifications (by reason) and posts capped, per run. Runs of the same
code should agree on everything but `fired_at`: `records_sha256` hashes the records without it,
`transitions_sha256` without what grouping adds too (incident, root, notified, acknowledged).

    .venv/bin/python bench/incident_counts.py d-pre2023.jsonl --runs 2 [--workers 2] [--keep DIR] --out docs/results/X.json

`--keep DIR` keeps each run's records, summary and worker log in DIR/run<N>/.

Counts only: no post text is kept. The code measured is this checkout's (`commit` in the output).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REASONS = (("[RESOLVED]", "resolved"), (" (update)", "update"), (" (still firing)", "repeat"))


class Receiver:
    """Keeps the title of every notification posted to it (Apprise's json:// body)."""

    def __init__(self) -> None:
        self.titles: list[str] = []
        titles = self.titles

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                titles.append(json.loads(body).get("title", ""))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reason(title: str) -> str:
    return next((name for mark, name in REASONS if mark in title), "new")


def summarise(records: list[dict], titles: list[str], summary: dict) -> dict:
    last_root: dict[str, str] = {}
    for r in records:
        last_root[r["incident_id"]] = r["root_scope"]
    stripped = "\n".join(json.dumps({k: v for k, v in r.items() if k != "fired_at"}, sort_keys=True) for r in records)
    grouping = {"fired_at", "incident_id", "root_scope", "notified", "acknowledged"}
    judged = "\n".join(json.dumps({k: v for k, v in r.items() if k not in grouping}, sort_keys=True) for r in records)
    return {
        "records": len(records),
        "records_sha256": hashlib.sha256(stripped.encode()).hexdigest(),
        # The transitions as judged, without what grouping adds: equal where only grouping changed.
        "transitions_sha256": hashlib.sha256(judged.encode()).hexdigest(),
        "incidents": len(last_root),
        "incidents_by_root": dict(sorted(collections.Counter(last_root.values()).items())),
        "notifications": len(titles),
        "notifications_by_reason": dict(sorted(collections.Counter(reason(t) for t in titles).items())),
        "processed": summary.get("processed"),
        "capped": summary.get("capped"),
    }


def run_once(path: Path, workers: int, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    receiver = Receiver()
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BROKER", "REDIS_URL", "SENTINEL_KAFKA_BROKER", "SENTINEL_REDIS_URL")}
    env.setdefault("SENTINEL_BASE", "lexicon")
    env.update(SENTINEL_APPRISE_URLS=receiver.url, SENTINEL_NOTIFY_CHART="false")
    alerts, summary = work / "alerts.jsonl", work / "summary.json"
    started = time.time()
    try:
        done = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(path), "--alerts-out", str(alerts),
                               "--summary-json", str(summary), "--workers", str(workers), "--worker-log", str(work / "worker.log")],
                              env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise SystemExit(f"sentinel run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        records = [json.loads(line) for line in alerts.read_text().splitlines() if line.strip()]
        return {**summarise(records, list(receiver.titles), json.loads(summary.read_text())), "wall_s": round(time.time() - started, 1)}
    finally:
        receiver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", type=Path, help="keep each run's records, summary and worker log here")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    runs = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory() as work:
            runs.append(run_once(args.file.resolve(), args.workers, args.keep / f"run{n + 1}" if args.keep else Path(work)))
            print(json.dumps(runs[-1]), file=sys.stderr)
    found = {"file": args.file.name, "file_sha256": hashlib.sha256(args.file.read_bytes()).hexdigest(), "commit": commit,
             "workers": args.workers, "base": os.environ.get("SENTINEL_BASE", "lexicon"),
             "same_records": len({r["records_sha256"] for r in runs}) == 1, "runs": runs}
    text = json.dumps(found, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
