"""Copy-paste raids against the text cap (SENTINEL_TEXT_CAP), through `sentinel run` on the embedded
stack, keyword scorer (`--model`: the shipped classifier): per input file and cap, the posts over either cap, the alert records, and each
incident (root, first onset, kinds, member scopes). With `--workers 1,2` each run is repeated on two
workers and the records compared (every field but `fired_at`).

    cd /tmp/chatter && python /path/to/bench/chatter/raid2.py && python /path/to/bench/chatter/scenarios.py raid shill control
    .venv/bin/python bench/text_cap.py /tmp/chatter/raid2.jsonl /tmp/chatter/raid.jsonl examples/demo-stream.jsonl \\
        --caps 0,3 --workers 1,2 --out docs/results/text_cap_raids.json

A file's rows from 2023 on are dropped when `--before 2023-01-01` is given (the Discord export's
held-out messages: `sentinel import-discord ... --out d.jsonl`, then `--before 2023-01-01 d.jsonl`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def incidents(records: list[dict]) -> list[dict]:
    by_id: dict[str, list[dict]] = {}
    for r in records:
        by_id.setdefault(r["incident_id"] or r["alert_id"], []).append(r)
    out = [{"root": rs[0]["root_scope"] or rs[0]["scope"], "onset": min(r["onset"] or r["window_end"] for r in rs),
            "kinds": sorted({r["kind"] for r in rs}), "scopes": len({r["scope"] for r in rs}), "records": len(rs)}
           for rs in by_id.values()]
    return sorted(out, key=lambda i: (i["onset"], i["root"]))


def run(path: Path, text_cap: int, workers: int, out: Path, model: bool = False) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("KAFKA_BROKER", "REDIS_URL", "SENTINEL_KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_APPRISE_URLS")}
    env["SENTINEL_TEXT_CAP"] = str(text_cap)
    if not model:
        env["SENTINEL_BASE"] = "lexicon"
    alerts, summary = out.with_suffix(".alerts.jsonl"), out.with_suffix(".summary.json")
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(path), "--alerts-out", str(alerts), "--summary-json",
                           str(summary), "--workers", str(workers)], env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise SystemExit(f"sentinel run {path.name} (text cap {text_cap}, {workers} workers) failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    records = [json.loads(line) for line in alerts.read_text(encoding="utf-8").splitlines()]
    counts = json.loads(summary.read_text())
    found = incidents(records)
    return {"processed": counts["processed"], "capped": counts["capped"], "text_capped": counts["text_capped"],
            "records": len(records), "incidents": len(found), "incident_list": found,
            "_records": sorted(json.dumps({k: v for k, v in r.items() if k != "fired_at"}, sort_keys=True) for r in records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--caps", default="0,3", help="SENTINEL_TEXT_CAP values, comma-separated")
    ap.add_argument("--workers", default="1", help="worker counts, comma-separated (the first is reported, the others compared)")
    ap.add_argument("--before", help="drop rows whose created_at is not before this (ISO date)")
    ap.add_argument("--model", action="store_true", help="the shipped classifier (what `make demo` runs) instead of the keyword scorer")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    result: dict = {"scorer": "shipped model" if args.model else "lexicon", "author_cap": os.environ.get("SENTINEL_AUTHOR_CAP", "3 (default)"), "files": {}}
    with tempfile.TemporaryDirectory(prefix="text-cap-") as tmp:
        for path in args.files:
            source = path
            if args.before:
                source = Path(tmp) / path.name
                with path.open(encoding="utf-8") as f:  # by "\n" alone: a text may hold U+2028
                    kept = [line for line in f if json.loads(line)["created_at"] < args.before]
                source.write_text("".join(kept), encoding="utf-8")
            per_cap = {}
            for cap in caps:
                runs = [run(source, cap, n, Path(tmp) / f"{path.stem}-{cap}-{n}", args.model) for n in workers]
                first = runs[0]
                first["same_records_with_workers"] = {str(n): r["_records"] == first["_records"] and r["text_capped"] == first["text_capped"]
                                                      and r["capped"] == first["capped"] for n, r in zip(workers[1:], runs[1:])}
                for r in runs:
                    r.pop("_records")
                per_cap[str(cap)] = first
                print(f"{path.name} text cap {cap}: {first['records']} records, {first['incidents']} incidents, "
                      f"{first['text_capped']} text-capped, {first['capped']} author-capped; same with workers {first['same_records_with_workers']}",
                      file=sys.stderr)
            result["files"][path.name] = per_cap
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
