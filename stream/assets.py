"""Which crypto assets a post talks about: cashtags, trading pairs and an alias table (pure).

The rule (docs/contracts.md, "Asset detection"):

- Names match in any case: "bitcoin", "Solana", "merit circle", "eth".
- Tickers that are also ordinary words match only as written, in capitals: in a crypto forum
  "SOL is dumping", "LINK", "DOT", "TON" are tickers and "el sol", "a link", "dot", "a ton" are
  words. Capitals that mean something else in these forums stay out even so: OP (original poster;
  "overpowered" in the gaming channels), ONE and ME (emphasis), ETC (et cetera), GAS, APE, NEAR,
  FIL/RON/MANA (Filipino, and Tagalog words written in capitals, in the Merit Circle export).
  MC is in: in the pre-2023 Merit Circle Discord export 113 of the 115 posts with a bare "MC" in
  capitals mean Merit Circle (its token or its community), none "market cap" (written out there).
- Links, e-mail addresses, mentions ("@MC Scholar") and domain or ENS names ("vitalik.eth",
  "meritcircle.io") are not asset mentions.
- Cashtags ($BTC, $pepe) name any asset, known or not (a new coin is a cashtag before it is in
  any table), except the cashtags of fiat money, metals and stocks ($US, $AAPL, $TSLA).
- Trading pairs name their base: $BTCUSD, BTCUSDT, BTC-USD, SOL/USDT -> BTC, SOL. The quote counts
  too when it is itself a volatile crypto asset (ETH/BTC -> BTC, ETH); fiat, stablecoin and
  PERP quotes are a unit of account, not the subject, and do not.

SENTINEL_ALIASES_FILE replaces the table: either the original flat JSON object {alias: TICKER}
(names, any case; as before), or {"names": {...}, "tickers": {...} or [...], "not_assets": [...]}.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

# Names and tickers of the top coins, plus the research community's own token (Merit Circle, MC)
# and the Axie tokens its scholarship guild is paid in (SLP, AXS). Matched in any case, so nothing
# that is also a common word (in English, Spanish or Tagalog) belongs here: those go in TICKERS.
DEFAULT_NAMES: dict[str, str] = {
    "bitcoin": "BTC", "btc": "BTC", "xbt": "BTC", "sats": "BTC",
    "ethereum": "ETH", "ether": "ETH", "eth": "ETH",
    "tether": "USDT", "usdt": "USDT",
    "binance coin": "BNB", "bnb": "BNB",
    "solana": "SOL",
    "ripple": "XRP", "xrp": "XRP",
    "usd coin": "USDC", "usdc": "USDC",
    "cardano": "ADA",
    "dogecoin": "DOGE", "doge": "DOGE",
    "avalanche": "AVAX", "avax": "AVAX",
    "shiba inu": "SHIB", "shib": "SHIB",
    "polkadot": "DOT",
    "chainlink": "LINK",
    "polygon": "MATIC", "matic": "MATIC",
    "litecoin": "LTC", "ltc": "LTC",
    "bitcoin cash": "BCH",
    "toncoin": "TON",
    "arbitrum": "ARB",
    "smooth love potion": "SLP",
    "merit circle": "MC", "meritcircle": "MC",
}

# Tickers matched only as written (capitals): each is an ordinary word in lower or mixed case
# ("Ada from the mod team", "Tron Legacy", "sol", "link", "dot", "ton"), or a coin whose lower-case
# spelling is a Discord emote (":pepe:").
DEFAULT_TICKERS: dict[str, str] = {
    t: t for t in (
        "SOL", "MC", "ARB", "LINK", "DOT", "TON", "PEPE", "ADA", "TRX", "ATOM", "BCH", "XLM", "HBAR",
        "ALGO", "ICP", "INJ", "SUI", "LDO", "IMX", "WIF", "BONK", "SLP", "AXS",
    )
} | {"TRON": "TRX"}

# Cashtags that are not crypto assets: fiat currencies ("I paid $US 200"), metals, and the stocks and
# index funds crypto forums compare coins with.
DEFAULT_NOT_ASSETS: frozenset[str] = frozenset(
    "US USD EUR GBP JPY CNY CAD AUD NZD CHF HKD SGD KRW INR RUB TRY BRL MXN PHP ZAR XAU XAG "
    "AAPL TSLA AMZN MSFT NVDA GOOG GOOGL META NFLX AMD INTC SPY QQQ SPX NDX DJI VIX GME AMC COIN MSTR".split()
)

# Quotes of a trading pair. Fiat, stablecoins and PERP are not the pair's subject; BTC, ETH and BNB
# (the crypto quotes of the big exchanges) are an asset of their own.
UNIT_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "USD", "EUR", "GBP", "JPY", "KRW", "TRY", "PERP")
CRYPTO_QUOTES = ("BTC", "ETH", "BNB")
_QUOTES = tuple(sorted(UNIT_QUOTES + CRYPTO_QUOTES, key=len, reverse=True))

# Not right after a word character, "$" or "@", nor after a dot that follows a word character, nor
# right before a dot and a word character: "@MC Scholar", "vitalik.eth" and "meritcircle.io" name a
# person, a role or a site. URLs and e-mail addresses are blanked before anything is matched.
_START = r"(?<![\w$@])(?<!\w\.)"
_END = r"(?!\w)(?!\.\w)"
# An address is tried only where a run of its characters starts, and the addresses glued on to its
# end ("a@b.io+c@d.io") are taken in the same match: tried at every character of the run, as before,
# one 10,000-character word cost up to 1.4 s of the event loop (each try read to the end of the run
# to find no "@" there). What is blanked is the same (tests/test_input_properties.py).
_LINK = re.compile(r"(?:https?://|www\.)\S+|(?<![\w.+-])(?:[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b)+", re.IGNORECASE)
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{1,14})\b")
# BTC-USD, ETH/BTC, $SOL/USDT, BTC / USDT
_PAIR = re.compile(_START + r"(\$?)([A-Za-z][A-Za-z0-9]{1,9}) ?[/-] ?([A-Za-z]{3,5})(?![\w/-])")
# BTCUSDT, ETHBTC written bare, in capitals
_CAPS_WORD = re.compile(_START + r"([A-Z][A-Z0-9]{4,14})" + _END)


class AliasTable:
    """Names (any case) and tickers (as written) -> TICKER, plus cashtags that are not assets."""

    __slots__ = ("names", "tickers", "not_assets", "known", "_names_re", "_tickers_re", "_folded")

    def __init__(self, names: Mapping[str, str], tickers: Mapping[str, str] | None = None,
                 not_assets: Iterable[str] = DEFAULT_NOT_ASSETS):
        self.names = {k.lower(): v.upper() for k, v in names.items()}
        self.tickers = {k: v.upper() for k, v in (tickers or {}).items()}
        self.not_assets = frozenset(a.upper() for a in not_assets)
        self.known = frozenset(self.names.values()) | frozenset(self.tickers.values())
        self._names_re = _alternation(self.names, re.IGNORECASE)
        self._tickers_re = _alternation(self.tickers, 0)
        # The pattern matches ignoring case the Unicode way ("ſats" matches "sats", "bİtcoin"
        # "bitcoin"), which str.lower() does not undo: a match is looked up folded, and one that
        # folds to no name is not a mention (it raised KeyError, and a worker crash-looped on the post).
        self._folded = {k.casefold(): v for k, v in self.names.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AliasTable) and (self.names, self.tickers, self.not_assets) == (
            other.names, other.tickers, other.not_assets)

    def __repr__(self) -> str:
        return f"AliasTable({len(self.names)} names, {len(self.tickers)} tickers, {len(self.not_assets)} not assets)"

    def word(self, word: str) -> str | None:
        """The ticker a bare word names under the case rule, or None."""
        return self.tickers.get(word) or self.names.get(word.lower())

    def symbol(self, symbol: str) -> str:
        """A cashtag's symbol as a ticker: $XBT and $bitcoin are BTC, $SOL is SOL, $MOONCAT itself."""
        upper = symbol.upper()
        return self.tickers.get(upper) or self.names.get(symbol.lower()) or upper

    def split_pair(self, symbol: str, *, cashtag: bool) -> list[str] | None:
        """BTCUSDT -> [BTC], ETHBTC -> [ETH, BTC]; None when symbol is not a pair. The base must be a
        known ticker, except in a cashtag quoted in fiat or a stablecoin ($MOONCATUSDT -> MOONCAT)."""
        upper = symbol.upper()
        for quote in _QUOTES:
            base = upper[: -len(quote)]
            if not upper.endswith(quote) or len(base) < 2:
                continue
            if base in self.known:
                return [base, quote] if quote in CRYPTO_QUOTES else [base]
            if cashtag and quote in UNIT_QUOTES and len(base) >= 3 and base not in self.not_assets:
                return [base]
        return None


def _alternation(keys: Iterable[str], flags: int) -> re.Pattern[str] | None:
    keys = sorted(keys, key=len, reverse=True)  # longest first: "bitcoin cash" before "bitcoin"
    if not keys:
        return None
    return re.compile(_START + "(?:" + "|".join(re.escape(k) for k in keys) + ")" + _END, flags)


DEFAULT_ALIASES = AliasTable(DEFAULT_NAMES, DEFAULT_TICKERS, DEFAULT_NOT_ASSETS)


def _strings(value: Any) -> bool:
    return isinstance(value, str)


def table_from_json(data: Any, where: str = "the alias table") -> AliasTable:
    """A table from its JSON form: {alias: TICKER} (names, any case), or an object with any of
    "names" ({alias: TICKER}), "tickers" ({AS_WRITTEN: TICKER} or [TICKER, ...]) and "not_assets"."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object")
    if all(_strings(v) for v in data.values()):
        if not all(_strings(k) and k.strip() for k in data):
            raise ValueError(f"{where}: empty alias")
        return AliasTable(data)
    unknown = set(data) - {"names", "tickers", "not_assets"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}: expected names, tickers, not_assets, "
                         "or a flat object of alias: TICKER strings")
    names = data.get("names", {})
    tickers = data.get("tickers", {})
    not_assets = data.get("not_assets", sorted(DEFAULT_NOT_ASSETS))
    if isinstance(tickers, list) and all(_strings(t) for t in tickers):
        tickers = {t: t for t in tickers}
    for key, value in (("names", names), ("tickers", tickers)):
        if not (isinstance(value, dict) and all(_strings(k) and k.strip() and _strings(v) for k, v in value.items())):
            raise ValueError(f"{where}: {key} must be an object of alias: TICKER strings")
    if any(t != t.upper() for t in tickers):
        raise ValueError(f"{where}: tickers are matched as written and must be in capitals")
    if not (isinstance(not_assets, list) and all(_strings(a) for a in not_assets)):
        raise ValueError(f"{where}: not_assets must be a list of strings")
    return AliasTable(names, tickers, not_assets)


def load_aliases(path: str | Path | None) -> AliasTable:
    """The alias table: the defaults, or the table in a JSON file (table_from_json)."""
    if path is None:
        return DEFAULT_ALIASES
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return table_from_json(data, str(path))


@lru_cache(maxsize=8)
def _table_of(items: tuple[tuple[str, str], ...]) -> AliasTable:
    return AliasTable(dict(items))


def detect_assets(text: str, aliases: AliasTable | Mapping[str, str] = DEFAULT_ALIASES) -> list[str]:
    """Tickers mentioned in text, sorted: cashtags, trading pairs, names and tickers (module doc).
    A plain mapping is a table of names matched in any case (the original form)."""
    table = aliases if isinstance(aliases, AliasTable) else _table_of(tuple(aliases.items()))
    found: set[str] = set()

    def blank(m: re.Match[str]) -> str:
        return " " * (m.end() - m.start())

    def pair(m: re.Match[str]) -> str:
        dollar, base, quote = m.groups()
        ticker = table.symbol(base) if dollar else table.word(base)
        if ticker is None or quote.upper() not in _QUOTES or ticker in table.not_assets:
            return m.group(0)  # not a pair: left for the matchers below
        found.add(ticker)
        q = quote.upper()
        if q in CRYPTO_QUOTES:
            found.add(q)
        return blank(m)

    def cashtag(m: re.Match[str]) -> str:
        symbol = m.group(1)
        if symbol.upper() in table.not_assets:
            return blank(m)
        found.update(table.split_pair(symbol, cashtag=True) or [table.symbol(symbol)])
        return blank(m)

    def caps_pair(m: re.Match[str]) -> str:
        if table.word(m.group(1)) is not None:
            return m.group(0)
        parts = table.split_pair(m.group(1), cashtag=False)
        if parts is None:
            return m.group(0)
        found.update(parts)
        return blank(m)

    text = _LINK.sub(blank, text)
    text = _PAIR.sub(pair, text)
    text = _CASHTAG.sub(cashtag, text)
    text = _CAPS_WORD.sub(caps_pair, text)
    if table._names_re is not None:
        found.update(ticker for m in table._names_re.finditer(text) if (ticker := table._folded.get(m.group(0).casefold())))
    if table._tickers_re is not None:
        found.update(table.tickers[m.group(0)] for m in table._tickers_re.finditer(text))
    return sorted(found)


def normalize_assets(values: Iterable[str]) -> list[str]:
    """Explicit tickers as scopes name them: `$eth`, ` ETH `, `$ eth` and the full-width `ＥＴＨ`
    are ETH."""
    return sorted({t for t in map(_explicit_ticker, values) if t})


def _explicit_ticker(value: str) -> str:
    # Compatibility forms first (NFKC: full-width `ＥＴＨ`, `＄eth`, mathematical bold `𝐄𝐓𝐇`): they
    # read as ETH, so they count as ETH, not as a scope of their own that an alert names as if it were
    # ETH's. Spaces are stripped after each `$` as well as around it: "$ eth" was the scope
    # `asset: ETH`, apart from ETH's, and "$ $eth" was `$ETH`.
    ticker = unicodedata.normalize("NFKC", value).strip()
    while ticker.startswith("$"):
        ticker = ticker[1:].strip()
    # Upper-casing can leave a letter and its accent apart (`ΐ`): composed again, the result is stable.
    return unicodedata.normalize("NFKC", ticker.upper())


# Scripts whose capitals look like Latin ones: `ЕТН` (Cyrillic), `ΕΤΗ` (Greek), `ꓰꓔꓧ` (Lisu) read as ETH,
# and `ᗷᑎᗷ` (Canadian syllabics) as BNB.
LATIN_LOOKALIKE_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "CHEROKEE", "COPTIC", "LISU", "CANADIAN")


def lookalike_problem(ticker: str) -> str | None:
    """Why an explicit ticker could pass for another one, or None (pure). A ticker that holds a
    Latin letter is plain ASCII (no `ETH` with a Cyrillic `Е` or an accent or a mark put on it), no
    mark sits on an ASCII digit, and none holds letters of the scripts that look Latin
    (LATIN_LOOKALIKE_SCRIPTS) or a Latin letter drawn as a symbol (`🅱🆃🅲`, which NFKC leaves): a
    producer's `assets` made `asset:ЕТН`, which every alert and the console showed exactly as
    `asset:ETH`, and the risk team read a fake crash of ETH. Tickers in other scripts (`币安人生`,
    `币安人生2`: a digit reads as itself) are their own."""
    if ticker.isascii():
        return None
    if any(char.isascii() and char.isalpha() for char in ticker):
        return "mixes ASCII letters with other characters, so it could pass for an ASCII ticker"
    for char, after in zip(ticker, ticker[1:] + " "):
        if char.isascii() and unicodedata.category(after).startswith("M"):
            return f"puts a mark (U+{ord(after):04X}) on {char!r}, so it could pass for an ASCII ticker"
        name = unicodedata.name(char, "")
        script = "LATIN" if " LATIN " in f" {name} " else name.split(" ", 1)[0]
        if script in LATIN_LOOKALIKE_SCRIPTS:
            return f"holds {script.title()} letters (U+{ord(char):04X}), which could pass for an ASCII ticker"
    return None
