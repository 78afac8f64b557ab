"""Who may do what in the console (pure).

Two roles: `viewer` reads, `operator` also acknowledges and silences. A request proves its role with
a token from settings, as `Authorization: Bearer <token>` (API clients) or as the password of HTTP
Basic auth (browsers; the user name is only recorded). Without `SENTINEL_CONSOLE_READ_TOKEN` anyone
may read; without `SENTINEL_CONSOLE_OPERATOR_TOKEN` nobody may write. There are never anonymous writes.

Browsers resend Basic credentials on their own, so a form post from another site would carry them:
every write by Basic auth must also carry the CSRF token, an HMAC of the operator token that only a
page served to an operator contains, and must not come from another origin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

Role = Literal["anonymous", "viewer", "operator"]
RANK = {"anonymous": 0, "viewer": 1, "operator": 2}


@dataclass(frozen=True)
class Tokens:
    read: str | None
    operator: str | None

    @property
    def anonymous_reads(self) -> bool:
        return not self.read


@dataclass(frozen=True)
class Caller:
    role: Role
    user: str
    by_bearer: bool  # a header a browser never adds by itself: no CSRF check needed

    def may_read(self, tokens: Tokens) -> bool:
        return tokens.anonymous_reads or RANK[self.role] >= RANK["viewer"]

    @property
    def may_write(self) -> bool:
        return self.role == "operator"


def _same(a: str, b: str | None) -> bool:
    return bool(b) and hmac.compare_digest(a.encode(), b.encode())  # type: ignore[union-attr]


def _role_of(secret: str, tokens: Tokens) -> Role:
    if _same(secret, tokens.operator):
        return "operator"
    if _same(secret, tokens.read):
        return "viewer"
    return "anonymous"


def caller(authorization: str | None, tokens: Tokens) -> Caller:
    """The caller an Authorization header proves; a wrong or malformed one proves nothing."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer":
        role = _role_of(value.strip(), tokens)
        return Caller(role, role, role != "anonymous")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return Caller("anonymous", "", False)
        role = _role_of(password, tokens)
        return Caller(role, user if role != "anonymous" else "", False)
    return Caller("anonymous", "", False)


def csrf_token(tokens: Tokens) -> str:
    """Derived from the operator token: stable across console replicas, unknowable without it."""
    if not tokens.operator:
        return ""
    return hmac.new(tokens.operator.encode(), b"sentinel-console-csrf", hashlib.sha256).hexdigest()[:32]


def flash_owner(who: Caller) -> str:
    """Whom a flash message is for: the caller who wrote it, by role and Basic user name. Only an
    operator writes one (there are no anonymous writes), so a browser reading as a viewer, as nobody
    (an open console) or as another user is never its owner. The browser has no identity of its own
    here (no session cookie, the credentials are all it sends): two browsers signed in with the same
    name and the operator token are one owner, as they are one `by` in the audit log."""
    return f"{who.role}\0{who.user}"


def flash_seal(tokens: Tokens, content: str, *, owner: str) -> str:
    """The console's seal on a flash cookie's content for its owner (flash_owner), keyed as the CSRF
    token is. The cookie is the browser's to keep, and anyone who can set a cookie for the console's
    host (a sibling subdomain, a plain-http hop) could write one: its text shown on a page, the form it
    names filled in for an operator to submit unknowingly (a silence over `all`, a verdict chosen).
    The owner is under the seal, not in the cookie: a leaked cookie read by anyone else fails the seal
    (until session 52 anyone presenting it within its keep saw the message and what was typed). The
    context differs from the owner-less seal of consoles before session 52, so neither reads the other's."""
    if not tokens.operator:
        return ""  # nobody may write: the console sets no flash
    whose = hashlib.sha256(owner.encode("utf-8", "surrogatepass")).digest()  # fixed length: no owner runs into the content
    return hmac.new(tokens.operator.encode(), b"sentinel-console-flash-for\0" + whose + content.encode(), hashlib.sha256).hexdigest()[:32]


def flash_sealed(tokens: Tokens, content: str, seal: str, *, owner: str) -> bool:
    expected = flash_seal(tokens, content, owner=owner)
    # The cookie is anyone's to write: a seal that is not ASCII (a lone surrogate has no UTF-8 and
    # raised, every page a 500) is no seal of the console's.
    return bool(expected) and seal.isascii() and hmac.compare_digest(expected, seal)


def write_refusal(who: Caller, tokens: Tokens, *, csrf: str | None, origin: str | None, host: str | None) -> str | None:
    """Why a write must be refused, or None to allow it."""
    if not tokens.operator:
        return "writes are disabled: SENTINEL_CONSOLE_OPERATOR_TOKEN is not set"
    if not who.may_write:
        return "operator credentials required"
    if who.by_bearer:
        return None
    if origin and host and origin.split("://", 1)[-1] != host:
        return "cross-origin write refused"
    if not csrf or not hmac.compare_digest(csrf.encode(), csrf_token(tokens).encode()):
        return "missing or wrong CSRF token"
    return None
