"""Asset extraction (stream/assets.py): the tickers crypto forums write, and nothing they don't mean.

Audit 39 finding 5: bare SOL, MC, LINK, DOT, TON, PEPE, ARB got no asset (0 of 730 demo posts
naming SOL, 0 of 754 naming MC, were in an asset scope), while "Ada from the mod team", "Tron Legacy",
$US, $AAPL and $TSLA became assets and $BTCUSD an asset of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.assets import DEFAULT_ALIASES, AliasTable, detect_assets, load_aliases, table_from_json
from stream.contracts import parse_post

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "text,assets",
    [
        # Tickers written in capitals are tickers.
        ("SOL is dumping hard, down 12% today", ["SOL"]),
        ("sold my SOL bag", ["SOL"]),
        ("Added more MC today, the chart looks incredibly strong.", ["MC"]),
        ("OP and ARB both bleeding after the unlock", ["ARB"]),
        ("LINK is crashing", ["LINK"]),
        ("ONE of the worst days for DOT holders", ["DOT"]),
        ("TON is mooning after the Telegram news", ["TON"]),
        ("PEPE and WIF memecoins pumping", ["PEPE", "WIF"]),
        ("SOL's TVL is up", ["SOL"]),
        ("#SOL #ETH", ["ETH", "SOL"]),
        ("Cardano ADA and TRON", ["ADA", "TRX"]),
        # Names match in any case, as before.
        ("Solana and chainlink", ["LINK", "SOL"]),
        ("merit circle guild", ["MC"]),
        ("Bitcoin and ethereum", ["BTC", "ETH"]),
        # The same letters in lower or mixed case are words.
        ("el sol sale por la mañana, que bonito", []),
        ("nothing here, only one link to a dot", []),
        ("I paid a ton for that sol lamp, link below", []),
        ("Ada from the mod team says the AMA is moved", []),
        ("watched Tron Legacy last night, great soundtrack", []),
        # Ambiguous capitals stay out: original poster / overpowered, emphasis.
        ("OP is right, this is OP", []),
        ("ME: gm. Also ME: sells the bottom", []),
        # Mentions, links, e-mail addresses, domains and ENS names are not mentions of the asset.
        ("@MC Scholar chat here with prof", []),
        ("vitalik.eth just moved 1000 coins", []),
        ("send it to partnerships@meritcircle.io", []),
        ("join https://t.me/meritcircle and see www.solana.com", []),
        # Cashtags: any asset, known or new, but not fiat money or stocks.
        ("$BTC and $eth pumping", ["BTC", "ETH"]),
        ("$MOONCAT to the moon", ["MOONCAT"]),
        ("$XBT and $sol", ["BTC", "SOL"]),
        ("I paid $US 200 for that", []),
        ("buy $AAPL and $TSLA instead of this crypto junk", []),
        ("price$5 is not a cashtag", []),
        # Trading pairs: the base; the quote too when it is itself a volatile crypto asset.
        ("$5k loss on $BTCUSD shorts", ["BTC"]),
        ("$ETHUSDT dumping", ["ETH"]),
        ("BTCUSDT 4h chart", ["BTC"]),
        ("BTC-USD down 3%", ["BTC"]),
        ("SOL/USDT breaking out", ["SOL"]),
        ("$BTC/USDT", ["BTC"]),
        ("ETH-PERP funding", ["ETH"]),
        ("ETH/BTC ratio at a 3 year low", ["BTC", "ETH"]),
        ("MC/ETH pool v1 rewards", ["ETH", "MC"]),
        ("$MOONCATUSDT listed", ["MOONCAT"]),
        ("stETH and WBTC", []),
        ("USDC depeg fears", ["USDC"]),
    ],
)
def test_detect_assets(text, assets):
    assert detect_assets(text) == assets


def test_the_parser_gives_a_capitals_ticker_its_asset_scope():
    post = parse_post(json.dumps({"id": "p1", "text": "SOL dropped 15% in an hour", "created_at": 1_770_000_000}).encode())
    assert post.assets == ("SOL",)


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "aliases.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_flat_alias_file_still_means_names_in_any_case(tmp_path):
    table = load_aliases(write(tmp_path, {"Bitcoin": "btc", "SOL": "sol"}))
    assert detect_assets("bitcoin and sol", table) == ["BTC", "SOL"]  # as before: keys in any case
    assert detect_assets("ETH is up", table) == []  # the file replaces the built-in table
    assert detect_assets("$AAPL and $DOGE", table) == ["DOGE"]  # cashtags as ever, less the stocks
    assert detect_assets("bitcoin", {"bitcoin": "BTC"}) == ["BTC"]  # a plain mapping works in code


def test_an_alias_file_with_names_tickers_and_not_assets(tmp_path):
    table = load_aliases(write(tmp_path, {"names": {"solana": "SOL"}, "tickers": ["SOL", "JUP"], "not_assets": ["SPY"]}))
    assert detect_assets("Solana, SOL and JUP; jup is a word, sol too", table) == ["JUP", "SOL"]
    assert detect_assets("$SPY and $AAPL", table) == ["AAPL"]  # not_assets given: only those
    renamed = load_aliases(write(tmp_path, {"tickers": {"XBT": "BTC"}}))
    assert detect_assets("XBT and xbt", renamed) == ["BTC"]


@pytest.mark.parametrize(
    "data",
    [
        [["btc", "BTC"]],
        {"names": {"btc": 1}},
        {"tickers": ["sol"]},  # matched as written: a lower-case ticker would be the word
        {"tickers": {"SOL": "SOL"}, "typo": {}},
        {"names": {}, "not_assets": "AAPL"},
        {"": "BTC"},
    ],
)
def test_a_bad_alias_table_is_refused(data):
    with pytest.raises(ValueError):
        table_from_json(data)


def test_the_example_alias_file_is_the_built_in_table():
    """examples/aliases.json, which docs/contracts.md points operators to, says what the code does."""
    assert load_aliases(ROOT / "examples" / "aliases.json") == DEFAULT_ALIASES
    assert isinstance(DEFAULT_ALIASES, AliasTable)


def test_letters_that_match_a_name_only_when_case_is_ignored_never_raise():
    """The names' pattern ignores case the Unicode way: "ſ" matches "s", "K" (Kelvin) "k", "İ" "i".
    str.lower() does not map them back, so the lookup raised KeyError and the worker crash-looped on
    the post (found by session 39's review). Folded, a match that names nothing is no mention."""
    assert detect_assets("ſats are cheap") == ["BTC"]
    assert detect_assets("bİtcoin up") == []
    odd = str.maketrans({"s": "ſ", "k": "\u212a", "i": "İ"})
    for name in DEFAULT_ALIASES.names:
        detect_assets(f"about {name.translate(odd)} today")  # no exception, whatever it finds


def test_spaces_after_an_explicit_tickers_dollar_are_not_part_of_it():
    """`"assets": ["$ eth"]` was counted in a scope `asset: ETH` of its own, beside ETH's (and
    "$\u00a0btc" in `asset:\u00a0BTC`): the space was stripped before the `$`, not after it."""
    post = parse_post(json.dumps({"id": "p1", "text": "x", "created_at": 1_790_000_000,
                                  "assets": ["$ eth", "$\u00a0btc", "$ $sol"]}).encode(), now=1_790_812_800)
    assert post.assets == ("BTC", "ETH", "SOL")
