"""Messy and adversarial chatter for checking the early warning (the audit of session 39): seeded
generators that write JSONL post files into the current directory. docs/alerts.md quotes runs on
them (`SENTINEL_BASE=lexicon .venv/bin/sentinel run NAME.jsonl --alerts-out A.jsonl`).

    cd /tmp/chatter && python /path/to/bench/chatter/scenarios.py control raid shill weekend two_assets sol_selloff eth_selloff pricebot btc_selloff_nobot newchannel newchannel_long shill_long
    python /path/to/bench/chatter/scenarios2.py tz_ok tz_skew10m tz_skew1 tz_skew3 tz_skew8 backfill future_one hourly_scraper
    python /path/to/bench/chatter/raid2.py     # raid2.jsonl: one FUD text from 60 fresh accounts

This module: the demo-like background (3 event-days) the scenarios add to.
"""
import json, random, sys
from datetime import datetime, timedelta, timezone

POS = ["{a} just broke through resistance on huge volume, this rally has legs.",
       "Added more {a} today, the chart looks incredibly strong.",
       "Big partnership announced for {a}, very bullish.",
       "{a} is outperforming everything this week, holders are happy.",
       "Whales keep buying {a}, I expect a new high soon."]
NEG = ["{a} is dumping hard, I sold my whole bag at a loss.",
       "Another exploit hit {a}, the price is crashing.",
       "{a} keeps bleeding and nobody is buying this dip, bearish.",
       "Liquidations everywhere, {a} dropped 15% in an hour, rekt.",
       "The {a} team went silent and the token keeps dumping."]
NEU = ["Does anyone know when the {a} community call starts?",
       "Reminder: the {a} snapshot is tomorrow at noon UTC.",
       "Where can I read the {a} tokenomics document?",
       "The {a} AMA moved to Thursday in the announcements channel.",
       "What wallet do you use to store {a}?"]
SENT = {"positive": POS, "negative": NEG, "neutral": NEU}
NORMAL = (("positive", 0.45), ("neutral", 0.35), ("negative", 0.20))
SWING = (("positive", 0.10), ("neutral", 0.15), ("negative", 0.75))
START = datetime(2026, 3, 2, tzinfo=timezone.utc)
ASSETS = ("BTC", "ETH", "Solana", "DOGE")
CHANNELS = ("general", "trading", "announcements")

def iso(t):
    return t.isoformat().replace("+00:00", "Z")

def pick(rng, mix):
    return rng.choices([m[0] for m in mix], weights=[m[1] for m in mix])[0]

def background(seed=7, days=3, mean_gap=90, start=START, assets=ASSETS, channels=CHANNELS, source="discord",
               quiet=None, prefix="bg"):
    """quiet: optional function(t)->rate multiplier (<1 means fewer posts)."""
    rng = random.Random(seed)
    out, t, n = [], start, 0
    while t < start + timedelta(days=days):
        mult = quiet(t) if quiet else 1.0
        if rng.random() < mult:
            a = rng.choice(assets)
            n += 1
            out.append(_post(rng, pick(rng, NORMAL), a, f"{prefix}-{n:06d}", t, source, channels, "user"))
        t += timedelta(seconds=max(1, round(rng.expovariate(1 / mean_gap))))
    return out

def _post(rng, label, asset, pid, t, source, channels, users):
    """One post of `label` about `asset` (the rng draws text, channel, author, in that order)."""
    return {"id": pid, "text": rng.choice(SENT[label]).format(a=asset), "created_at": iso(t), "source": source,
            "channel": rng.choice(channels), "author": f"{users}{rng.randint(1, 400)}"}

def selloff(asset, start, minutes=60, mean_gap=20, seed=11, channels=CHANNELS, source="discord", prefix="sw"):
    rng = random.Random(seed)
    out, t, n = [], start, 0
    while t < start + timedelta(minutes=minutes):
        n += 1
        out.append(_post(rng, pick(rng, SWING), asset, f"{prefix}-{n:06d}", t, source, channels, "swuser"))
        t += timedelta(seconds=max(1, round(rng.expovariate(1 / mean_gap))))
    return out

def write(posts, path):
    posts = sorted(posts, key=lambda p: p["created_at"])
    with open(path, "w") as f:
        for p in posts:
            f.write(json.dumps(p) + "\n")
    print(path, len(posts), file=sys.stderr)
