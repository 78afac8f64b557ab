"""Which crypto assets a post talks about: cashtags plus a configurable alias table (pure)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

# Names and tickers of the top coins, plus the research community's own token (Merit Circle, MC).
# Bare tickers that are common words ("one", "link", "dot", "sol" in Spanish...) are left out on
# purpose: they match too much ordinary text. Cashtags ($LINK) still catch them.
DEFAULT_ALIASES: dict[str, str] = {
    "bitcoin": "BTC", "btc": "BTC", "xbt": "BTC", "sats": "BTC",
    "ethereum": "ETH", "ether": "ETH", "eth": "ETH",
    "tether": "USDT", "usdt": "USDT",
    "binance coin": "BNB", "bnb": "BNB",
    "solana": "SOL",
    "ripple": "XRP", "xrp": "XRP",
    "usd coin": "USDC", "usdc": "USDC",
    "cardano": "ADA", "ada": "ADA",
    "dogecoin": "DOGE", "doge": "DOGE",
    "tron": "TRX", "trx": "TRX",
    "avalanche": "AVAX", "avax": "AVAX",
    "shiba inu": "SHIB", "shib": "SHIB",
    "polkadot": "DOT",
    "chainlink": "LINK",
    "polygon": "MATIC", "matic": "MATIC",
    "litecoin": "LTC", "ltc": "LTC",
    "toncoin": "TON",
    "merit circle": "MC", "meritcircle": "MC",
}

_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{1,9})\b")


def load_aliases(path: str | Path | None) -> dict[str, str]:
    """The alias table: the defaults, or a JSON object {alias: TICKER} from a file."""
    if path is None:
        return dict(DEFAULT_ALIASES)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: the alias table must be a JSON object of strings")
    return {k.lower(): v.upper() for k, v in data.items()}


@lru_cache(maxsize=8)
def _alias_pattern(keys: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first, so "shiba inu" wins over a shorter alias inside it.
    alternatives = "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))
    return re.compile(rf"(?<![\w$])(?:{alternatives})(?!\w)", re.IGNORECASE)


def detect_assets(text: str, aliases: Mapping[str, str] = DEFAULT_ALIASES) -> list[str]:
    """Tickers mentioned in text, sorted: cashtags ($BTC) and known names/tickers."""
    found = {m.group(1).upper() for m in _CASHTAG.finditer(text)}
    if aliases:
        pattern = _alias_pattern(tuple(aliases))
        found.update(aliases[m.group(0).lower()] for m in pattern.finditer(text))
    return sorted(found)


def normalize_assets(values: Iterable[str]) -> list[str]:
    return sorted({v.strip().lstrip("$").upper() for v in values if v.strip().lstrip("$")})
