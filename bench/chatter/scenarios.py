"""Audit scenarios. python scenarios.py NAME -> writes NAME.jsonl in this directory."""
import random, sys
from datetime import timedelta
from gen import CHANNELS, START, background, iso, selloff, write

D3 = START + timedelta(days=2, hours=12)  # day 3 12:00 UTC

def control():
    return background()

def raid():
    # copy-paste raid: one FUD text, 90 posts, 90 fresh authors, 3 channels x 2 sources, 12:00-12:20 day 3
    posts = background()
    rng = random.Random(3)
    text = "URGENT: Binance just froze all ETH withdrawals!! Get your ETH out NOW before it goes to zero. Screenshot: t.co/x9a"
    for i in range(90):
        t = D3 + timedelta(seconds=rng.randint(0, 1200))
        posts.append({"id": f"raid-{i:04d}", "text": text, "created_at": iso(t),
                      "source": rng.choice(["discord", "telegram"]), "channel": rng.choice(CHANNELS),
                      "author": f"fresh_{rng.randint(10**6, 10**7)}"})
    return posts

def shill():
    # 120 fresh accounts shilling a new cashtag over 40 min, plus a new channel name
    posts = background()
    rng = random.Random(4)
    texts = ["$MOONCAT is going to pump 100x, buy now before the breakout!",
             "Just aped into $MOONCAT, bullish, moon soon",
             "$MOONCAT breakout confirmed, long and strong, green candles only",
             "Don't miss $MOONCAT, next 1000x gem, pumping now"]
    for i in range(120):
        t = D3 + timedelta(seconds=rng.randint(0, 2400))
        posts.append({"id": f"shill-{i:04d}", "text": rng.choice(texts), "created_at": iso(t),
                      "source": "discord", "channel": rng.choice(CHANNELS), "author": f"newacct{i}"})
    return posts

def newchannel():
    # a new channel opens at day 3 06:00 with ordinary (baseline-mix) traffic, ~1 post / 2 min, no swing
    posts = background()
    posts += background(seed=21, days=0.75, mean_gap=120, start=START + timedelta(days=2, hours=6),
                        channels=("solana-traders",), prefix="nc")
    return posts

def sol_selloff():
    # sell-off on SOL written the way the community writes it ("SOL"), not "Solana"
    posts = background(assets=("BTC", "ETH", "SOL", "DOGE"))
    posts += selloff("SOL", D3)
    return posts

def eth_selloff():
    posts = background(assets=("BTC", "ETH", "SOL", "DOGE"))
    posts += selloff("ETH", D3)
    return posts

def two_assets():
    # one event (exchange hack) hits ETH and DOGE at once; BTC and SOL calm
    posts = background(assets=("BTC", "ETH", "Solana", "DOGE"))
    posts += selloff("ETH", D3, mean_gap=40, seed=12, prefix="swe")
    posts += selloff("DOGE", D3, mean_gap=40, seed=13, prefix="swd")
    return posts

def pricebot():
    # BTC sell-off at day 3 12:00, plus a price bot posting every minute from day 1 (neutral template)
    posts = background()
    posts += selloff("BTC", D3, mean_gap=40, seed=14)
    t, i, price = START, 0, 67000.0
    rng = random.Random(5)
    while t < START + timedelta(days=3):
        price *= 1 + rng.gauss(0, 0.001)
        posts.append({"id": f"bot-{i:06d}", "text": f"BTC price: ${price:,.0f}, 24h change: {rng.uniform(-4,4):+.1f}%",
                      "created_at": iso(t), "source": "telegram", "channel": "price-feed", "author": "pricebot"})
        t += timedelta(minutes=1); i += 1
    return posts

def btc_selloff_nobot():
    posts = background()
    posts += selloff("BTC", D3, mean_gap=40, seed=14)
    return posts

def weekend():
    # day 1 normal, then a 30-hour lull at 5% of normal traffic, then normal traffic resumes (no swing)
    lull_start = START + timedelta(hours=20); lull_end = lull_start + timedelta(hours=30)
    return background(days=3, quiet=lambda t: 0.05 if lull_start <= t < lull_end else 1.0)

SC = {k: v for k, v in globals().items() if callable(v) and k not in ("background", "selloff", "write", "iso", "pick")
      and not k[0].isupper() and k not in ("datetime", "timedelta", "timezone")}

def shill_long():
    # as shill, but the background runs 6 days: does the fresh ticker's incident ever resolve?
    posts = background(days=6)
    return posts + [p for p in shill() if p["id"].startswith("shill-")]

def newchannel_long():
    # a new channel opens at day 3 06:00 with ordinary traffic and stays until day 6 (no swing anywhere)
    posts = background(days=6)
    posts += background(seed=21, days=3.75, mean_gap=120, start=START + timedelta(days=2, hours=6),
                        channels=("solana-traders",), prefix="nc")
    return posts
SC.update(shill_long=shill_long, newchannel_long=newchannel_long)

if __name__ == "__main__":
    for name in sys.argv[1:]:
        write(SC[name](), f"{name}.jsonl")
