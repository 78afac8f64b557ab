"""The words of a notification: title and plain-text body for one `AlertRecord` (pure, no I/O).

The body is plain text so one rendering serves Slack, email and JSON webhooks alike. Everything
that came from a forum post is untrusted: `escape_post_text` makes it inert before it is shown
(no Slack mentions or links, no @-pings, no markup, no control characters, one line, bounded length).
"""

from __future__ import annotations

import html
import ipaddress
import re
import shlex
from dataclasses import asdict
from typing import Any, Callable, Mapping, Sequence, TypeGuard
from urllib.parse import quote

from stream.alerts.grouping import Notice
from stream.alerts.incidents import AlertRecord, ranked
from stream.alerts.precision import VERDICTS, TrackRecord
from stream.contracts import name_problem
from stream.timefmt import epoch, iso
from stream.windows import Sample, SliceCol, distinct_samples, sample_key

POST_CHARS = 200  # visible characters of one sample post
ELLIPSIS = "…"

# Carriage returns, tabs, vertical tab, form feed, NEL and the Unicode line/paragraph separators all
# break a line somewhere; a sample post is shown on one line, so each becomes a space.
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")
# Remaining C0/C1 controls, plus every format character (Unicode category Cf) but the joiners an
# emoji sequence needs (\u200c, \u200d), as `contracts.normal_name` drops them from a name: they hide
# or reorder text. Not only the bidi embeddings, overrides and isolates ("Trojan Source"): the bidi
# marks (LRM, RLM, ALM) can reorder the numbers and signs around them, tag characters (U+E0020..)
# carry whole invisible sentences, and interlinear annotations hide text. Listed by range
# (tests/test_notify.py checks the list against unicodedata); a subdivision flag loses its tags and
# is shown as a plain black flag.
_FORMAT = ("\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f\u202a-\u202e"
           "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
           "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f")
_INVISIBLE = re.compile(rf"[\x00-\x1f\x7f-\x9f{_FORMAT}]")
_SPACES = re.compile(r"[ \u00a0]{2,}")
# Slack's control sequences: <!channel>, <!here|here>, <@U123>, <@U123|bob>, <#C123|general>,
# <http://x|label>, <mailto:a@b|label>. Rewritten to readable, inert text before escaping.
_SLACK_SPECIAL = re.compile(r"<\s*([!@#])([^<>|]*)(?:\|([^<>]*))?>")
_SLACK_LINK = re.compile(r"<\s*((?:[a-z][a-z0-9+.-]*):[^<>|\s]*)(?:\|([^<>]*))?>", re.IGNORECASE)
# A full-width at sign reads as "@" but no chat service parses it as a mention (@here, @channel,
# @everyone, @all, @username) and no mail client turns it into an address.
_SAFE_AT = "\uff20"
# Defanging (`defang`): a web scheme, and the host after it. `hxxp` and `[.]` are no match, so
# defanging twice changes nothing. No look-behind: a linkifier finds `https://` after a hyphen, a
# dot or a letter too (`-https://`, `xhttps://`), and a browser reads `https:/\` as `https://`.
# A host ends where a second scheme begins (`http://xhttp://evil.com`, `http://x。http://evil.com`):
# read into the first host, the second URL's scheme stayed live.
_URL = re.compile(r"(https?|ftp)(:[/\\]+)((?:(?!(?:https?|ftp):)[^\s/\\?#<>\u2039\u203a])*)", re.IGNORECASE)
# A bare domain or a `www.` host: dot-separated labels (letters of any script, digits, hyphens; an
# IDN's own dots too) ending in a label of two or more letters, or a punycode one (`xn--p1ai`).
# Not a decimal (`1.5`: its last label is digits), not `e.g.` (one-letter labels), not a
# cashtag's `$ETH` (no dot). Whatever stands before or after it (`...evil.com`, `-evil.com`,
# `evil.com_`, an address's `＠`): a linkifier links the domain in all of them, so no neighbour
# exempts it; an address's domain (and a dotted local part) is defanged as any other.
# Characters a browser maps to nothing in a host name (UTS 46: soft hyphen, joiners, variation
# selectors, invisible operators, Mongolian selectors) and a linkifier takes as part of the name
# are taken into the dot they stand by, so `evil\u00ad.com` is `evil[.]com` and not a live `evil.com`.
_IGNORED_CHAR = r"[\u00ad\u034f\u180b-\u180f\u200c\u200d\u2060-\u2064\ufe00-\ufe0f]"
_IGNORED = rf"{_IGNORED_CHAR}*"
# A percent-encoded dot (`%2E`, `%2e`) is a dot too: a browser decodes it in a host name
# (`http://evil%2Ecom/` opens evil.com), and a reader takes `evil%2Ecom` for the domain it spells.
# Encoded twice too (`%252E`: a redirector or a mail gateway that decodes once hands a browser `%2E`).
_DOT_CHARS = r"[.\u3002\uff0e\uff61]|%(?:25)?2[eE]"
_DOT = rf"{_IGNORED}(?:{_DOT_CHARS}){_IGNORED}"
# As one pattern, `(?:label DOT)+ TLD`, this was tried at each position and each try read the
# chain of labels to its end: quadratic (`a.a.a...` of 10,000 characters took 5.6 s). `_domain_spans`
# finds the same matches reading each run of name characters (`_NAME_RUN`) and each DOT once.
_NAME_RUN = re.compile(r"[\w-]+")
_DOT_AT = re.compile(_DOT)
_LABEL_START = re.compile(r"[^\W_]")
_TLD = re.compile(r"(?:[^\W\d_]{2,63}|xn--[a-z0-9-]+)(?![^\W_])", re.IGNORECASE)
# Dots in a host, each with the ignored characters around it. A try in the middle of a run of ignored
# characters is no match (the try at its start found no dot after it): skipped, or a long run was
# read to its end from each of its characters.
_HOST_DOTS = re.compile(rf"(?:(?<!{_IGNORED_CHAR}){_IGNORED_CHAR}+)?(?:{_DOT_CHARS}){_IGNORED}")
# A bare IPv4 address: four dotted numbers, each at most 255 (`_address`), with nothing numeric
# joined on either side (`1.2.3.4.5` is no address). A dot before it joins a number only where a
# digit stands before that dot: `...185.2.3.4` (an ellipsis, as `...evil.com`) is an address, and
# a linkifier links it. A browser opens `185.2.3.4:8080/claim` as `http://185.2.3.4:8080/claim`,
# and a scam post gives its host so where a domain would be blocked.
# A four-part version (`1.2.3.4`) reads as an address and is defanged too: nothing in it tells the
# two apart, `1[.]2[.]3[.]4` still reads as the version, and a live address costs more than a
# bracket. Dates (`2023.01.05`), versions of three parts (`1.2.3`, `v2.0.1`), prices and times
# (`$1.5k`, `12.30`) have too few parts or a part over 255, and are left alone.
# A part may be written in hex (`0xC0`) or octal (`0300`), as a browser reads it (WHATWG URL):
# `0300.0250.1.1` opens 192.168.1.1 (`_address` reads each part so).
_IPV4_PART = r"(?:0[xX][0-9a-fA-F]*|\d+)"
_IPV4 = re.compile(rf"(?<!\d)(?<!\d[.\u3002\uff0e\uff61])(?<!\d%2[eE])(?<!\d%252[eE]){_IPV4_PART}(?:{_DOT}{_IPV4_PART}){{3}}"
                   rf"(?!\d|(?:{_DOT_CHARS})\d)")
# A URL's host of one number (`http://3232235777/`, `http://0xC0A80101/`, octal `017752200401`),
# after any user info: a browser opens it as the IPv4 address it encodes. It has no dot to bracket;
# the address it stands for is said after it, defanged (`3232235777[=192[.]168[.]1[.]1]`), which
# also makes the host no longer a number. A bare number (`3232235777 tokens`) is no host and is left.
_NUMBER_HOST = re.compile(r"(?:^|(?<=@))(0[xX][0-9a-fA-F]*|\d+)(?=(?::\d*)?$)")
# A bracketed IPv6 address (`[2001:db8::1]`, with a zone `%25eth0`): the form a URL gives an IPv6
# host, and a browser opens typed bare (`[2001:db8::1]:8080/x`). Each colon as `[:]`. An unbracketed
# one (`2001:db8::1`) is no URL host, and no client links it: left, as times and ratios are.
_IPV6 = re.compile(r"\[([0-9A-Fa-f:.]+)((?:%(?:25)?[\w.~-]+)?)\]")


def escape_post_text(text: str, limit: int = POST_CHARS, links: bool = True) -> str:
    """Make untrusted post text safe to show in Slack, email or a JSON consumer.

    Order matters: line breaks and invisible characters go first (so they cannot split a pattern
    apart), Slack syntax is rewritten next, then links are defanged (`links=False`, a post's
    text: `defang`), then the text is truncated (and what the cut ends checked again), and `@` and angle brackets become look-alikes
    last. Defanged before the cut, a link is whole when it is recognised, and a cut of
    `hxxps://evil[.]example` leaves a piece of it, never a live link.
    """
    text = _LINE_BREAKS.sub(" ", text)
    text = _INVISIBLE.sub("", text)
    text = _SLACK_SPECIAL.sub(_slack_special_text, text)
    text = _SLACK_LINK.sub(_slack_link_text, text)
    text = _SPACES.sub(" ", text).strip()
    if not links:
        text = defang(text)
    if limit > 0 and len(text) > limit:
        text = text[: max(limit - 1, 0)].rstrip() + ELLIPSIS
        if not links:
            # A cut can end a word that was no domain as one: `evil.comx` (no domain) -> `evil.com…`.
            text = defang(text)
    text = text.replace("@", _SAFE_AT)
    # Angle brackets become single guillemets: inert as markup in Slack, HTML mail and any JSON
    # consumer that renders HTML, yet readable, and never double-escaped into visible `&lt;`
    # by a service that escapes plain text itself (Apprise does, for Slack and HTML email).
    return text.replace("<", "\u2039").replace(">", "\u203a")


def defang(text: str) -> str:
    """Links and bare domains in a post made unclickable yet readable, by the usual convention:
    `https://evil.example/x` -> `hxxps://evil[.]example/x`, `www.evil.example` and `evil.example`
    -> `www[.]evil[.]example`, `evil[.]example`. Slack links a bare domain, and mail clients a
    `www.` or a known domain in plain text: a scam post's "claim your airdrop at ..." was one
    click from the risk team. An address's domain too (`a＠b[.]com`: its `@` is a look-alike, and
    the domain after it reads bare), whatever stands next to a domain (`...evil[.]com`), and an
    invisible character beside a dot goes into the `[.]`. Not a decimal (`1.5`) or a cashtag. A
    `word.Word` with no space reads as a domain and gets its `[.]` too: readable, and no link. IPv4
    addresses (hex and octal parts too, a link's one-number host), bracketed IPv6 ones
    (`[2001[:]db8[:][:]1]`) and dots encoded once or twice (`%2E`, `%252E`) as well."""
    text = _IPV6.sub(_ipv6_address, text)  # first: an IPv4 address inside one keeps its dots for `_ipv6_address`
    text = _URL.sub(_defanged_url, text)
    text = _IPV4.sub(_address, text)
    out, last = [], 0
    for start, end in _domain_spans(text):
        out += [text[last:start], _HOST_DOTS.sub("[.]", text[start:end])]
        last = end
    return "".join(out) + text[last:]


def _domain_spans(text: str) -> list[tuple[int, int]]:
    """Where the domains in `text` are: the matches, left to right, of `(?:label DOT)+ TLD` (a
    label: `[^\\W_](?:[\\w-]*[^\\W_])?`; a DOT: a dot with the ignored characters around it; a
    TLD: two to 63 letters, or `xn--...`, no letter or digit after), in linear time. A DOT holds
    no name character but the `2E` of a `%2E`, so a label runs to the end of its run of name
    characters, and which labels follow it is fixed by that run: the greedy match ends at the
    furthest TLD they reach (`furthest`, found for each run from the last to the first)."""
    runs = [m.span() for m in _NAME_RUN.finditer(text)]
    run_at = {start: i for i, (start, _) in enumerate(runs)}
    furthest: list[int | None] = [None] * len(runs)  # the furthest TLD after the DOT after each run

    def reach(node: int, encoded: int) -> int | None:
        """The furthest TLD from `node` (a position after a DOT): on through its label, or here.
        `encoded`: where the run a `%2E`'s (`%252E`'s) digits begin, or -1."""
        # After a DOT stands a run's start, or the rest of a run after a `%2E`'s `2E` (`%252E`'s `252E`).
        i = run_at.get(node, run_at.get(encoded, -1))
        whole = i >= 0 and node < runs[i][1] and _LABEL_START.match(text, node) and _LABEL_START.match(text, runs[i][1] - 1)
        if whole and furthest[i] is not None:
            return furthest[i]
        return node if _TLD.match(text, node) else None

    for i in range(len(runs) - 1, -1, -1):
        dot = _DOT_AT.match(text, runs[i][1])
        percent = dot.group(0).rfind("%") if dot else -1
        furthest[i] = reach(dot.end(), dot.start() + percent + 1 if percent >= 0 else -1) if dot else None
    spans, resume = [], 0
    for i, (start, end) in enumerate(runs):
        # A label begins at the first letter or digit not yet in a domain (the rest of a TLD's run
        # may begin one), and ends at its run's end.
        node = furthest[i]
        if node is None or resume >= end or not _LABEL_START.match(text, end - 1):
            continue
        begin = _LABEL_START.search(text, max(start, resume), end)
        if begin and (tld := _TLD.match(text, node)):
            spans.append((begin.start(), tld.end()))
            resume = tld.end()
    return spans


def _address(match: re.Match[str]) -> str:
    """An IPv4 address defanged; four dotted numbers with one over 255 (no address) as they were."""
    found = match.group(0)
    return _HOST_DOTS.sub("[.]", found) if all(_ipv4_number(part) <= 255 for part in _HOST_DOTS.split(found)) else found


def _ipv4_number(part: str) -> int:
    """A part of an IPv4 host as a browser reads it (WHATWG URL): `0x` hex, a leading 0 octal
    (decimal where it holds an 8 or a 9: no browser opens it, and it was read so before), else decimal."""
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part[0] == "0" and set(part) <= set("01234567"):
        return int(part, 8)
    # A long run of digits is past any address: never converted (Python refuses past 4,300 digits).
    return int(part) if len(part.lstrip("0")) <= 12 else 1 << 64


def _ipv6_address(match: re.Match[str]) -> str:
    """A bracketed IPv6 address with each colon as `[:]`; brackets holding no address as they were."""
    try:
        ipaddress.IPv6Address(match.group(1))
    except ValueError:
        return match.group(0)
    return "[" + match.group(1).replace(":", "[:]") + match.group(2) + "]"


def _number_host(match: re.Match[str]) -> str:
    """A host of one number followed by the IPv4 address it encodes, defanged; past 2**32 as it was."""
    value = _ipv4_number(match.group(1))
    if value > 0xFFFFFFFF:
        return match.group(0)
    return f"{match.group(1)}[={'[.]'.join(str(b) for b in value.to_bytes(4, 'big'))}]"


def _defanged_url(match: re.Match[str]) -> str:
    scheme, host = match.group(1), match.group(3)
    # http -> hxxp, https -> hxxps, ftp -> fxp, in the post's own case.
    scheme = scheme[0] + ("xx" if scheme[1] in "tT" and len(scheme) > 3 else "x") + scheme[3 if len(scheme) > 3 else 2:]
    return scheme + match.group(2) + _NUMBER_HOST.sub(_number_host, _HOST_DOTS.sub("[.]", host), count=1)


def _slack_special_text(match: re.Match[str]) -> str:
    sigil, ident, label = match.group(1), match.group(2).strip(), (match.group(3) or "").strip()
    # "<!channel>" -> "!channel"; "<#C1|general>" -> "#general"; "<@U1|bob>" -> "@bob" (made safe later).
    return f"{sigil}{label or ident}"


def _slack_link_text(match: re.Match[str]) -> str:
    url, label = match.group(1), (match.group(2) or "").strip()
    # Show where a link goes instead of hiding it behind a label.
    return f"{label} ({url})" if label and label != url else url


def scope_text(scope: str, limit: int = 120) -> str:
    """A scope as a notice shows it: made inert as a post's text is, links and domains defanged
    too. A channel's or source's name is the forum's, and a poster who runs a channel names it: a
    Telegram group called `claim-airdrop.example` made every notice about its (easily swung)
    sentiment carry a live link in the title, which Slack and mail clients link. Its console link
    (`scope_link`) and a `sentinel silence` command (`record_actions`: only where this left the
    scope as it is) name it exactly."""
    return escape_post_text(scope, limit=limit, links=False)


def html_text(text: str) -> str:
    """A plain-text body as the HTML part of a mail sent as HTML (a `mailto://` URL's
    `format=html`): escaped, each line ended by a break, ordinary spaces. Apprise's own conversion
    made every space a non-breaking one, so no line wrapped: a sample post's 200 characters ran
    off a phone's screen, and the console link with it. Long words (links) may break anywhere.
    No `\n` after a break: Apprise derives the plain part from this HTML, and a newline there
    began each of its lines with a space."""
    lines = (html.escape(line) for line in text.split("\n"))
    return '<div style="overflow-wrap: anywhere; word-break: break-word">' + "<br/>".join(lines) + "</div>"


def fit_body(text: str, maxlen: int, size: Callable[[str], int] = len) -> str:
    """A notification body made to fit a service's `maxlen` (by `size`: its length as sent, e.g.
    as HTML): sample posts dropped from the last, then related scopes from the last, each list
    ended by a line counting what it no longer shows ("... and 3 more sample posts (see the
    console link)"). A market-wide incident's dozens of members and their samples made a body
    past a service's limit, and the service (or Apprise) cut it blindly or refused it: the head
    (what moved, since the last notice, the actions, the console link) is what must arrive. Where
    it is still too long, its longest lines are cut, each with an ellipsis (`_shorten`): never the
    first line, nor the id line and the actions and console link after it. Only where those alone
    are too long is the text cut at its end. `maxlen` 0 or less: no cap."""
    if maxlen <= 0 or size(text) <= maxlen:
        return text
    lines = text.split("\n")
    where = "(see the console link)" if any(line.startswith("console: ") for line in lines) else "(not shown: too long for this service)"
    for is_item, noun in ((_is_sample_line, "sample post"), (_is_member_line, "related scope")):
        lines = _drop_items(lines, is_item, noun, where, maxlen, size)
        if size("\n".join(lines)) <= maxlen:
            return "\n".join(lines)
    return _shorten(lines, maxlen, size)


def _is_sample_line(line: str) -> bool:
    return line.startswith("- [")


def _is_member_line(line: str) -> bool:
    return line.startswith("- ") and not _is_sample_line(line)


def _drop_items(lines: list[str], is_item: Callable[[str], bool], noun: str, where: str, maxlen: int,
                size: Callable[[str], int]) -> list[str]:
    """`lines` with their `is_item` lines dropped from the last until the text fits (or none is
    left), a line counting them after the last one kept. A sample group's header whose samples
    all went goes too. The number kept is found by bisection (the text grows with it): tried one
    by one from the last, a market-wide notice of 2,000 scopes took 2.5 s to fit a mail, 5,000 17 s,
    each measuring the whole text again, for each service and attempt."""
    items = [i for i, line in enumerate(lines) if is_item(line)]
    if not items:
        return lines

    def kept(keep: int) -> list[str]:
        dropped = set(items[keep:])
        if noun == "sample post":
            dropped |= _empty_headers(lines, dropped)
        more = len(items) - keep
        said = f"... and {more} more {noun}{'' if more == 1 else 's'} {where}"
        out = [line for i, line in enumerate(lines) if i not in dropped]
        out.insert(min(dropped), said)  # where the first dropped line was: after the last one kept
        return out

    # At least one goes: the caller found the text too long with all.
    if size("\n".join(kept(0))) > maxlen:
        return kept(0)
    return kept(largest_fitting(0, len(items) - 1, lambda keep: size("\n".join(kept(keep))) <= maxlen))


def _empty_headers(lines: list[str], dropped: set[int]) -> set[int]:
    """The sample groups' header lines ("sentiment_drop on asset:ETH (its most negative posts):")
    none of whose samples is left."""
    out = set()
    for i, line in enumerate(lines):
        if line.endswith("):") and not line.startswith("- "):
            following = []
            for j in range(i + 1, len(lines)):
                if not _is_sample_line(lines[j]):
                    break
                following.append(j)
            if following and all(j in dropped for j in following):
                out.add(i)
    return out


def _shorten(lines: list[str], maxlen: int, size: Callable[[str], int]) -> str:
    """`lines` with every line longer than a width cut to it with an ellipsis, the widest width
    that fits: a long since-last line, an acknowledgement's reason or a level goes before a short
    line does. Not the first line, nor the id line and the lines after it (`_uncut`). A cut at the
    text's end took the console link, which the "... and N more" lines point to, and half a
    `sentinel silence` command, where an update's since-last line and an ack filled a pager's 1,024."""
    uncut = _uncut(lines)

    def capped(width: int) -> str:
        return "\n".join(line if i in uncut or len(line) <= width else line[: max(width - 1, 0)].rstrip() + ELLIPSIS
                         for i, line in enumerate(lines))

    if size(capped(1)) > maxlen:  # the lines kept whole are past the limit on their own
        return _cut("\n".join(lines), maxlen, size)
    return capped(largest_fitting(1, max(len(line) for line in lines), lambda width: size(capped(width)) <= maxlen))


def _uncut(lines: list[str]) -> set[int]:
    """The lines `_shorten` keeps whole: the first (what is firing), and the id line (`incident_id:`,
    an ungrouped alert's `alert_id:`) with those after it up to a blank line, the actions and the
    console link (`notice_body`, `body`)."""
    out = {0}
    for i, line in enumerate(lines):
        if line.startswith(("incident_id: ", "alert_id: ")):
            out.update(range(i, next((j for j in range(i, len(lines)) if not lines[j]), len(lines))))
    return out


def _cut(text: str, maxlen: int, size: Callable[[str], int]) -> str:
    """The longest start of `text` that fits with an ellipsis: the last resort."""
    # The size grows with the prefix (HTML escaping too).
    return text[:largest_fitting(0, len(text), lambda end: size(text[:end].rstrip() + ELLIPSIS) <= maxlen)].rstrip() + ELLIPSIS


def largest_fitting(low: int, high: int, fits: Callable[[int], bool]) -> int:
    """The largest n in low..high with `fits(n)`, by bisection, where `fits(low)` holds and a text
    only grows with n (so once it no longer fits, it never does again): fitting a body measures the
    whole text as sent each try, and one try per item took seconds on a list of thousands."""
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


SHORT_ID = 8  # characters of an incident's (or alert's) id in a title: `sentinel ack`/`verdict` take a start of 6 or more


def short_id(incident_id: str) -> str:
    """The start of an id that a title shows, e.g. "cc08e3eb"."""
    return incident_id[:SHORT_ID]


def title(record: AlertRecord) -> str:
    """E.g. "[CRITICAL] sentiment_drop on asset:ETH [a1b2c3d4]", "[RESOLVED] sentiment_drop on
    asset:ETH [a1b2c3d4]": ended by the start of its alert_id, the same for each of its transitions,
    as an incident's notice is by its id (`notice_title`)."""
    state = "RESOLVED" if record.state == "resolved" else record.severity.upper()
    scope = scope_text(record.scope)  # scopes can carry forum channel names
    suffix = " (still firing)" if record.repeat and record.state == "firing" else ""
    return f"[{state}] {record.kind} on {scope}{suffix} [{short_id(record.alert_id)}]"


def incident_link(console_url: str, incident_id: str) -> str:
    """The incident's page on the console (SENTINEL_CONSOLE_URL), or "" when none is configured."""
    return f"{console_url}/incidents/{quote(incident_id, safe='')}" if console_url else ""


def scope_link(console_url: str, scope: str) -> str:
    """The scope's page on the console, or "". Quoted: a channel name may hold spaces, slashes or
    anything a forum allows, and a mail or chat client cuts a link at a character URLs do not take
    (`|` too, which the console's own links keep)."""
    return f"{console_url}/scope/{quote(scope, safe=':')}" if console_url else ""


def body(record: AlertRecord, samples: int = 3, post_chars: int = POST_CHARS, console_url: str = "", now: float | None = None,
         routes: Sequence[str] = ()) -> str:
    """Plain-text body: what moved, by how much, over which window, a link to the scope's console
    page, and up to `samples` posts. `now`: the wall clock at sending (`late_lines`). `routes`: a
    resolution's, the severities its firing notifications went out at (`escalation_lines`)."""
    status = "resolved" if record.state == "resolved" else f"firing ({record.severity})"
    level = measure(asdict(record), window=record.window)
    lines = [
        f"{record.kind} on {scope_text(record.scope)} is {status}.",
        *(escalation_lines(record.severity, routes) + [peak_line(record.severity)] if record.state == "resolved" else []),
        *([f"{level}; z {record.zscore:+.1f} over {record.posts} posts ({record.baseline_posts} in the baseline)"] if level else []),
        # Unchanged since the first release: consumers parse it (event time, as every time here).
        f"window {record.window}: {record.window_start} .. {record.window_end}",
        *late_lines(record.window_end, now),
        f"alert_id: {record.alert_id}",
        *record_actions(record),
    ]
    if console_url:
        lines.append(f"console: {scope_link(console_url, record.scope)}")
    shown = _sample_lines(record.samples, samples, post_chars)
    if shown:
        # A volume spike's samples are its most strongly scored posts of any label: under a plain
        # header a positive one read as the move's direction. Said above the header, which with
        # each post's line below it consumers parse.
        either = ["A volume spike's samples are its most strongly scored posts of either sign: they show no direction."] \
            if record.kind == "volume_spike" else []
        lines += ["", *either, "Sample posts:", *shown]
    return "\n".join(lines)


ACKS_LISTED = 5  # acknowledgements a notice lists: the first and the latest ones


def ack_lines(acks: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per acknowledgement, as the console's incident page says them, up to `ACKS_LISTED`
    (more: the first, a line counting those between, and the latest). The first line names
    the latest reason only: a second `sentinel ack` replaced the first one's in every later notice
    (the audit log kept both), and who acknowledged, and when, was not said at all."""
    def one(a: Mapping[str, Any]) -> str:
        by = f" by {escape_post_text(str(a['by']), limit=120)}" if a.get("by") else ""
        via = f" ({escape_post_text(str(a['via']), limit=40)})" if a.get("via") else ""
        return f"Acknowledged {a.get('at', '')} (wall clock){by}{via}: {escape_post_text(str(a.get('reason') or 'acknowledged'), limit=300)}"

    if len(acks) <= ACKS_LISTED:
        return [one(a) for a in acks]
    # Bounded: the log keeps 50, and a script acknowledging each repeat filled a notice with them.
    # The first says who took it on; the latest, where it stands.
    between = len(acks) - ACKS_LISTED
    return [one(acks[0]), f"... {between} more acknowledgements between these (the console's incident page lists every one)",
            *(one(a) for a in acks[len(acks) - ACKS_LISTED + 1:])]


def escalation_lines(severity: str, routes: Sequence[str], told_at: Mapping[str, str] | None = None) -> list[str]:
    """A resolution's line when some service it goes to heard the incident (or alert) fire at a
    lower severity than the `severity` it ends at: a warning-only channel got "critical, resolved"
    of what it last heard as a warning, with nothing saying it had escalated since. `routes`: the
    severities its firing notifications went out at; `told_at`: when the first at each did (event
    time), where known. None when every service heard it at `severity`."""
    told = ranked(routes)
    if not told or told[0] == severity:
        return []
    at = told_at or {}
    steps = [f"{s} from {at[s]}" if s in at else s for s in told]
    when = " (event time)" if any(s in at for s in told) else ""
    untold = f"; it reached {severity} with no notification sent at it" if severity not in told else ""
    return [f"Escalated: told as {', then '.join(steps)}{when}{untold}. A service for {told[0]} alone heard it only as {told[0]}."]


def peak_line(severity: str) -> str:
    """A resolution's line naming the highest severity it reached. Its title says RESOLVED and its
    first line "is resolved.": a critical incident's end read like a warning's in a mailbox or a
    chat, where the payload's `severity` key is not shown."""
    return f"Highest severity reached: {severity}."


LIMIT_TITLE = "[NOTICE] daily notification limit reached"


def test_title(severity: str) -> str:
    return f"[TEST] Forum Sentinel notifications ({severity})"


def test_body(severity: str, console_url: str = "") -> str:
    """`sentinel notify-test`: says what reaching this service proves, and that nothing fired."""
    lines = [f"A test from `sentinel notify-test`: {severity} alerts reach this service. Nothing fired; no incident is open because of this."]
    if console_url:
        lines.append(f"console: {console_url}/incidents")
    return "\n".join(lines)


def limit_body(cap: int) -> str:
    return (f"This service has had its {cap} notifications for today (UTC). Further alerts are still recorded on "
            "sentiment-alerts and in `sentinel incidents`, but not sent here until 00:00 UTC.")


REASON_SUFFIX = {"new": "", "update": " (update)", "repeat": " (still firing)", "resolved": ""}


def notice_title(notice: Notice) -> str:
    """E.g. "[WARNING] sentiment_drop on asset:ETH (+4 related scopes) [cc08e3eb]", "[RESOLVED] ... on
    asset:ETH [cc08e3eb]". The incident's short id ends it: two incidents of one root on different
    days had the same title, and in Slack or a mailbox a new incident read as an old one's update."""
    state = "RESOLVED" if notice.state == "resolved" else notice.severity.upper()
    root = scope_text(notice.root_scope)
    # The kinds the root fires now: a kind that ended is not moving "still", and is listed as
    # resolved in the body. A resolution names what the incident was about.
    firing = sorted({m["kind"] for m in notice.members if m["scope"] == notice.root_scope and m["firing"]})
    kinds = ", ".join(firing if firing and notice.state != "resolved" else notice.root_kinds)
    # A market-wide incident lists its assets; before any asset's own alert has fired (`all` is
    # explained by assets moving together, none of which has fired yet) it has none to list, and
    # the title said "market-wide volume_spike ()".
    assets = title_assets(_related(notice, assets=True))
    where = f"market-wide {kinds}{f' ({assets})' if assets else ''}" if notice.market else f"{kinds} on {root}"
    related = len(_related(notice))
    more = f" (+{related} related scope{'s' if related != 1 else ''})" if related else ""
    return f"[{state}] {where}{more}{REASON_SUFFIX.get(notice.reason, '')} [{short_id(notice.incident_id)}]"


TITLE_ASSETS = 3  # assets a market-wide title names; the body lists every one


def title_assets(assets: Sequence[str]) -> str:
    """'asset:ADA, asset:BTC, asset:ETH and 22 more': the assets a market-wide title names. All
    of them made a market-wide move of 25 cashtags a 642-character subject, one unfolded header
    line of 652 (a mail header line may hold 998, and a cashtag up to 40 characters here): a
    mailbox or a chat shows the first 60 to 80, so the related count and the incident's id at
    its end were never seen."""
    shown = [scope_text(s, limit=40) for s in assets[:TITLE_ASSETS]]
    more = len(assets) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def notice_body(notice: Notice, records: Sequence[AlertRecord] = (), samples_shown: int = 3, post_chars: int = POST_CHARS,
                console_url: str = "", track: TrackRecord | None = None, window: str = "1h",
                recent: Mapping[str, Sequence[float]] | None = None, now: float | None = None,
                verdict: Mapping[str, Any] | None = None, routes: Sequence[str] = (),
                told_at: Mapping[str, str] | None = None, acks: Sequence[Mapping[str, Any]] = (),
                since_last: Mapping[str, Any] | None = None) -> str:
    """Plain-text body of an incident notification: the root, what moved since when, the members,
    how often earlier incidents like it were judged real (`track`), a link to the incident's
    console page (where it can be acknowledged or silenced), and sample posts from the `records`
    the notice goes out with, each under the member it illustrates (`notice_sample_lines`).
    `recent`: each firing member scope's counts over the alert window before the notice (a
    reminder's: `recent_level`). `now`: the wall clock at sending (`late_lines`). `verdict`: the
    verdict already given on the incident, as `verdicts.give_verdict` stores it (a resolution says it
    rather than asking for one: `actions`). `routes` and `told_at`: a resolution's, the severities
    its firing notices went out at and when the first at each did (`escalation_lines`). `acks`: its
    acknowledgements ({at, by, via, reason}, oldest first), each on a line of its own (`ack_lines`).
    `since_last`: an update's or a reminder's outbox `Entry.since_last`, what changed since the
    incident's previous notice, said on the second line (`since_last_lines`)."""
    status = "resolved" if notice.state == "resolved" else f"firing ({notice.severity})"
    lines = [f"Incident on {scope_text(notice.root_scope)} is {status}"
             + (" (acknowledged: " + escape_post_text(notice.acked, limit=120) + ")" if notice.acked else "") + "."]
    lines += since_last_lines(notice, since_last)
    if notice.state == "resolved":
        lines += [*escalation_lines(notice.severity, routes, told_at), peak_line(notice.severity)]
    lines += ack_lines(acks)
    for m in notice.members:
        if m["scope"] == notice.root_scope:
            lines.append(_member_line(m, window=window, recent=recent))
    related = [m for m in notice.members if m["scope"] != notice.root_scope]
    if related:
        if not notice.market:
            lines += ["", "Related scopes (moved with the root):"]
        elif _related(notice, assets=True):
            lines += ["", "Assets and scopes in this market-wide move:"]
        else:
            lines += ["", "Scopes in this market-wide move (no asset's own alert has fired yet):"]
        lines += [_member_line(m, window, bullet=True, recent=recent) for m in related]
        if notice.state == "resolved" and any(m["firing"] for m in related):
            # grouping._split: told over while these clear, each quiet since the root resolved.
            lines.append("Those still firing have not moved on their own since the root resolved; one that does will be a new incident.")
    if track is not None and notice.state != "resolved":
        lines += ["", track_line(track)]
    lines += ["", f"opened {notice.opened}; {_when(notice)} (event time)", *late_lines(notice.at, now), f"incident_id: {notice.incident_id}",
              *actions(notice, verdict)]
    if console_url:
        # Once over, the team can say whether it was real: the alerts' precision is counted from that.
        ask = " (real or a false alarm? record a verdict there)" if notice.state == "resolved" and not given(verdict) else ""
        lines.append(f"console: {incident_link(console_url, notice.incident_id)}{ask}")
    shown = notice_sample_lines(records, notice.root_scope, samples_shown, post_chars)
    if shown:
        lines += ["", "Sample posts:", *shown]
    return "\n".join(lines)


# What each kind's samples are (engine._with_samples picks them): a volume spike's are the most
# strongly scored posts of either label, so in a drop's incident they can be positive.
SAMPLES_OF = {"sentiment_drop": "its most negative posts", "sentiment_surge": "its most positive posts",
              "volume_spike": "its most strongly scored posts, either way"}


def notice_sample_lines(records: Sequence[AlertRecord], root: str, n: int, post_chars: int = POST_CHARS) -> list[str]:
    """Up to `n` sample posts of an incident's records, each text once, under a line naming the
    member they illustrate. The notice gathered every record's samples in one list: a drop with
    two distinct negative texts showed its volume spike's positive post third, under a headline
    of a negative share, as if it were the drop's. The root's members come first and, on each
    scope, the sentiment kinds before the volume spike, so a drop's negative posts (a surge's
    positive ones) lead and a volume spike's only fill the places left."""
    members: dict[tuple[str, str], list[Sample]] = {}
    for record in records:
        members.setdefault((record.scope, record.kind), []).extend(record.samples)
    order = sorted(members, key=lambda member: (member[0] != root, member[1] == "volume_spike"))
    seen: set[str] = set()
    out: list[str] = []
    left = max(n, 0)
    for scope, kind in order:
        fresh = distinct_samples((s for s in members[(scope, kind)] if sample_key(s) not in seen), left)
        if not fresh:
            continue
        seen.update(sample_key(s) for s in fresh)
        left -= len(fresh)
        what = SAMPLES_OF.get(kind, "its posts")
        out += [f"{kind} on {scope_text(scope)} ({what}):", *(_sample_line(s, post_chars) for s in fresh)]
    return out


SINCE_LAST_NAMED = 3  # members one part of the since-last line names; the rest are counted


def since_last_lines(notice: Notice, since: Mapping[str, Any] | None) -> list[str]:
    """An update's or a reminder's line saying what changed since the incident's previous notice
    (`grouping.since_last`): "New since the last notice (2026-03-04T12:07:00Z): sentiment_drop on
    asset:ETH joined; severity warning -> critical (sentiment_drop on asset:ETH)." or, where nothing
    did, "Unchanged since the last notice (...): the same scopes firing, at the same severity." An
    update said the incident's state alone, and the team compared two messages to find the news.
    None for a first notice or a resolution, and where the previous notice is unknown (an incident
    a worker before session 54 told last) or `since` is not the shape that version writes."""
    if notice.reason not in ("update", "repeat") or not isinstance(since, Mapping) or not isinstance(since.get("at"), str):
        return []
    try:
        parts = _since_parts(since)
    except (TypeError, KeyError, AttributeError):  # not what this version writes: say nothing rather than fail the notice
        return []
    at = escape_post_text(since["at"], limit=40)
    if not parts:
        return [f"Unchanged since the last notice ({at}): the same scopes firing, at the same severity."]
    return [f"New since the last notice ({at}): {'; '.join(parts)}."]


def _since_parts(since: Mapping[str, Any]) -> list[str]:
    def names(members: Sequence[Mapping[str, Any]], moved: bool = False) -> str:
        said = [f"{escape_post_text(str(m['kind']), limit=40)} on {scope_text(str(m['scope']))}"
                + (f" {escape_post_text(str(m['from']), limit=20)} -> {escape_post_text(str(m['to']), limit=20)}" if moved else "")
                for m in members[:SINCE_LAST_NAMED]]
        more = len(members) - len(said)
        return ", ".join(said) + (f" and {more} more" if more > 0 else "")

    parts = []
    root, severity, escalated = since.get("root") or {}, since.get("severity") or {}, list(since.get("escalated") or [])
    if root.get("from") and root.get("to") and root["from"] != root["to"]:
        parts.append(f"root now {scope_text(str(root['to']))} (was {scope_text(str(root['from']))})")
    for key, verb in (("joined", "joined"), ("fired", "firing again"), ("resolved", "resolved")):
        if since.get(key):
            parts.append(f"{names(list(since[key]))} {verb}")
    if severity.get("from") and severity.get("to") and severity["from"] != severity["to"]:
        parts.append(f"severity {severity['from']} -> {severity['to']}" + (f" ({names(escalated)})" if escalated else ""))
    else:
        parts += [f"{names([m])} {m['from']} -> {m['to']}" for m in escalated]
    # Since session 55: members whose severity fell while they fire (absent from an entry a worker
    # before it wrote). A critical member turned warning under an incident still critical through
    # another was said nowhere: the team still counted it among the critical ones.
    eased = list(since.get("eased") or [])
    if eased:
        parts.append(f"eased: {names(eased, moved=True)}")
    return parts


LATE_S = 15 * 60  # live, a notice goes out a minute or two after its event time (the grace, a judging round)


def late_lines(event_at: str, now: float | None) -> list[str]:
    """A line when a notification goes out well after the event time it speaks for: a replay with
    Apprise URLs set, a backlog the workers are catching up on, or a stream gone quiet (settled as of
    its last post). Its times are event time, and a
    notice of a move hours (or months) old read like one happening now; the mail's Date or the chat's
    timestamp is when it was sent, not when the posts were written. None when `now` is not given."""
    if now is None or not event_at:
        return []
    try:
        behind = now - epoch(event_at)
    except ValueError:
        return []
    if behind <= LATE_S:
        return []
    return [f"sent {iso(int(now))} (wall clock), {_span(behind)} after {event_at} (event time): the posts it speaks of are that old (a replay, a backlog, or a stream gone quiet)"]


def _span(seconds: float) -> str:
    """'40 minutes', '5.2 hours', '277 days': how far a notice is behind, in the unit a reader takes in."""
    if seconds < 2 * 3600:
        return f"{seconds // 60:.0f} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds // 86400:.0f} days"


def _when(notice: Notice) -> str:
    """The time a notice speaks for. A resolution is sent when the incident is told over: when its
    last member resolved, or, with a tail still clearing, at the tail check a group interval or more
    after the root resolved. It said 'as of' that time, which read as when the move ended; it now
    says when the root resolved and when the incident was declared over, where they differ."""
    if notice.state != "resolved":
        return f"as of {notice.at}"
    root = [m.get("root_resolved") for m in notice.members if m["scope"] == notice.root_scope]
    ended = max(r for r in root if r) if root and all(root) else None  # none in a notice before 2026-12
    return over_words(ended, notice.at)


def over_words(root_resolved: str | None, over: str) -> str:
    """When a resolved incident ended, as its notice and its console page say it: when the root
    resolved and when the incident was declared over (a tail still clearing puts a group interval
    or more between them), one time where they are the same, and the declaration alone where the
    root's time is not known (a notice or summary from before it was kept)."""
    if root_resolved == over:
        return f"resolved {over}"
    return f"root resolved {root_resolved}; declared over {over}" if root_resolved else f"declared over {over}"


def actions(notice: Notice, verdict: Mapping[str, Any] | None = None) -> list[str]:
    """What the reader can do from a shell, with this incident's id: the console link is optional
    (SENTINEL_CONSOLE_URL) and without it a notice named the id but no way to act on it. Firing:
    acknowledge (stops the reminders) unless done, and silence the root (holds back its notices;
    not offered for `all`, where a silence would hold back every incident's, nor for a scope the
    escaping changed, which the command would not match, nor for one that reads as a glob). Resolved:
    record the verdict, or, where one was given while it was open, say it (a resolution asked a
    team that had already judged it) and how to change it. A verdict given while it fires is said
    in its later firing notices too, above the ack and silence they still offer (a false alarm may
    still be silenced)."""
    ident = shlex.quote(notice.incident_id)
    judged: list[str] = []
    if given(verdict):
        other = next(v for v in VERDICTS if v != verdict["verdict"])
        judged = [f"{verdict_text(verdict)}; to change it: sentinel verdict {ident} {other}"]
    if notice.state == "resolved":
        return judged or [f"verdict: sentinel verdict {ident} real, or: sentinel verdict {ident} false-alarm"]
    out = judged + ([] if notice.acked else [f"acknowledge (no more reminders): sentinel ack {ident}"])
    silence = root_silence(notice.root_scope)
    if silence:
        out.append(f"silence its notices: {silence}")
    return out


def root_silence(root: str, *, defanged: bool = True) -> str | None:
    """`sentinel silence ROOT --for 2h`, ROOT shell-quoted, for an incident's root scope; None for
    `all` (a silence of it would hold back every incident's notices) and for a scope `sentinel
    silence` would not match itself (see _silenceable). The notices' actions and the read-only
    console's hint both offer it. `defanged`: where scopes are shown defanged (a notice); the
    console (`defanged=False`) shows a scope exactly and links nothing in it, so it still offers
    the command, and fills in its silence form, for a root named like a domain
    (`source:bitcointalk.org`), which a notice leaves out."""
    pattern = silence_pattern(root, defanged=defanged)
    return f"sentinel silence {shlex.quote(pattern)} --for 2h" if root != "all" and pattern else None


def given(verdict: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    """Whether a stored verdict names one of VERDICTS (anything else is read as none given)."""
    return verdict is not None and verdict.get("verdict") in VERDICTS


def verdict_text(verdict: Mapping[str, Any]) -> str:
    """'verdict given: real, 2026-03-04T14:00:00Z (wall clock), by alice via console ("desk confirmed")': who
    said it, when (wall clock, as stored) and why, each part only where stored. `by` and the reason
    are an operator's words: made inert as a post's are."""
    by = escape_post_text(str(verdict.get("by") or ""), limit=100)
    via = escape_post_text(str(verdict.get("via") or ""), limit=20)
    reason = escape_post_text(str(verdict.get("reason") or ""), limit=POST_CHARS)
    # Stored by the wall clock; a notice's other times are event time, and a replay's verdict, or a
    # live one given an hour after the posts, read as a time in the move. Labelled, as acks are.
    at = escape_post_text(str(verdict.get("at") or ""), limit=40)
    parts = [str(verdict["verdict"]), f"{at} (wall clock)" if at else "",
             " ".join(p for p in (f"by {by}" if by else "", f"via {via}" if via else "") if p)]
    return "verdict given: " + ", ".join(p for p in parts if p) + (f' ("{reason}")' if reason else "")


def record_actions(record: AlertRecord) -> list[str]:
    """What the reader of an ungrouped alert (SENTINEL_ALERT_GROUPING=none) can do from a shell:
    while it fires, silence its scope and kind (which also stops its reminders). Not `sentinel ack`
    nor `verdict`: they act on the incident history, which only grouping writes, and would answer
    "no open incident" (saying why, where grouping is off). Nothing once resolved. `all` is
    offered: with --kind, the silence holds back `all`'s alerts of that kind alone, as it matches
    no other scope."""
    pattern = silence_pattern(record.scope)
    if record.state == "resolved" or not pattern:
        return []
    return [f"silence its notices: sentinel silence {shlex.quote(pattern)} --kind {shlex.quote(record.kind)} --for 2h"]


# The dots a scope's name may hold that defanging brackets: each as a glob's one-character class.
_BRACKETED_DOTS = str.maketrans({dot: f"[{dot}]" for dot in ".\u3002\uff0e\uff61"})


def silence_pattern(scope: str, *, defanged: bool = True) -> str | None:
    """What a notice gives `sentinel silence` to hold back `scope` alone: the scope itself where it
    is shown as it is (`_silenceable`), else (`defanged`: a notice) where the defanging changed only
    its dots (`channel:価格。速報` shown `channel:価格[.]速報`, `source:bitcointalk.org`), the scope with
    each dot in brackets (`channel:価格[。]速報`): a glob that matches that one scope (each bracket
    one character), and reads as no link. A notice before session 57 offered none for such a root,
    where the console offers its name. None where neither holds, and where the brackets (two
    characters more a dot) take the name past what `sentinel silence` takes (`name_problem`:
    `MAX_NAME_CHARS`), which would refuse the command offered."""
    if _silenceable(scope, defanged=defanged):
        return scope
    if not defanged or any(c in scope for c in "*?["):
        return None
    pattern = scope.translate(_BRACKETED_DOTS)
    prefix, _, name = pattern.partition(":")
    if name_problem(name, joiners=prefix != "asset") is not None:
        return None
    return pattern if pattern != scope and escape_post_text(pattern, limit=0, links=False) == pattern else None


def _silenceable(scope: str, *, defanged: bool = True) -> bool:
    """Whether `sentinel silence SCOPE` would match this scope itself: not for one the escaping
    changed (the command would be for another name; `defanged`: the defanging of a notice's scopes
    too, where a domain in the command would be a live link), nor one that reads as a glob
    (`sentinel silence` takes patterns: `channel:*` would silence every channel)."""
    shown = scope_text(scope) if defanged else escape_post_text(scope, limit=120)
    return shown == scope and not any(c in scope for c in "*?[")


def track_line(track: TrackRecord) -> str:
    """E.g. "Earlier sentiment_drop incidents, as judged (30 days): on asset:BTC 3 real, 1 false
    alarm; anywhere 12 real, 4 false alarms" (the root's part left out when it has none)."""
    def counts(pair: tuple[int, int]) -> str:
        return f"{pair[0]} real, {pair[1]} false alarm{'' if pair[1] == 1 else 's'}"

    here = f"on {scope_text(track.scope)} {counts(track.here)}; " if any(track.here) else ""
    return f"Earlier {' or '.join(track.kinds)} incidents, as judged (30 days): {here}anywhere {counts(track.anywhere)}"


def _member_line(m: dict, window: str, bullet: bool = False, recent: Mapping[str, Sequence[float]] | None = None) -> str:
    # A member keeps the level of its last firing judgement: once resolved, that is what it had
    # reached, not where it is now.
    level = measure(m, window=window) + judged_text(m, weight=True)
    if m["firing"]:
        text = f"{m['kind']} on {scope_text(m['scope'])} ({m['severity']}, firing)" + (f": {level}" if level else "")
        if recent is not None and m["scope"] in recent:
            text += f"{'; ' if level else ': '}{recent_level(m, recent[m['scope']], window)}"
    else:
        text = f"{m['kind']} on {scope_text(m['scope'])} ({m['severity']}, resolved" + (f"; when last firing: {level})" if level else ")")
    return f"- {text}" if bullet else text


def judged_text(member: Mapping[str, Any], weight: bool = False) -> str:
    """' (11 posts by 2026-03-04T12:02:00Z)': how many posts a notice member's level rests on, and
    up to when. A member's level is its last judgement's: an update an hour in said '330 posts per
    1h since 12:00' of a level judged at 12:02 on 11 posts, which over the hour was 138. Empty for
    a member without them (notices before 2026-12) or without a level. The console says it too,
    from the incident's summary (summaries written since session 47). `weight`: a notice's, with the
    member's z and baseline posts inside the parentheses where kept (`weight_text`)."""
    at, posts = member.get("judged"), member.get("posts")
    if not at or not measure(member):
        return ""
    count = f"{posts} post{'' if posts == 1 else 's'} " if isinstance(posts, int) else ""
    return f" ({count}by {at}{weight_text(member) if weight else ''})"


def weight_text(member: Mapping[str, Any]) -> str:
    """'; z +6.8, 1200 in the baseline': how far a notice member's level stood from its baseline and
    how many posts that baseline held, as a single alert's notice says them ("z +6.8 over 57 posts
    (1200 in the baseline)"). An incident's notice said neither, and a move of 8 sigma over a thick
    baseline read as one of 3 over a thin one. Empty where not kept (notices before session 57)."""
    z, baseline = member.get("zscore"), member.get("baseline_posts")
    if not isinstance(z, (int, float)) or isinstance(z, bool) or not isinstance(baseline, int) or isinstance(baseline, bool):
        return ""
    return f"; z {z:+.1f}, {baseline} in the baseline"


def measure(record: Mapping[str, Any], since: bool = True, window: str = "window") -> str:
    """What moved, in words, from an alert record or an incident's member, as the notices and the
    console both say it: 'negative share 75.0% since 2026-03-04T12:00:00Z against 19.9%',
    '149 posts per 1h ... against 31' (a rate over `window` when the record names none), 'mean
    score -0.31 against +0.05'. Empty when it says nothing: no metric (incident summaries written
    before 2026-12 hold none), or a resolved record with no posts behind it (the sequential
    detector's chart has started again: its level is the baseline's own)."""
    metric, value, baseline = record.get("metric") or "", record.get("value"), record.get("baseline")
    if not metric or value is None or baseline is None:
        return ""
    if record.get("state") == "resolved" and not record.get("posts"):
        return ""
    onset = f" since {record['onset']}" if since and record.get("onset") else ""
    if metric.endswith("_share"):
        return f"{metric.replace('_', ' ')} {100 * value:.1f}%{onset} against {100 * baseline:.1f}%"
    if metric == "posts":
        return f"{value:.0f} posts per {record.get('window') or window}{onset} against {baseline:.0f}"
    return f"{metric.replace('_', ' ')} {value:+.2f}{onset} against {baseline:+.2f}"


def recent_level(member: Mapping[str, Any], counts: Sequence[float], window: str) -> str:
    """Where a firing member's scope is now: its posts over the last alert window before the notice
    (`counts`: one window slice's n, positive, negative, neutral, score sum, score square), in the
    words of its metric: 'last 1h: negative share 22.0% of 41 posts', 'last 1h: 35 posts', 'last
    1h: no posts'. A reminder's level since the onset averages hours or days: a scope that went
    quiet, or back to its usual share, still read as high as at its peak."""
    n = int(counts[SliceCol.N]) if len(counts) > SliceCol.N else 0
    if n <= 0:
        return f"last {window}: no posts"
    metric = member.get("metric") or ""
    if metric in ("negative_share", "positive_share"):
        column = SliceCol.NEGATIVE if metric == "negative_share" else SliceCol.POSITIVE
        return f"last {window}: {metric.replace('_', ' ')} {100 * counts[column] / n:.1f}% of {n} post{'' if n == 1 else 's'}"
    if metric == "mean_score":
        return f"last {window}: mean score {counts[SliceCol.SCORE_SUM] / n:+.2f} over {n} post{'' if n == 1 else 's'}"
    return f"last {window}: {n} post{'' if n == 1 else 's'}"


def _related(notice: Notice, assets: bool = False) -> list[str]:
    scopes = sorted({m["scope"] for m in notice.members if m["scope"] != notice.root_scope})
    return [s for s in scopes if s.startswith("asset:")] if assets else scopes


def _sample_lines(items: Sequence[Sample], n: int, post_chars: int) -> list[str]:
    return [_sample_line(sample, post_chars) for sample in distinct_samples(items, max(n, 0))]


def _sample_line(sample: Sample, post_chars: int) -> str:
    label = escape_post_text(sample.label, limit=20)
    # A post's id is the poster's too: `https://evil.example/claim` was a live link in every sample line.
    ident = escape_post_text(sample.id, limit=64, links=False)
    # A post of only line breaks, controls or invisible characters escapes to nothing: said so,
    # not an empty line under "Sample posts:".
    text = escape_post_text(sample.text, limit=post_chars, links=False) or "(no visible text)"
    return f"- [{label} {sample.score:+.2f}] {text} (id {ident})"


