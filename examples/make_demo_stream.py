"""Generate examples/demo-stream.jsonl: three event-days of forum posts with one clear swing.

Deterministic (seeded). About one post every 90 s spread over BTC, ETH, SOL and MC; on day 3 from
12:00 to 13:00 UTC the posts about ETH turn mostly negative and triple in volume. Texts come from short
templates per label, so the classifier has real sentiment to find. A few bad lines
and a duplicate are mixed in so the demo shows the dead-letter queue and dedupe at work.

    python examples/make_demo_stream.py > examples/demo-stream.jsonl
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

SENTENCES = {
    "positive": [
        "{a} just broke through resistance on huge volume, this rally has legs.",
        "Added more {a} today, the chart looks incredibly strong.",
        "{a} staking rewards went up after the upgrade, very bullish.",
        "Big partnership announced for {a}, price already up 10%.",
        "{a} is outperforming everything this week, holders are happy.",
        "Whales keep accumulating {a}, I expect a new high soon.",
    ],
    "negative": [
        "{a} is dumping hard, I sold my whole bag at a loss.",
        "Another exploit hit {a}, the price is crashing.",
        "{a} keeps bleeding and nobody is buying this dip.",
        "Liquidations everywhere, {a} dropped 15% in an hour.",
        "The {a} team went silent and the token keeps falling.",
        "Terrible news for {a} holders, the listing was cancelled.",
    ],
    "neutral": [
        "Does anyone know when the {a} community call starts?",
        "Reminder: the {a} snapshot is tomorrow at noon UTC.",
        "Where can I read the {a} tokenomics document?",
        "The {a} AMA moved to Thursday in the announcements channel.",
        "What wallet do you use to store {a}?",
        "New guide posted on how to bridge {a} to the testnet.",
    ],
}

START = datetime(2026, 3, 2, tzinfo=timezone.utc)
DAYS = 3
ASSETS = ("BTC", "ETH", "SOL", "MC")
CHANNELS = ("general", "trading", "announcements")
SWING_START = START + timedelta(days=2, hours=12)
SWING_END = SWING_START + timedelta(hours=1)
NORMAL_MIX = (("positive", 0.45), ("neutral", 0.35), ("negative", 0.20))
SWING_MIX = (("positive", 0.10), ("neutral", 0.15), ("negative", 0.75))


def pick(rng: random.Random, mix: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([m[0] for m in mix], weights=[m[1] for m in mix])[0]


def posts(seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    out: list[dict] = []
    t = START
    n = 0
    while t < START + timedelta(days=DAYS):
        in_swing = SWING_START <= t < SWING_END
        asset = "ETH" if in_swing and rng.random() < 0.7 else rng.choice(ASSETS)
        label = pick(rng, SWING_MIX if in_swing and asset == "ETH" else NORMAL_MIX)
        n += 1
        out.append({
            "id": f"demo-{n:06d}",
            "text": rng.choice(SENTENCES[label]).format(a=asset),
            "created_at": t.isoformat().replace("+00:00", "Z"),
            "source": "discord",
            "channel": rng.choice(CHANNELS),
            "author": f"user{rng.randint(1, 400)}",
        })
        t += timedelta(seconds=round(rng.expovariate(1 / (20 if in_swing else 90))))
    return out


def main() -> None:
    rows = [json.dumps(p, ensure_ascii=False) for p in posts()]
    rows.insert(500, rows[499])  # a redelivered post: counted once
    rows.insert(1000, '{"id": "broken", "text": ')  # truncated JSON: dead-lettered
    rows.insert(1500, json.dumps({"id": "no-time", "text": "ETH looks fine"}))  # missing created_at
    print("\n".join(rows))


if __name__ == "__main__":
    main()
