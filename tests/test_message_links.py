"""Links in quoted posts are defanged (stream/alerts/message.py: `defang`); pure, no servers."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream.alerts import message
from stream.alerts.grouping import Notice
from stream.alerts.incidents import AlertRecord
from stream.windows import Sample

# What Slack, or a mail client auto-linking plain text, would make a link of: a web scheme, `www.`,
# or a dot between a name and two or more letters.
LIVE = re.compile(r"(?i)\b(?:https?|ftp)://|\bwww\.|[^\W_][.\u3002\uff0e\uff61][^\W\d_]{2}")


def post(text: str, limit: int = message.POST_CHARS) -> str:
    return message.escape_post_text(text, limit=limit, links=False)


@pytest.mark.parametrize("text, shown", [
    ("claim your airdrop at https://evil.example/x", "claim your airdrop at hxxps://evil[.]example/x"),
    ("HTTP://Evil.Example:8080/a.b?c=d", "HxxP://Evil[.]Example:8080/a.b?c=d"),
    ("ftp://files.example.org/x", "fxp://files[.]example[.]org/x"),
    ("go to www.evil.example now", "go to www[.]evil[.]example now"),
    ("airdrop on evil-wallet.io/claim.", "airdrop on evil-wallet[.]io/claim."),
    ("xn--80ak6aa92e.com", "xn--80ak6aa92e[.]com"),
    ("пример.рф and evil\u3002example", "пример[.]рф and evil[.]example"),
    ("<https://evil.example/x|click me>", "click me (hxxps://evil[.]example/x)"),
    ("http://10.0.0.1/x", "hxxp://10[.]0[.]0[.]1/x"),
])
def test_links_and_bare_domains_in_a_post_are_defanged(text: str, shown: str) -> None:
    assert post(text) == shown
    assert not LIVE.search(post(text))


@pytest.mark.parametrize("text", [
    "hxxps://evil[.]example/x is already defanged",
    "$ETH up 1.5% to $3.2k, e.g. i.e. U.S. v1.2.3",
    "wait...what",
])
def test_defanged_text_cashtags_decimals_and_abbreviations_are_left_alone(text: str) -> None:
    assert post(text) == text
    assert post(post(text)) == post(text)  # twice is once


def test_an_address_is_readable_and_its_domain_defanged() -> None:
    # The `@` becomes the look-alike every escaped text has, and with it no client reads an address:
    # what is left is a bare domain (`support＠evil-wallet.io`), which Slack and mail clients link.
    assert post("mail a@b.com or john.doe@b.co.uk") == "mail a\uff20b[.]com or john[.]doe\uff20b[.]co[.]uk"
    assert not LIVE.search(post("contact support@evil-wallet.io or claim.evil.io@gmail.com"))


def test_a_cut_post_never_ends_in_a_live_link() -> None:
    # Cut inside the link: what is left is a piece of the defanged one.
    cut = post("x" * 190 + " https://evil.example/xyz")
    assert cut.endswith("hxxps://…") and len(cut) == message.POST_CHARS
    # `evil.com1x` is no domain, but cut after `evil.com` it would read as one.
    cut = post("y" * 190 + " evil.com1x tail", limit=200)
    assert cut.endswith("evil[.]com…"), cut
    for n in range(5, 40):
        assert not LIVE.search(post("see https://www.evil.example/claim and evil.com1x", limit=n)), n


def test_only_post_text_is_defanged() -> None:
    # An operator's words (an ack's reason, a verdict's) keep their runbook links; scopes their names.
    assert message.escape_post_text("runbook https://wiki.example/r") == "runbook https://wiki.example/r"


def record(text: str) -> AlertRecord:
    return AlertRecord(alert_id="a1b2c3d4e5f6", scope="asset:ETH", kind="sentiment_drop", state="firing", severity="critical",
                       window_start="2024-05-01T10:00:00Z", window_end="2024-05-01T11:00:00Z", value=0.7, baseline=0.2, zscore=6.8,
                       posts=57, sample_post_ids=["p1"], notified=False, fired_at="2024-05-01T11:02:00Z", metric="negative_share",
                       baseline_posts=1200, window="1h", samples=[Sample("p1", text, "negative", -0.91)])


def test_both_bodies_quote_posts_defanged_and_keep_the_console_link_live() -> None:
    rec = record("claim your airdrop at https://evil.example/x")
    notice = Notice("inc1", "asset:ETH", "firing", "new", "critical", "2024-05-01T11:00:00Z", "2024-05-01T10:00:00Z", False,
                    [{"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True, "severity": "critical"}])
    for text in (message.body(rec, console_url="https://sentinel.example.com"),
                 message.notice_body(notice, [rec], console_url="https://sentinel.example.com")):
        assert "hxxps://evil[.]example/x" in text and "evil.example" not in text
        assert "console: https://sentinel.example.com/" in text
        # The HTML part of a mail is the same text: defanged too.
        assert "evil.example" not in message.html_text(text)


@pytest.mark.parametrize("text", [
    "airdrop live...claim-eth.io",  # an ellipsis runs into the domain
    "go to .evil.example/x",
    "--evil.example",
    "_evil.example",
    "evil.example_now",
    "evil.example-",
    "-https://evil.example/x",  # a scheme after a hyphen or a letter
    ".https://evil.example/x",
    "xhttps://3627734734/x",  # a host with no dot: a decimal IP
    "https:/\\evil.example/x",  # browsers read a backslash as a slash
    "https:\\\\3627734734/x",
])
def test_no_neighbouring_character_keeps_a_link_live(text: str) -> None:
    shown = post(text)
    assert not LIVE.search(shown), shown
    assert not re.search(r"(?i)(?:https?|ftp):[/\\]", shown), shown


@pytest.mark.parametrize("invisible", ["\u00ad", "\u034f", "\u180e", "\u2061", "\u2063", "\u200c", "\u200d", "\ufe0f"])
def test_an_invisible_character_beside_the_dot_does_not_hide_the_domain(invisible: str) -> None:
    # Browsers map a soft hyphen, a variation selector or an invisible operator to nothing in a
    # host name (UTS 46), and a linkifier takes them as part of the name: shown, `evil.example`.
    for text in (f"evil{invisible}.example", f"evil.{invisible}example"):
        shown = post(text)
        assert "[.]" in shown and not LIVE.search(shown.replace(invisible, "")), repr(shown)


# A dotted quad of numbers at most 255 where a browser would open it, or a dot spelled `%2E`.
LIVE_ADDRESS = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d])|%2e", re.IGNORECASE)


@pytest.mark.parametrize("text, shown", [
    ("claim at 185.2.3.4:8080/claim now", "claim at 185[.]2[.]3[.]4:8080/claim now"),
    ("http://185.2.3.4/x", "hxxp://185[.]2[.]3[.]4/x"),
    ("node 192.168.001.010.", "node 192[.]168[.]001[.]010."),
    ("see evil%2Ecom/claim", "see evil[.]com/claim"),
    ("https://evil%2eexample/x", "hxxps://evil[.]example/x"),
    ("10%2E0%2e0%2E1/x", "10[.]0[.]0[.]1/x"),
    ("release v1.2.3.4 out", "release v1[.]2[.]3[.]4 out"),  # four parts each <= 255: read as an address
])
def test_bare_addresses_and_percent_encoded_dots_are_defanged(text: str, shown: str) -> None:
    assert post(text) == shown
    assert not LIVE.search(shown) and not LIVE_ADDRESS.search(shown), shown
    assert post(shown) == shown  # twice is once


@pytest.mark.parametrize("text", [
    "v2.0.1 and 1.2.3 out, $1.5k by 12.30 on 2023.01.05",
    "build 1.2.3.4.5 and 300.2.3.4 and 1.2.3.256",  # five parts, a part over 255: no address
    "up 12% to 2.5e3",
])
def test_prices_versions_dates_and_chatter_are_left_alone(text: str) -> None:
    assert post(text) == text


def test_a_cut_never_leaves_a_live_address() -> None:
    # `185.2.3.456` is no address, but cut after `185.2.3.45` it would read as one.
    cut = post("x" * 190 + " 185.2.3.456 tail", limit=202)
    assert cut.endswith("185[.]2[.]3[.]45…"), cut


@pytest.mark.parametrize("text, shown", [
    ("claim at ...185.2.3.4:8080/claim", "claim at ...185[.]2[.]3[.]4:8080/claim"),
    ("node at..10.0.0.1/x", "node at..10[.]0[.]0[.]1/x"),
    ("see.185.2.3.4", "see.185[.]2[.]3[.]4"),
])
def test_an_address_after_dots_that_end_no_number_is_defanged(text: str, shown: str) -> None:
    """An ellipsis (`...185.2.3.4`) before an address left it live: a dot before it was taken for
    a fifth part of the number, as in `1.2.3.4.5`, where a dot after a word is none. A linkifier
    takes the address after the dots, as it takes `...evil.com`'s domain."""
    assert post(text) == shown
    assert not LIVE_ADDRESS.search(shown), shown
    assert post("1.2.3.4.5 and 9.185.2.3.4") == "1.2.3.4.5 and 9.185.2.3.4"  # five parts still no address


# The domain pattern `defang` once ran as one regex (quadratic: each try read a chain of labels to
# its end); its one-pass replacement must find the same domains. Short texts, where the regex is fast.
_DOT = r"[\u00ad\u034f\u180b-\u180f\u200c\u200d\u2060-\u2064\ufe00-\ufe0f]*(?:[.\u3002\uff0e\uff61]|%(?:25)?2[eE])[\u00ad\u034f\u180b-\u180f\u200c\u200d\u2060-\u2064\ufe00-\ufe0f]*"
REGEX_DOMAIN = re.compile(rf"(?:[^\W_](?:[\w-]*[^\W_])?{_DOT})+(?:[^\W\d_]{{2,63}}|xn--[a-z0-9-]+)(?![^\W_])", re.IGNORECASE)
HOST_PIECES = st.lists(st.sampled_from(["a", "b", "Z", "é", "1", "9", "_", "-", ".", "\u3002", "%2E", "%2e", "%2", "%25", "%252E", "252", "\u00ad",
                                        "\ufe0f", " ", "/", "@", "xn--", "com", "ex", "x" * 63, "²", "\u017f", "K"]), max_size=14).map("".join)


@settings(max_examples=400, deadline=None)
@given(HOST_PIECES)
@example("a.b.com-x.y_.c.de")
@example("a.com.b.c and a.\ufe0f.b.cc and 1.2.xn--p1ai9")
@example("a%252Ecom a%252E%252Ecom a%252E2Ecom a%25%2Ecom")
def test_domains_are_found_where_the_one_regex_found_them(text: str) -> None:
    assert message._domain_spans(text) == [m.span() for m in REGEX_DOMAIN.finditer(text)]


# -- session 57: IPv6 hosts, numeric IPv4 hosts, double-encoded dots, a host run into a second URL --

@pytest.mark.parametrize("text, shown", [
    # A browser opens a bracketed IPv6 host (`[2001:db8::1]:8080/x` too, typed bare); each colon as `[:]`.
    ("http://[2001:db8::1]/x", "hxxp://[2001[:]db8[:][:]1]/x"),
    ("claim at [2001:db8::1]:8080/claim", "claim at [2001[:]db8[:][:]1]:8080/claim"),
    ("https://[::ffff:185.2.3.4]/x", "hxxps://[[:][:]ffff[:]185[.]2[.]3[.]4]/x"),
    ("http://[fe80::1%25eth0]/", "hxxp://[fe80[:][:]1%25eth0]/"),
])
def test_bracketed_ipv6_hosts_are_defanged(text: str, shown: str) -> None:
    assert post(text) == shown
    assert not re.search(r"\[[0-9a-f.]*:[0-9a-f.]*:[0-9a-f:.%]*\]", shown, re.IGNORECASE), shown  # `[:]` holds one colon
    assert post(shown) == shown  # twice is once


@pytest.mark.parametrize("text", [
    "2001:db8::1 is a documentation prefix",  # unbracketed: no URL host, no client links it
    "at 12:30:45, ratio 3:1, [a:b] and [12:30]",
    "see [1:2] and [a:b:c]",  # brackets that hold no IPv6 address
])
def test_unbracketed_ipv6_times_and_ratios_are_left_alone(text: str) -> None:
    assert post(text) == text


@pytest.mark.parametrize("text, shown", [
    # A browser reads a host of one number, or hex or octal parts, as an IPv4 address (WHATWG URL).
    ("http://3232235777/", "hxxp://3232235777[=192[.]168[.]1[.]1]/"),
    ("http://0xC0A80101/claim", "hxxp://0xC0A80101[=192[.]168[.]1[.]1]/claim"),
    ("https://user@030052000401:8080/x", "hxxps://user\uff20030052000401[=192[.]168[.]1[.]1]:8080/x"),
    ("http://0300.0250.1.1/", "hxxp://0300[.]0250[.]1[.]1/"),
    ("node at 0300.0250.1.1 and 0xC0.0xA8.0x1.0x1", "node at 0300[.]0250[.]1[.]1 and 0xC0[.]0xA8[.]0x1[.]0x1"),
])
def test_numeric_and_hex_ipv4_hosts_are_defanged(text: str, shown: str) -> None:
    assert post(text) == shown
    assert not LIVE_ADDRESS.search(shown) and not re.search(r"(?i)://(?:0x[0-9a-f]+|\d+)(?:[:/]|$)", shown), shown
    assert post(shown) == shown


@pytest.mark.parametrize("text", [
    "3232235777 tokens burned, 0xC0A80101 is a hash prefix",  # bare numbers are no hosts
    "http://4294967296/ is past the last address",  # 2**32: no address, left with its scheme defanged
    "v0400.1.2.3 and 0x1FF.1.1.1",  # a part over 255 in any base
])
def test_bare_numbers_and_out_of_range_hosts_are_not_mangled(text: str) -> None:
    assert post(text) == text.replace("http://", "hxxp://")


def test_a_number_past_what_python_converts_is_no_address_and_no_error() -> None:
    text = "9" * 5000 + ".1.1.1 and http://" + "9" * 5000 + "/"
    assert message.defang(text) == text.replace("http://", "hxxp://")


@pytest.mark.parametrize("text, shown", [
    ("see evil%252Ecom/claim", "see evil[.]com/claim"),  # a client that decodes twice reads evil.com
    ("https://evil%252eexample/x", "hxxps://evil[.]example/x"),
    ("10%252E0%252E0%252E1/x", "10[.]0[.]0[.]1/x"),
])
def test_double_encoded_dots_are_defanged(text: str, shown: str) -> None:
    assert post(text) == shown
    assert post(shown) == shown


@pytest.mark.parametrize("text", [
    "http://x\u3002http://evil.com",  # the first host runs into a second URL
    "http://xhttp://evil.com",
    "https://a.b.chttps://evil.com/x",
    "ftp://xftp://evil.com",
])
def test_a_host_that_runs_into_a_second_url_leaves_no_live_scheme(text: str) -> None:
    shown = post(text)
    assert not LIVE.search(shown) and not re.search(r"(?i)(?:https?|ftp):[/\\]", shown), shown
    assert post(shown) == shown


@pytest.mark.parametrize("text", [
    "BTC 43,250.5 at 12:30 UTC (12:30:45 on the tape), longs 3:1, funding 0.0001, gas 0.000021",
    "geth v1.13.14 and v1.2.3 out; burned 1e18 wei; block 19000000. next",
    "tx 0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060. confirmed",
    "send to 0x742d35Cc6634C0532925a3b844Bc454e4438f44e. USDT is 0xdAC17F958D2ee523a2206206994597C13D831ec7.",
    "chain id 0x1. mainnet, 0x89. polygon; nonce 0x10. gas 0x5208.",
    "slice [1:2] and arr[0:10] at [12:30]; bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    "price 4294967295. wow, 3232235777 tokens, 0x1234. then 0x0.",
])
def test_ordinary_crypto_chatter_is_left_as_it_is(text: str) -> None:
    """A risk team reads the posts: times, ratios, versions, prices, tx hashes and wallet addresses
    (`0x...` followed by a sentence's dot) are no links and get no brackets, nor a `[=...]` address."""
    assert message.defang(text) == text
    assert post(text, limit=0) == text
