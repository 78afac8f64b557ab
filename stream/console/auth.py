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
import string
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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


# The flash cookie's format: this prefix, then URL-safe base64 (no padding, no character a cookie
# must quote) of a random nonce and the AES-GCM ciphertext with its tag. A console before session 53
# wrote percent-escaped JSON with an HMAC seal, which never starts so: ignored by a newer one, as this
# one is by it (its JSON reader refuses the text).
FLASH_PREFIX = "f1."
FLASH_NONCE_BYTES = 12  # AES-GCM's standard nonce, random per cookie: 2**32 cookies under one key are far off
FLASH_OVERHEAD_BYTES = FLASH_NONCE_BYTES + 16  # the nonce and the tag, besides the content
_BASE64URL = frozenset(string.ascii_letters + string.digits + "-_")


def flash_key(operator: str) -> bytes:
    """The flash cookie's key: HKDF of the operator token (the secret the CSRF token is an HMAC of),
    with a purpose of its own, so no other value the console derives from the token is this key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"sentinel-console-flash-aes-gcm-v1").derive(operator.encode())


def _flash_context(owner: str) -> bytes:
    # The owner is authenticated with the content, not stored in the cookie: a cookie read by anyone
    # else fails to decrypt. A digest: one length whoever the owner is.
    return b"sentinel-console-flash-for\0" + hashlib.sha256(owner.encode("utf-8", "surrogatepass")).digest()


def flash_seal(tokens: Tokens, content: bytes, *, owner: str, nonce: bytes) -> str:
    """The flash cookie's value: `content` encrypted and authenticated (AES-256-GCM) for its owner
    (flash_owner) under flash_key. The cookie is the browser's to keep and anyone's to read on its
    way (a shared machine, a proxy's log): until session 53 it was only signed, and a refused form's
    fields (a silence's reason, its scope) could be read from it. Anyone who can set a cookie for the
    console's host could also write one: its text shown, its form filled in for an operator to submit
    unknowingly; without the key none opens. `nonce` (FLASH_NONCE_BYTES, random) is the caller's."""
    if not tokens.operator:
        return ""  # nobody may write: the console sets no flash
    sealed = AESGCM(flash_key(tokens.operator)).encrypt(nonce, content, _flash_context(owner))
    return FLASH_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def flash_open(tokens: Tokens, value: str, *, owner: str) -> bytes | None:
    """The content of a flash cookie the console sealed for `owner`, or None for any other: another
    owner's, altered, of an older console's format, or no cookie of ours at all (never an error)."""
    if not tokens.operator or not value.startswith(FLASH_PREFIX) or not value.isascii():
        return None
    body = value[len(FLASH_PREFIX):]
    if not set(body) <= _BASE64URL:
        return None  # the decoder would skip a stray character: none is ours
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < FLASH_OVERHEAD_BYTES:
        return None
    try:
        return AESGCM(flash_key(tokens.operator)).decrypt(raw[:FLASH_NONCE_BYTES], raw[FLASH_NONCE_BYTES:], _flash_context(owner))
    except InvalidTag:
        return None


def write_refusal(who: Caller, tokens: Tokens, *, csrf: object, origin: str | None, host: str | None) -> str | None:
    """Why a write must be refused, or None to allow it. `csrf` is whatever the request carried: a
    JSON body's may be a number or text with no UTF-8 (a 500 until session 53), a wrong token all the same."""
    if not tokens.operator:
        return "writes are disabled: SENTINEL_CONSOLE_OPERATOR_TOKEN is not set"
    if not who.may_write:
        return "operator credentials required"
    if who.by_bearer:
        return None
    if origin and host and origin.split("://", 1)[-1] != host:
        return "cross-origin write refused"
    if not (isinstance(csrf, str) and csrf.isascii() and hmac.compare_digest(csrf.encode(), csrf_token(tokens).encode())):
        return "missing or wrong CSRF token"
    return None
