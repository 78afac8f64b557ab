"""One loud account against the author cap (SENTINEL_AUTHOR_CAP), through `sentinel run` on the
embedded stack: the demo stream as it is, and the demo with one account ("troll") posting 60
sell-off messages about $SOL in #general from 12:00 to 12:30 on its second day. Per cap: posts
capped, alert records, incidents and their roots, and every record about the troll's hours.

    .venv/bin/python bench/loud_author.py --out docs/results/loud_author.json             # lexicon scorer
    .venv/bin/python bench/loud_author.py --model --caps 0,3 --out docs/results/loud_author_model.json

`--model` runs the shipped classifier (its real errors and scores) instead of the keyword scorer.
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
DEMO = ROOT / "examples" / "demo-stream.jsonl"
TROLL_FROM, TROLL_UNTIL = "2026-03-03T12:00:00Z", "2026-03-03T15:00:00Z"  # its half hour and the hours a swing could last
SAYS = ("$SOL is a scam, dumping everything now, it's going to zero.", "Sell $SOL before it crashes further, total rug.",
        "$SOL dumping hard, this coin is dead, get out.")


def with_troll(lines: list[str]) -> list[str]:
    """The demo's lines with the troll's 60 posts placed in event-time order (the demo's two bad
    lines, which have no time, stay at the end: they are dead-lettered either way)."""
    troll = [json.dumps({"id": f"troll-{i:03d}", "text": SAYS[i % 3], "created_at": f"2026-03-03T12:{i // 2:02d}:{30 * (i % 2):02d}Z",
                         "source": "discord", "channel": "general", "author": "troll"}) for i in range(60)]

    def at(line: str) -> str | None:
        try:
            value = json.loads(line)
        except ValueError:
            return None
        return value.get("created_at") if isinstance(value, dict) else None

    timed = sorted((line for line in lines + troll if at(line)), key=lambda line: at(line) or "")
    return timed + [line for line in lines if not at(line)]


def run(path: Path, cap: int, model: bool, out: Path) -> dict:
    env = {**os.environ, "SENTINEL_AUTHOR_CAP": str(cap)}
    if not model:
        env["SENTINEL_BASE"] = "lexicon"
    alerts, summary = out.with_suffix(".alerts.jsonl"), out.with_suffix(".summary.json")
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(path), "--alerts-out", str(alerts), "--summary-json",
                           str(summary)], env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"sentinel run {path.name} (cap {cap}) failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    records = [json.loads(line) for line in alerts.read_text().splitlines()]
    roots = sorted({r["root_scope"] or r["scope"] for r in records})
    during = [{k: r[k] for k in ("scope", "kind", "state", "severity", "window_end", "value", "baseline")}
              for r in records if TROLL_FROM <= r["window_end"] < TROLL_UNTIL]
    counts = json.loads(summary.read_text())
    return {"capped": counts["capped"], "processed": counts["processed"], "records": len(records),
            "incidents": len({r["incident_id"] for r in records}), "roots": roots, "records_in_troll_hours": during}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--caps", default="0,2,3", help="SENTINEL_AUTHOR_CAP values, comma-separated")
    ap.add_argument("--model", action="store_true", help="the shipped classifier instead of the keyword scorer")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    result: dict = {"scorer": "shipped model" if args.model else "lexicon", "troll": "60 posts, 12:00-12:30 2026-03-03, #general, $SOL"}
    with tempfile.TemporaryDirectory(prefix="loud-author-") as tmp:
        troll = Path(tmp) / "demo-with-troll.jsonl"
        troll.write_text("\n".join(with_troll(DEMO.read_text(encoding="utf-8").splitlines())) + "\n", encoding="utf-8")
        for name, path in (("demo", DEMO), ("demo_with_troll", troll)):
            result[name] = {str(cap): run(path, cap, args.model, Path(tmp) / f"{name}-{cap}") for cap in caps}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
