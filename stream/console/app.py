"""The risk console: a Starlette app of server-rendered pages (Jinja2, autoescaped) and a small JSON
API over `ConsoleData`. Charts are drawn in the browser by uPlot, shipped in `static/` (no CDN:
the console must work with no internet). Auth and CSRF rules: auth.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote, urlencode, urlsplit

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from stream.alerts import audit
from stream.alerts.audit import ACTIONS
from stream.alerts.incidents import not_acknowledged, related_scopes, root_kinds
from stream.alerts.message import judged_text, measure, over_words, root_silence
from stream.alerts.silences import silence_request, unmatched
from stream.alerts.precision import FEW_JUDGED, VERDICTS
from stream.console import auth, views
from stream.console.data import ConsoleData
from stream.timefmt import format_duration, parse_duration, shown

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
KINDS = ("sentiment_drop", "sentiment_surge", "volume_spike")
PAGE_ROWS = 500  # overview rows per browser page: every scope at the 500 the console is benchmarked for; the API gives all unless asked
MAX_QUERY_CHARS = 200
AUDIT_ROWS, MAX_AUDIT_ROWS = 200, 5000  # audit log entries per page: the default, the most a request may ask
# Scripts and styles only from the console itself; nothing may frame it or receive its forms.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
Handler = Callable[[Request], Awaitable[Response]]
# A browser form's outcome worth saying (a refused request's reason, a silence that matches no scope
# yet), carried across the redirect back to its page in a short-lived cookie and shown there once.
FLASH_COOKIE, FLASH_MAX_AGE_S, FLASH_CHARS = "sentinel_flash", 60, 600
# The cookie holds a message per form copy still waiting for its page (a Redis-away silence's fields
# while an ack is refused): as many as one page's forms (silence, ack, verdict) and a note. Since
# session 52 a copy is a form on one page (`_instance`), so silences refused on several pages can
# want more: the oldest are dropped (`_set_flashes`).
MAX_FLASH_ENTRIES = 4
FLASH_SKEW_S = 60  # a replica's clock a little off the one that wrote the cookie, either way: not a cookie from the future nor a stale one
KEPT_FIELDS, MAX_KEPT_CHARS = ("scope", "kind", "duration", "reason", "verdict"), 500  # a refused form's fields shown again
UNCUT = ("action", "form")  # which form instance a message's fields are for: never cut to fit, as typed fields are
MAX_FLASH_BYTES = 3800  # the cookie's value, under the 4096 bytes a browser keeps of a cookie
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")  # what a browser's form posts


def _when(ts: float | None) -> str:
    return shown(ts) if ts is not None else "-"


def _ended(incident: dict[str, Any]) -> str:
    """A resolved incident's end as its resolution says it: when the root resolved and when it was
    declared over (the page said "last change" at the declaration alone)."""
    root = incident.get("root_resolved")
    return over_words(shown(root) if isinstance(root, (int, float)) else None, _when(incident.get("at")))


def build_app(data: ConsoleData, tokens: auth.Tokens, console_url: str = "") -> Starlette:
    """The console's app. `console_url`: SENTINEL_CONSOLE_URL, the address the risk team reaches it
    at; a request to its host is taken as HTTPS where that address is (`_over_https`)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = _when
    templates.env.filters["behind"] = lambda end: views.behind(end, time.time())  # the data's age against the wall clock
    templates.env.filters["pct"] = lambda x: f"{100 * x:.1f}%"
    templates.env.filters["urlpart"] = lambda s: quote(s, safe=":|")
    # The command the notices offer, or none; for a root named like a domain too, which a notice
    # leaves out (its scopes are defanged) and the console shows exactly.
    templates.env.filters["root_silence"] = lambda root: root_silence(root, defanged=False)
    templates.env.filters["what"] = audit.what_parts  # the audit page says what `sentinel audit` says
    templates.env.filters["root_kinds"] = root_kinds  # as `sentinel incidents` lists them
    templates.env.filters["related_scopes"] = related_scopes
    templates.env.globals["few_judged"] = FEW_JUDGED  # the precision table's "few", as `sentinel verdicts` says it
    templates.env.filters["ended"] = _ended
    window = format_duration(data.config.window_s)
    # A member's level with the posts and event time it was judged on (summaries since session 47).
    templates.env.filters["measure"] = lambda record, since=True: measure(record, since, window) + judged_text(record)

    https_host = urlsplit(console_url).hostname if console_url.lower().startswith("https://") else None

    def https(request: Request) -> bool:
        return _over_https(request, https_host)

    def who(request: Request) -> auth.Caller:
        return auth.caller(request.headers.get("authorization"), tokens)

    def framed(request: Request, status: int, reason: str, headers: Mapping[str, str] | None = None, incident: bool = False,
               back: Any = "/", title: str | None = None) -> Response:
        """A refusal in the console's frame, saying why with a link back (to `back`, a path on this
        console, else the overview), for a browser; API and other clients get the status and the
        reason as text. The reason is the console's own words, with at most the address's own parts
        (an id, a query field): never a credential, token or form field."""
        if not _browser(request):
            return PlainTextResponse(reason, status_code=status, headers=headers)
        context = {"caller": who(request), "csrf": "", "writes": bool(tokens.operator), "flashes": _Flashes([], ""),
                   "kept_for": lambda action: {}, "here": _local(back), "status": status,  # signing in leads where it was going
                   "title": title or ERROR_TITLES.get(status, "Refused"), "reason": reason, "incident": incident, "back": _local(back),
                   "sign_in": status == 401 and (bool(tokens.operator) or request.method == "GET")}  # not "writes are disabled"
        return templates.TemplateResponse(request, "error.html", context, status_code=status, headers=headers)

    def challenge(request: Request, detail: str, back: Any) -> Response:
        return framed(request, 401, detail, headers={"WWW-Authenticate": 'Basic realm="Forum Sentinel console"'}, back=back)

    def reader(handler: Callable[[Request, auth.Caller], Awaitable[Response]]) -> Handler:
        async def wrapped(request: Request) -> Response:
            caller = who(request)
            if not caller.may_read(tokens):
                return challenge(request, "viewer or operator credentials required", _address(request))  # where it was going
            return await handler(request, caller)
        return wrapped

    def writer(handler: Callable[[Request, auth.Caller, dict[str, Any]], Awaitable[Any]]) -> Handler:
        async def wrapped(request: Request) -> Response:
            caller = who(request)
            form = await _body(request)
            refusal = auth.write_refusal(caller, tokens, csrf=form.get("csrf") or request.headers.get("x-csrf-token"),
                                         origin=request.headers.get("origin"), host=request.headers.get("host"))
            if refusal:
                log.warning("console write refused", extra={"path": request.url.path, "reason": refusal, "user": caller.user})
                if not tokens.operator:  # no password answers a challenge here: the read-only 403, as /login's (a 401 asked for one until session 51)
                    return framed(request, 403, READ_ONLY if _browser(request) else refusal, back=form.get("next"), title="Read-only console")
                # Back to the form's page (a viewer signs in there), not the overview.
                return challenge(request, refusal, form.get("next")) if caller.role == "anonymous" else framed(request, 403, refusal, back=form.get("next"))
            # The messages still waiting for their forms' pages, less this form's: a write answers for its own form only.
            owner, this_form = auth.flash_owner(caller), _form_key(_kept(request.url.path, form))
            others = [e for e in _flashes(request, tokens, owner=owner) if _form_key(e["kept"]) != this_form] if _browser(request) else []
            try:
                result = await handler(request, caller, form)
            except RedisError:
                if not (form.get("_form") and _browser(request)):
                    raise  # the framed 503 or the text, as for a page
                log.error("console: redis unavailable", extra={"path": request.url.path})
                # What was typed is kept as for a refused form (the flash is a cookie, no Redis needed): the
                # form's page, once Redis is back, fills it in again; until session 50 it was lost.
                return _flashed(framed(request, 503, REDIS_AWAY, back=form.get("next")), tokens, "error", REDIS_AWAY_FLASH,
                                _kept(request.url.path, form), max_age=REDIS_AWAY_FLASH_S, owner=owner, earlier=others, page=form.get("next"),
                                secure=https(request))
            except HTTPException as exc:
                if not _browser(request):
                    raise  # API clients: the status and the text as ever
                # A browser's form: back to its page, saying why, not a bare text page with no way back.
                # What was typed goes back with it, into the same form: a 90d silence lost its scope and reason.
                return _flashed(RedirectResponse(_local(form.get("next")), status_code=303), tokens, "error", str(exc.detail),
                                _kept(request.url.path, form), owner=owner, earlier=others, page=form.get("next"), secure=https(request))
            log.info("console write", extra={"path": request.url.path, "user": caller.user})
            if form.get("_form"):
                back = RedirectResponse(_local(form.get("next")), status_code=303)
                if isinstance(result, dict) and result.get("warning"):
                    return _flashed(back, tokens, "note", result["warning"], owner=owner, earlier=others, secure=https(request))
                if FLASH_COOKIE in request.cookies:  # this form's earlier "Not done" and fields: it was done. Another form's
                    _set_flashes(back, tokens, others, time.time(), owner=owner, secure=https(request))  # kept fields stay (an ack cleared a Redis-away silence's until session 51)
                return back
            return JSONResponse(result)
        return wrapped

    def page(name: str, request: Request, caller: auth.Caller, **context: Any) -> Response:
        # Shown to a browser's GET: a HEAD (a link checker) sees no page, and a page's live refresh (a
        # fetch, asking for */*) keeps only its #live part; each cleared a refused form's fields unseen
        # (a Redis-away form's, 10 minutes, by any open tab's refresh).
        shown = request.method == "GET" and _browser(request)
        owner = auth.flash_owner(caller)  # a message is read by the one who wrote it: a leaked cookie shows anyone else nothing
        entries = _flashes(request, tokens, owner=owner) if shown else []
        flashes = _Flashes(entries, request.url.path)
        context |= {"caller": caller, "csrf": auth.csrf_token(tokens) if caller.may_write else "", "writes": bool(tokens.operator),
                    "flashes": flashes, "kept_for": flashes.kept_for, "here": _address(request)}
        response = templates.TemplateResponse(request, name, context)  # rendered here: `flashes` knows what it showed
        left = [e for e in entries if e not in flashes.shown]
        # Only an operator owns a flash, and only an operator's page rewrites the cookie: a reader who may
        # not write is often its owner not signed in yet (an open console's first page after a browser
        # restart, a read token typed first), and clearing it there lost a Redis-away form's fields.
        if shown and caller.may_write and FLASH_COOKIE in request.cookies and (left != entries or not entries):
            _set_flashes(response, tokens, left, time.time(), owner=owner, secure=https(request))  # each message until a page shows it; then gone
        return response

    # --- pages ---
    async def overview_page(request: Request, caller: auth.Caller) -> Response:
        return page("overview.html", request, caller, data=await data.overview(*_overview_args(request, PAGE_ROWS)))

    async def scope_page(request: Request, caller: auth.Caller) -> Response:
        given = request.path_params["scope"]
        scope = await data.scope_named(given)
        if scope is not None and scope != given:  # the page's own address and its polls name the scope as its windows do
            return RedirectResponse(f"/scope/{quote(scope, safe=':|')}", status_code=303)
        found = await data.scope_of(scope) if scope is not None else None  # the name resolved once, above
        if found is None:
            raise HTTPException(404, "no such scope")
        return page("scope.html", request, caller, data=found, kinds=KINDS)

    async def incidents_page(request: Request, caller: auth.Caller) -> Response:
        return page("incidents.html", request, caller, data=await data.incidents(), kinds=KINDS)

    async def incident_id(given: str) -> str:
        """The whole id a URL's `ident` names, as `sentinel ack` takes it: whole or a unique start of
        6 characters or more; a 400 saying why for one too short or ambiguous."""
        try:
            return await data.incident_id(given)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    async def incident_page(request: Request, caller: auth.Caller) -> Response:
        given = request.path_params["ident"]
        ident = await incident_id(given)
        if ident != given:  # the page's own address, its forms' way back and its polls name the whole id
            return RedirectResponse(f"/incidents/{quote(ident, safe='')}", status_code=303)
        found = await data.incident(ident)
        if found is None:
            raise HTTPException(404, "no such incident")
        return page("incident.html", request, caller, data=found, kinds=KINDS, verdicts=VERDICTS, end=await data.end())

    async def audit_page(request: Request, caller: auth.Caller) -> Response:
        found = await data.audit(*_audit_args(request))
        # Past the limit: the same filter at the most a request may ask (the form keeps it, below).
        wider = [(k, v) for k, v in request.query_params.multi_items() if k != "limit"] + [("limit", str(MAX_AUDIT_ROWS))]
        return page("audit.html", request, caller, data=found, actions=ACTIONS, wider=f"/audit?{urlencode(wider)}",
                    max_rows=MAX_AUDIT_ROWS, default_rows=AUDIT_ROWS)

    async def login(request: Request) -> Response:
        back = request.query_params.get("next")
        if not tokens.operator:  # nothing to sign in to: a challenge asked for a password that no password answers
            return framed(request, 403, READ_ONLY, back=back, title="Read-only console")
        if not who(request).may_write:
            return challenge(request, "sign in with the operator token as the password", back)
        return RedirectResponse(_local(back), status_code=303)

    # --- API ---
    def api(fetch: Callable[[Request], Awaitable[Any]]) -> Handler:
        async def handler(request: Request, caller: auth.Caller) -> Response:
            found = await fetch(request)
            if found is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(found)
        return reader(handler)

    async def ack(request: Request, caller: auth.Caller, form: dict[str, Any]) -> Any:
        reason = _reason(form, caller)
        ident = await incident_id(request.path_params["ident"])
        # The log keeps who apart: its entry's reason is what was typed.
        if not await data.acknowledge(ident, reason, by=_named(caller) or "operator token", note=_typed(form)):
            summary = await data.summary(ident)
            # Unknown: 404 as before. Over: 409, saying so (it read as a wrong id) and what is left to do.
            raise HTTPException(404, "no open incident with that id") if summary is None else HTTPException(409, not_acknowledged(ident, summary, command=False))
        return {"acknowledged": ident, "reason": reason}

    async def verdict(request: Request, caller: auth.Caller, form: dict[str, Any]) -> Any:
        value = str(form.get("verdict") or "")
        if value not in VERDICTS:
            raise HTTPException(400, f"verdict: one of {', '.join(VERDICTS)}")
        ident = await incident_id(request.path_params["ident"])
        if not await data.verdict(ident, value, _typed(form), by=_named(caller) or "operator token"):
            raise HTTPException(404, "no incident with that id in the history")
        return {"incident": ident, "verdict": value}

    async def silence(request: Request, caller: auth.Caller, form: dict[str, Any]) -> Any:
        scope = str(form.get("scope") or "")
        kind = str(form.get("kind") or "").strip() or None
        if kind is not None and kind not in KINDS:
            raise HTTPException(400, f"kind: one of {', '.join(KINDS)} or empty for all")
        try:
            duration = parse_duration(str(form.get("duration") or ""))
        except ValueError as exc:
            raise HTTPException(400, f"duration: {exc}") from None
        try:
            scope = silence_request(scope, duration)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        reason = _typed(form)
        # Set ahead of an expected event it is kept, but a pattern nothing matches may be a typo: said.
        warning = unmatched(scope, await data.store.scopes())
        return await data.silence(scope, duration, kind, reason, by=_named(caller) or "operator token") | {"warning": warning}

    async def unsilence(request: Request, caller: auth.Caller, form: dict[str, Any]) -> Any:
        try:
            lifted = await data.unsilence(request.path_params["sid"], by=_named(caller) or "operator token")
        except ValueError as exc:  # it has ended: nothing to lift, nothing logged
            raise HTTPException(409, str(exc)) from None
        if not lifted:
            raise HTTPException(404, "no such silence")
        return {"lifted": request.path_params["sid"]}

    async def incident_of(given: str) -> dict[str, Any] | None:
        return await data.incident(await incident_id(given))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        try:
            await data.redis.ping()
        except (RedisError, OSError) as exc:
            return PlainTextResponse(f"redis: {type(exc).__name__}", status_code=503)
        return PlainTextResponse("ready")

    routes = [
        Route("/", reader(overview_page)),
        Route("/scope/{scope:path}", reader(scope_page)),
        Route("/incidents", reader(incidents_page)),
        Route("/incidents/{ident}", reader(incident_page)),
        Route("/audit", reader(audit_page)),
        Route("/login", login),
        Route("/api/overview", api(lambda r: data.overview(*_overview_args(r, None)))),
        Route("/api/scopes/{scope:path}", api(lambda r: data.scope(r.path_params["scope"]))),
        Route("/api/incidents", api(lambda r: data.incidents())),
        Route("/api/incidents/{ident}", api(lambda r: incident_of(r.path_params["ident"]))),
        Route("/api/version", api(lambda r: data.version())),
        Route("/api/audit", api(lambda r: data.audit(*_audit_args(r)))),
        Route("/api/incidents/{ident}/ack", writer(ack), methods=["POST"]),
        Route("/api/incidents/{ident}/verdict", writer(verdict), methods=["POST"]),
        Route("/api/silences", writer(silence), methods=["POST"]),
        Route("/api/silences/{sid}/delete", writer(unsilence), methods=["POST"]),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        """A page's refusal (a mistyped address, a bad query field, an incident purged since its
        notice linked it): framed for a browser; API and other clients get Starlette's answer as
        before, the status and the reason as text."""
        assert isinstance(exc, HTTPException)
        reason = _reason_words(exc) if _browser(request) else str(exc.detail)  # Starlette's own text, as ever
        return framed(request, exc.status_code, reason, headers=exc.headers,
                      incident=exc.status_code == 404 and request.url.path.startswith("/incidents/"))

    async def redis_down(request: Request, exc: Exception) -> Response:
        log.error("console: redis unavailable", extra={"path": request.url.path, "error": type(exc).__name__})
        # A page: a link to try it again; anything else (a write the form handler did not answer) the overview.
        return framed(request, 503, REDIS_AWAY, back=_address(request) if request.method in ("GET", "HEAD") else "/")

    return Starlette(routes=routes, exception_handlers={RedisError: redis_down, HTTPException: refused},
                     middleware=[Middleware(BaseHTTPMiddleware, dispatch=_security_headers)])


REDIS_AWAY = "Redis is unavailable; retry shortly"
REDIS_AWAY_FLASH, REDIS_AWAY_FLASH_S = "Redis was unavailable; what was typed is below, send it again", 600  # a restart can outlast 60 s
READ_ONLY = ("this console is read-only: there is nothing to sign in to. An operator enables acknowledging, silencing and "
             "verdicts by setting SENTINEL_CONSOLE_OPERATOR_TOKEN where the console runs, then signs in with it as the password; "
             "until then: sentinel ack, sentinel silence, sentinel verdict")


# Headings of the error page; the reason below it says what was wrong.
ERROR_TITLES = {400: "Bad request", 401: "Sign in", 403: "Refused", 404: "Not found", 405: "Not allowed here", 409: "Not done",
                503: "Unavailable"}


def _reason_words(exc: HTTPException) -> str:
    """The refusal's reason, or for an address no page answers (Starlette's bare 'Not Found') what that means."""
    if exc.status_code == 404 and exc.detail == "Not Found":
        return "no page of the console has this address"
    return str(exc.detail)


async def _security_headers(request: Request, call_next: Handler) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _body(request: Request) -> dict[str, Any]:
    """A write's fields, from a browser form (then answered with a redirect) or a JSON body."""
    kind = request.headers.get("content-type", "")
    if kind.startswith(FORM_TYPES):
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)} | {"_form": True}
    if kind.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "body: invalid JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "body: a JSON object")
        return {k: v for k, v in body.items() if k != "_form"}
    return {}


def _overview_args(request: Request, default_limit: int | None) -> tuple[str, int, int | None]:
    """`q` (a part of a scope's name, or a glob such as `asset:*`), `offset` and `limit`."""
    params = request.query_params
    try:
        offset = int(params.get("offset", "0"))
        limit = int(params["limit"]) if params.get("limit") else default_limit
    except ValueError:
        raise HTTPException(400, "offset and limit must be whole numbers") from None
    if offset < 0 or (limit is not None and limit < 1):
        raise HTTPException(400, "offset must be 0 or more and limit 1 or more")
    return params.get("q", "").strip()[:MAX_QUERY_CHARS], offset, limit


def _audit_args(request: Request) -> tuple[int, str | None, list[str], int]:
    """`since` (a duration, wall clock; default 7d), `by` (one person), `action` (repeatable) and `limit`."""
    params = request.query_params
    try:
        since = parse_duration(params.get("since") or "7d")
    except ValueError as exc:
        raise HTTPException(400, f"since: {exc}") from None
    limit_text = params.get("limit") or str(AUDIT_ROWS)
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= MAX_AUDIT_ROWS:
        raise HTTPException(400, f"limit: a whole number from 1 to {MAX_AUDIT_ROWS}")
    actions = [a for a in params.getlist("action") if a]
    if not set(actions) <= set(ACTIONS):
        raise HTTPException(400, f"action: {', '.join(ACTIONS)}")
    limit = int(limit_text)
    return since, (params.get("by") or "").strip()[:MAX_QUERY_CHARS] or None, actions, limit


def _typed(form: dict[str, Any]) -> str:
    """The reason typed, whitespace collapsed; 400 when over MAX_REASON_CHARS (the forms' own
    limit, which an API client does not meet) or holding a control or bidi character."""
    try:
        return audit.reason_text(str(form.get("reason") or ""))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _browser(request: Request) -> bool:
    """A browser navigating (it asks for HTML) to a page or posting a console page's form, rather
    than an API client: those keep their status codes and text whatever they accept or post."""
    if "text/html" not in request.headers.get("accept", ""):
        return False
    form = request.headers.get("content-type", "").startswith(FORM_TYPES)
    return form or not request.url.path.startswith("/api/")


def _kept(action: str, form: dict[str, Any]) -> dict[str, str]:
    """A refused form's typed fields, to fill it in again on its page: never the CSRF token. `form`
    names the form's instance: the page it was on (its `next`), as a digest of a fixed size."""
    typed = {k: str(form[k])[:MAX_KEPT_CHARS] for k in KEPT_FIELDS if isinstance(form.get(k), str)}
    return {"action": action, "form": _instance(form.get("next"))} | typed


def _instance(page: Any) -> str:
    """Which of a form's copies a message is for: the page that drew it. The silence form is drawn on
    the incidents page and on each incident's and scope's page, one action for all: until session 52 a
    silence refused for scope X filled in the form on scope Y's page, or any incident's. A digest, not
    the path: 16 characters whatever the page's address (a scope's name may be 2 KB escaped)."""
    return hashlib.sha256(_local(page).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _form_key(kept: dict[str, str]) -> tuple[str | None, str | None]:
    """The form instance a message's fields are for: its action on its page."""
    return kept.get("action"), kept.get("form")


def _over_https(request: Request, https_host: str | None) -> bool:
    """Whether the browser reached the console over HTTPS, where its flash cookie is Secure: the
    request's scheme as uvicorn gives it (https itself, or a trusted proxy's X-Forwarded-Proto:
    FORWARDED_ALLOW_IPS, 127.0.0.1 by default), or a request to the host of an https
    SENTINEL_CONSOLE_URL (an Ingress that ends TLS and is not among those trusted). Plain http
    elsewhere (a port-forward, `sentinel run --console` on 127.0.0.1) keeps a plain cookie: a
    browser stores no Secure cookie from plain http. Nor does the host count where a proxy says the
    browser came over plain http (X-Forwarded-Proto's first value, trusted or not: an Ingress that
    serves that host on http too): the browser dropped that Secure cookie, and the form's reason
    with it. Who forges the header weakens only the cookie of their own request."""
    if request.url.scheme == "https":
        return True
    if request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "http":
        return False
    return https_host is not None and (request.url.hostname or "").lower() == https_host


def _flashed(response: Response, tokens: auth.Tokens, kind: str, text: str, kept: dict[str, str] | None = None,
             max_age: int = FLASH_MAX_AGE_S, *, owner: str, earlier: list[dict[str, Any]] | None = None, page: Any = None,
             now: float | None = None, secure: bool = False) -> Response:
    """The response with a flash cookie for `owner` (auth.flash_owner) holding this message (first) and
    the earlier ones still waiting for their forms' pages, less one for the same form instance
    (replaced by this one), as many as fit."""
    now = time.time() if now is None else now
    entry: dict[str, Any] = {"kind": kind, "text": text[:FLASH_CHARS], "at": int(now), "keep": max_age}
    if page is not None:
        entry["page"] = _local(page)
    # A browser drops a cookie over 4 KB, and the reason why with it: the text cut to leave room for
    # the fields at their least, then the fields cut to fit.
    entry["text"] = _fitting_text(tokens, entry, _capped(kept, 0) if kept else None)
    if kept:
        entry["kept"] = _fitting(tokens, entry, kept)
    key = _form_key(kept or {})
    others = [e for e in earlier or [] if not (key[0] and _form_key(e.get("kept", {})) == key)]
    return _set_flashes(response, tokens, [entry, *others], now, owner=owner, secure=secure)


def _set_flashes(response: Response, tokens: auth.Tokens, entries: list[dict[str, Any]], now: float, *, owner: str,
                 secure: bool = False) -> Response:
    """The cookie rewritten to hold `entries` (the first always, the rest while they fit), lasting as
    long as the longest-lived of them; cleared when there are none. `secure`: the request came over
    HTTPS (`_over_https`), so the cookie is never sent over plain http."""
    if not entries:
        response.delete_cookie(FLASH_COOKIE, path="/", secure=secure, httponly=True, samesite="strict")
        return response
    held = entries[:1]
    for entry in entries[1:MAX_FLASH_ENTRIES]:  # the newest first: an older one that does not fit is dropped
        if len(_sealed(tokens, _packed(held + [entry]), owner)) <= MAX_FLASH_BYTES:
            held.append(entry)
    max_age = max(1, max(int(e["at"] + e["keep"] - now) for e in held))
    response.set_cookie(FLASH_COOKIE, _sealed(tokens, _packed(held), owner), max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=secure)
    return response


def _packed(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest message at the top, as session 50's console reads it (kind, text, kept); the others in `also`."""
    return entries[0] | ({"also": entries[1:]} if len(entries) > 1 else {})


def _fitting(tokens: auth.Tokens, message: dict[str, Any], kept: dict[str, str]) -> dict[str, str]:
    """The kept fields, the longest cut to the most characters that keep the cookie within
    MAX_FLASH_BYTES, naming those cut in `cut` (the page says so). A non-ASCII character costs up to
    4 bytes of UTF-8, under 6 in the cookie once base64d (12 percent-escaped until session 53): 475
    accented ones dropped every field until session 50."""
    def fits(cap: int) -> dict[str, str] | None:
        trial = _capped(kept, cap)
        return trial if len(_sealed(tokens, message | {"kept": trial}, "")) <= MAX_FLASH_BYTES else None  # any owner: one length

    low, high = 0, max(len(v) for v in kept.values())
    if fits(high) is not None:
        return kept
    while low < high:  # the largest cap that fits: a cap of 0 always does (the text and the action are bounded)
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) is not None else (low, middle - 1)
    return fits(low) or {k: v for k, v in kept.items() if k in UNCUT}


def _capped(kept: dict[str, str], cap: int) -> dict[str, str]:
    """The kept fields, each but the action and form cut to `cap` characters, naming those cut in `cut`."""
    cut = sorted(k for k, v in kept.items() if k not in UNCUT and len(v) > cap)
    return {k: v if k in UNCUT else v[:cap] for k, v in kept.items()} | ({"cut": " ".join(cut)} if cut else {})


def _fitting_text(tokens: auth.Tokens, message: dict[str, Any], least: dict[str, str] | None) -> str:
    """The message's text, cut (ending in an ellipsis) to the most characters that keep the cookie
    within MAX_FLASH_BYTES with its fields at their `least`. FLASH_CHARS bounds characters, not bytes:
    a text naming non-ASCII names (a warning's scopes, up to 12 bytes a character escaped) made a
    cookie of 6 KB, which a browser drops, the message and the fields with it, until session 51. A
    form's page too long to leave room for any text is dropped (it only lets that page show it)."""
    text = message["text"]

    def fits(chars: int) -> bool:
        trial = text if chars == len(text) else text[:chars] + "\u2026"
        return len(_sealed(tokens, message | {"text": trial} | ({"kept": least} if least else {}), "")) <= MAX_FLASH_BYTES

    if fits(len(text)):
        return text
    if not fits(0):
        message.pop("page", None)
    low, high = 0, len(text) - 1
    while low < high:  # the most characters that fit, with the ellipsis
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return text[:low] + "\u2026"


def _sealed(tokens: auth.Tokens, message: dict[str, Any], owner: str) -> str:
    """The cookie's value: the message encrypted for its owner (auth.flash_seal; its length, so the
    value's, is the same whoever the owner and whatever the nonce). Its JSON as UTF-8 (an accented
    letter 2 bytes before base64, not the 6 of `\\u00e9`); a lone surrogate passes as its 3 bytes."""
    content = json.dumps(message, ensure_ascii=False, sort_keys=True).encode("utf-8", "surrogatepass")
    return auth.flash_seal(tokens, content, owner=owner, nonce=secrets.token_bytes(auth.FLASH_NONCE_BYTES))


def _flashes(request: Request, tokens: auth.Tokens, *, owner: str, now: float | None = None) -> list[dict[str, Any]]:
    """The flash cookie's messages still in time, newest first; none where the cookie is absent or not
    one the console wrote and encrypted for `owner`, the caller reading (until session 49 any cookie of
    the right shape put its text on the page and filled in its form; until session 52 anyone who
    presented a leaked one saw it and what was typed; until session 53 anyone who read it saw the
    typed fields in it, signed but not encrypted). The issued-at time is under the seal: a message
    older than it was kept for (60 s, a Redis-away form's 10 minutes) is ignored, as is one with no
    time (a session 50 console's) or no owner (a session 51 console's, during a rolling upgrade)."""
    content = auth.flash_open(tokens, request.cookies.get(FLASH_COOKIE) or "", owner=owner)
    if content is None:  # none, not ours, not its owner's, or of a console before session 53 (signed JSON): nothing shown
        return []
    try:
        found = json.loads(content.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError):  # ours, so never expected; still never a 500
        return []
    if not isinstance(found, dict):
        return []
    also = found.pop("also", [])
    now = time.time() if now is None else now
    entries = [_entry(e, now) for e in [found, *(also if isinstance(also, list) else [])][:MAX_FLASH_ENTRIES]]
    return [e for e in entries if e is not None]


def _entry(found: Any, now: float) -> dict[str, Any] | None:
    """One sealed message as the pages use it, or None where it is malformed or out of time."""
    if not isinstance(found, dict) or found.get("kind") not in ("error", "note") or not isinstance(found.get("text"), str):
        return None
    at, keep = found.get("at"), found.get("keep")
    if not (isinstance(at, int) and isinstance(keep, int)) or isinstance(at, bool) or isinstance(keep, bool):
        return None
    # A replica whose clock is up to FLASH_SKEW_S off the writer's, either way, reads it for its whole keep (one
    # ahead read a 60 s message for 60 s less its lead, none at all a minute ahead, until session 51's review).
    if not 0 < keep <= REDIS_AWAY_FLASH_S or not now - keep - FLASH_SKEW_S <= at <= now + FLASH_SKEW_S:
        return None
    kept = found.get("kept")
    kept = {k: v for k, v in kept.items() if k in (*UNCUT, "cut", *KEPT_FIELDS) and isinstance(v, str)} if isinstance(kept, dict) else {}
    entry = {"kind": found["kind"], "text": found["text"][:FLASH_CHARS], "kept": kept, "at": at, "keep": keep}
    return entry | ({"page": _local(found["page"])} if isinstance(found.get("page"), str) else {})


def _flash(request: Request, tokens: auth.Tokens, *, owner: str, now: float | None = None) -> dict[str, Any] | None:
    """The newest of the flash cookie's messages for `owner`, or None."""
    return next(iter(_flashes(request, tokens, owner=owner, now=now)), None)


def _typed_fields(entry: dict[str, Any]) -> bool:
    """Whether a message carries fields typed into a form (a refused unlift carries its action alone)."""
    return any(k in entry["kept"] for k in KEPT_FIELDS)


class _Flashes:
    """The flash messages a page shows, as its template renders. A message with a form's typed fields
    waits for a page with that form (or the page the form went back to): until session 51 any page a
    browser fetched consumed it, and a Redis-away form's fields were lost to a look at the overview.
    It fills in, and is shown with, only the copy of the form it came from (the page that drew it,
    whose `next` it posted): since session 52 a silence's fields wait for their own scope's or
    incident's page, not the next page with any silence form. The base template renders the page's
    main part first, so the forms it holds are known when the messages are written above it."""

    def __init__(self, entries: list[dict[str, Any]], path: str):
        self.entries, self.path, self.forms = entries, path, set[tuple[str | None, str | None]]()
        self.instance = _instance(path)  # as the page's forms post it: their `next` is this path
        self.shown: list[dict[str, Any]] = []

    def kept_for(self, action: str) -> dict[str, str]:
        """The fields to fill `action`'s form in with (none if no message holds them); the form is on this page."""
        key = (action, self.instance)
        self.forms.add(key)
        return next((e["kept"] for e in self.entries if _form_key(e["kept"]) == key and _typed_fields(e)), {})

    def __call__(self) -> list[dict[str, Any]]:
        self.shown = [e for e in self.entries
                      if not _typed_fields(e) or _form_key(e["kept"]) in self.forms or e.get("page") == self.path]
        return self.shown


def _reason(form: dict[str, Any], caller: auth.Caller) -> str:
    reason = _typed(form)
    named = _named(caller)
    return f"{reason} (by {named})".strip() if named else reason


def _named(caller: auth.Caller) -> str:
    # A Basic-auth user name is recorded (it is not a secret); a bearer token's caller is its role.
    return caller.user if caller.user not in ("", caller.role) else ""


def _local(target: Any) -> str:
    """Only a path on this console: a form's `next` must not send the browser elsewhere. Not `//host`
    nor a backslash (read as `/` by browsers), nor a control character: a browser drops a tab or a
    newline from a link, and `/<tab>/host` is `//host` to it."""
    target = str(target or "/")
    unsafe = target.startswith("//") or "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    return target if target.startswith("/") and not unsafe else "/"


def _address(request: Request) -> str:
    """The page a request asked for, as it was written (its path undecoded, its query kept)."""
    path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    query = request.url.query
    return f"{path}?{query}" if query else path
