"""Copy-paste FUD raid: one text, 60 ids, 60 fresh authors, discord+telegram, 3 channels, day 3 12:00-12:15.
Background otherwise calm (gen.background). Writes raid2.jsonl."""
import random
from datetime import timedelta
from gen import CHANNELS, START, background, iso, write

if __name__ == "__main__":
    posts = background()
    rng = random.Random(3)
    text = "URGENT: Binance froze ETH withdrawals, ETH is going to crash hard, sell everything now before the dump!!"
    for i in range(60):
        t = START + timedelta(days=2, hours=12, seconds=rng.randint(0, 900))
        posts.append({"id": f"raid-{i:04d}", "text": text, "created_at": iso(t),
                      "source": rng.choice(["discord", "telegram"]), "channel": rng.choice(CHANNELS),
                      "author": f"fresh_{rng.randint(10**6, 10**7)}"})
    write(posts, "raid2.jsonl")
