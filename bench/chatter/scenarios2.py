"""Timestamp scenarios; files written in ARRIVAL order (not sorted by created_at)."""
import json, sys
from datetime import datetime, timedelta
from gen import START, background, iso, selloff

D3 = START + timedelta(days=2, hours=12)

def write_arrival(posts, path):
    # posts carry '_arrive' (real time); sort by it, drop it
    posts = sorted(posts, key=lambda p: p["_arrive"])
    with open(path, "w") as f:
        for p in posts:
            p = dict(p); p.pop("_arrive")
            f.write(json.dumps(p) + "\n")
    print(path, len(posts), file=sys.stderr)

def base_with_selloff(tel_skew_h):
    posts = background(assets=("BTC", "ETH", "Solana", "DOGE")) + selloff("ETH", D3)
    tel = background(seed=31, mean_gap=150, source="telegram", channels=("tg-main",), prefix="tg")
    for p in posts: p["_arrive"] = p["created_at"]
    for p in tel:
        p["_arrive"] = p["created_at"]
        t = datetime.fromisoformat(p["created_at"].replace("Z", "+00:00")) + timedelta(hours=tel_skew_h)
        p["created_at"] = iso(t)
    return posts + tel

def tz_ok():
    return base_with_selloff(0)

def tz_skew8():
    # a telegram scraper writes local time (UTC+8) with a Z suffix: its posts are stamped 8 h ahead
    return base_with_selloff(8)

def future_one():
    # one post whose created_at is 2026-12-06 (within max_future of the wall clock) in the middle of March data
    posts = base_with_selloff(0)
    posts.append({"id": "clockbug-1", "text": "gm everyone, ETH looks fine", "created_at": "2026-12-06T06:00:00Z",
                  "source": "telegram", "channel": "tg-main", "author": "bot_with_bad_clock",
                  "_arrive": (START + timedelta(days=1)).isoformat().replace("+00:00", "Z")})
    return posts

if False and __name__ == "__main__":
    for name in sys.argv[1:]:
        write_arrival(globals()[name](), f"{name}.jsonl")

def hourly_scraper():
    # discord arrives in real time; a telegram channel is scraped by an hourly cron job: each hour's posts
    # arrive together at the next hour + 5 min (5-65 min after they were written). No skew, no swing.
    posts = background(assets=("BTC", "ETH", "Solana", "DOGE"))
    tel = background(seed=31, mean_gap=150, source="telegram", channels=("tg-main",), prefix="tg")
    for p in posts: p["_arrive"] = p["created_at"]
    for p in tel:
        t = datetime.fromisoformat(p["created_at"].replace("Z", "+00:00"))
        arrive = t.replace(minute=0, second=0) + timedelta(minutes=65)
        p["_arrive"] = iso(arrive) + "~" + p["created_at"]  # after the discord posts of that second
    return posts + tel

def tz_skew1():
    # the same telegram source with its clock 1 hour ahead (e.g. CET written with a Z)
    return base_with_selloff(1)

def tz_skew10m():
    # ... 10 minutes ahead (an unsynchronised server clock)
    return base_with_selloff(10 / 60)

def tz_skew3():
    # telegram scraper writes Moscow time (UTC+3) with a Z suffix
    return base_with_selloff(3)

def backfill():
    # telegram scraper down day 2 06:00-18:00; at 18:00 it backfills those 12 h at once, then runs live. No swing.
    posts = background(assets=("BTC", "ETH", "Solana", "DOGE"))
    tel = background(seed=31, mean_gap=90, source="telegram", channels=("tg-main",), prefix="tg")
    down, up = START + timedelta(days=1, hours=6), START + timedelta(days=1, hours=18)
    for p in posts: p["_arrive"] = p["created_at"]
    for p in tel:
        t = datetime.fromisoformat(p["created_at"].replace("Z", "+00:00"))
        p["_arrive"] = (iso(up) + "~" + p["created_at"]) if down <= t < up else p["created_at"]
    return posts + tel

if __name__ == "__main__":
    for name in sys.argv[1:]:
        write_arrival(globals()[name](), f"{name}.jsonl")
