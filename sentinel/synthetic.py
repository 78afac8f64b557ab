"""Deterministic forum-like posts for benchmarks and generated demo streams (no external data)."""

from __future__ import annotations

import random

_OPENERS = {
    "positive": [
        "Honestly {asset} looks ready to break out,",
        "Just added more {asset} on this dip,",
        "Huge news for {asset} holders today,",
        "Really bullish on {asset} after the upgrade,",
    ],
    "negative": [
        "I am out of {asset}, this chart is ugly,",
        "{asset} keeps bleeding and nobody is buying,",
        "Another rug for {asset} bagholders,",
        "Selling my {asset} before it drops further,",
    ],
    "neutral": [
        "Does anyone know when the {asset} AMA starts,",
        "Reminder that the {asset} snapshot is tomorrow,",
        "Where can I read the {asset} tokenomics doc,",
        "The {asset} community call moved to Thursday,",
    ],
}
_FILLER = (
    "volume funding rates open interest whales exchange wallet staking rewards governance vote "
    "roadmap testnet mainnet liquidity pool validators bridge airdrop snapshot guild scholars "
    "guild members discord announcement weekend market chart support resistance candle daily "
    "weekly monthly timeframe traders holders community team update partnership listing"
).split()
ASSETS = ("BTC", "ETH", "SOL", "MC", "DOGE")


def synthetic_post(rng: random.Random, label: str, asset: str, words: int = 40) -> str:
    opener = rng.choice(_OPENERS[label]).format(asset=asset)
    count = max(0, words - len(opener.split()))
    return f"{opener} {' '.join(rng.choice(_FILLER) for _ in range(count))}".strip()


def synthetic_posts(n: int, words: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [synthetic_post(rng, rng.choice(list(_OPENERS)), rng.choice(ASSETS), words) for _ in range(n)]
