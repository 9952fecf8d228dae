"""The admin UI at ``/ui``, served by ``gesso serve`` itself: server-rendered pages (Starlette and Jinja2), a
stylesheet and a little plain JavaScript, every asset in the wheel (nothing from a CDN: it works offline).

Signing in takes the master key, or a key of an internal user (who sees what their role allows,
:class:`gesso.proxy.directory.Principal`), or any virtual key (which sees its own usage). The session is a signed
cookie (HMAC-SHA256 under a secret derived from the master key, so every worker and replica reads it, and a new
master key ends every session): ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over TLS, ``Path=/ui``, for
:data:`SESSION_SECONDS`; signing out records the session as ended in the database, so a copy of the cookie is
refused too. It holds the key's hash, never the key, and the key is read again on every page: a
key blocked, expired or deleted is signed out at once. Every form carries the session's CSRF token. Every page
is sent with a Content-Security-Policy that allows no inline script or style and no other origin, and with
``X-Frame-Options: DENY``; Jinja2 escapes every value a template shows (key aliases, models, users, metadata are
a tenant's text).

The UI needs ``general_settings.master_key`` and a database, as the key API does.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import math
import secrets
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import jinja2
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gesso import errors
from gesso.proxy import keys, store
from gesso.proxy.directory import Directory, Principal, Taken
from gesso.proxy.http import Caller, ClientGone, read_body
from gesso.proxy.router import Router

#: seconds a session lasts from its sign-in
SESSION_SECONDS = 8 * 3600
COOKIE = "gesso_ui"
#: the cookie that carries the sign-in form's CSRF token (before there is a session)
LOGIN_COOKIE = "gesso_ui_login"
#: the largest form the UI reads
MAX_FORM = 64 * 1024
#: the teams, users and customers pages: their title, their table's columns (heading, field of the entity's info),
#: the fields of their "make" form (name, label), and the actions on a row
ENTITIES: dict[str, dict[str, Any]] = {
    "teams": {
        "title": "Teams", "id": "team_id",
        "columns": (("Team", "team_id"), ("Alias", "team_alias"), ("Models", "models"), ("Spend (USD)", "spend"),
                    ("Budget (USD)", "max_budget"), ("Requests a minute", "rpm_limit"),
                    ("Images a minute", "ipm_limit"), ("Members", "members"), ("State", "state")),
        "fields": (("team_id", "Team id"), ("team_alias", "Alias"), ("models", "Models (comma-separated)"),
                   ("max_budget", "Budget (USD)"), ("budget_duration", "Budget period"),
                   ("rpm_limit", "Requests per minute"), ("ipm_limit", "Images per minute")),
        "actions": ("block", "delete"),
    },
    "users": {
        "title": "Users", "id": "user_id",
        "columns": (("User", "user_id"), ("Email", "user_email"), ("Role", "user_role"), ("Models", "models"),
                    ("Spend (USD)", "spend"), ("Budget (USD)", "max_budget"), ("Teams", "teams")),
        "fields": (("user_id", "User id"), ("user_email", "Email"), ("user_role", "Role (proxy_admin, "
                   "internal_user, internal_user_viewer)"), ("models", "Models (comma-separated)"),
                   ("max_budget", "Budget (USD)"), ("budget_duration", "Budget period")),
        "actions": ("delete",),
    },
    "customers": {
        "title": "Customers", "id": "user_id",
        "columns": (("Customer (the request's user)", "user_id"), ("Alias", "alias"), ("Spend (USD)", "spend"),
                    ("Budget (USD)", "max_budget"), ("Requests a minute", "rpm_limit"),
                    ("Images a minute", "ipm_limit"), ("State", "state")),
        "fields": (("user_id", "Customer id (the request's user)"), ("alias", "Alias"), ("max_budget", "Budget (USD)"),
                   ("budget_duration", "Budget period"), ("rpm_limit", "Requests per minute"),
                   ("ipm_limit", "Images per minute")),
        "actions": ("block", "delete"),
    },
}  # fmt: skip
#: the overview's ranges: their length and their buckets, in seconds
RANGES = {"hour": (3600, 60), "day": (86400, 1800), "month": (30 * 86400, 86400)}
#: keys a page of the keys list shows, and spend rows a page of the logs
PAGE_SIZE = 25
LOG_PAGE = 50
HERE = Path(__file__).parent
#: what every page of the UI is sent with: nothing inline runs, nothing from another origin loads, no frame holds it
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(("html",), default=True),
    undefined=jinja2.StrictUndefined,
)


class Host(keys.Host, Protocol):
    """What the UI needs of the proxy it is served by (:class:`gesso.proxy.app.Proxy`)."""

    @property
    def router(self) -> Router: ...


def routes(proxy: Host) -> list[Route | Mount]:
    ui = Ui(proxy)
    return [
        Route("/ui", ui.home, methods=["GET"]),
        Route("/ui/overview", ui.overview_page, methods=["GET"]),
        Route("/ui/api/overview", ui.overview_data, methods=["GET"]),
        *(Route(f"/ui/{kind}", ui.entities_page, methods=["GET"]) for kind in ENTITIES),
        *(Route(f"/ui/{kind}", ui.entities_action, methods=["POST"]) for kind in ENTITIES),
        Route("/ui/logs", ui.logs_page, methods=["GET"]),
        Route("/ui/logs/{request_id}", ui.log_page, methods=["GET"]),
        Route("/ui/models", ui.models_page, methods=["GET"]),
        Route("/ui/", ui.home, methods=["GET"]),
        Route("/ui/login", ui.login_page, methods=["GET"]),
        Route("/ui/login", ui.login, methods=["POST"]),
        Route("/ui/logout", ui.logout, methods=["POST"]),
        Route("/ui/keys", ui.keys_page, methods=["GET"]),
        Route("/ui/keys", ui.keys_action, methods=["POST"]),
        Route("/ui/keys/{token}", ui.key_page, methods=["GET"]),
        Route("/ui/keys/{token}", ui.key_update, methods=["POST"]),
        Mount("/ui/static", app=StaticFiles(directory=HERE / "static"), name="ui-static"),
    ]


class Session:
    """A signed-in caller: who, until when, and the token every form of theirs must carry."""

    def __init__(self, who: Principal, holder: str, expires: float, csrf: str) -> None:
        self.who, self.holder, self.expires, self.csrf = who, holder, expires, csrf

    @property
    def name(self) -> str:
        if self.who.admin and self.who.key is None:
            return "admin (master key)"
        key = self.who.key
        user = self.who.user
        shown = key.key_alias or key.key_name if key is not None else "?"
        return f"{user.user_id} ({user.user_role}), key {shown}" if user is not None else f"key {shown}"


class Ui:
    def __init__(self, proxy: Host) -> None:
        self.proxy = proxy
        self.api = keys.KeyApi(proxy)

    # -- sessions -----------------------------------------------------------------------------------------

    def _secret(self) -> bytes | None:
        master = self.proxy.config.master_key
        return hashlib.sha256(b"gesso ui session\0" + master.encode()).digest() if master else None

    def _sign(self, payload: dict[str, Any]) -> str:
        secret = self._secret()
        assert secret is not None
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
        mac = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def _unsigned(self, cookie: str | None) -> dict[str, Any] | None:
        secret = self._secret()
        if not cookie or secret is None or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        if not _same(hmac.new(secret, body.encode(), hashlib.sha256).hexdigest(), mac):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    def _login_token(self) -> str:
        """The sign-in form's token: random, and signed, so a cookie planted by another site (a sibling domain's,
        say) cannot carry one of its own making."""
        secret = self._secret()
        assert secret is not None
        nonce = secrets.token_urlsafe(18)
        return nonce + "." + hmac.new(secret, b"login\0" + nonce.encode(), hashlib.sha256).hexdigest()[:32]

    def _login_token_ok(self, token: str) -> bool:
        secret = self._secret()
        if secret is None or token.count(".") != 1 or not token.isascii():
            return False
        nonce, mac = token.split(".")
        return _same(hmac.new(secret, b"login\0" + nonce.encode(), hashlib.sha256).hexdigest()[:32], mac)

    async def session(self, request: Request) -> Session | None:
        """The request's session, checked: signed by this proxy, not expired, its key still there and usable."""
        payload = self._unsigned(request.cookies.get(COOKIE))
        if payload is None or not isinstance(payload.get("exp"), (int, float)) or payload["exp"] <= time.time():
            return None
        holder, csrf = payload.get("h"), payload.get("c")
        if not isinstance(holder, str) or not isinstance(csrf, str):
            return None
        db = self.proxy.store
        if db is None or await db.signed_out(csrf):  # (the CSRF token names the session: one per sign-in)
            return None
        if holder == "admin":
            return Session(Principal(True), holder, payload["exp"], csrf)
        key = await db.get_key(holder)
        if key is None or key.blocked or (key.expires is not None and key.expires <= store.now()):
            return None
        return Session(await self.api.principal(Caller(key=key), db), holder, payload["exp"], csrf)

    @property
    def db(self) -> store.Store:
        """The proxy's database (every page but the sign-in form's and :meth:`_unavailable`'s has one)."""
        found = self.proxy.store
        assert found is not None
        return found

    async def _visible_key(self, session: Session, token: str) -> store.Key | None:
        """The key with this hash, if the session's caller may see it."""
        key = await self.db.get_key(token) if "\x00" not in token else None
        return key if key is not None and session.who.sees_key(key) else None

    async def _signed_in(self, request: Request) -> Session | Response:
        """The request's session, or the answer for a request without one (a redirect to sign in)."""
        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable
        session = await self.session(request)
        return session if session is not None else RedirectResponse("/ui/login", status_code=303, headers=HEADERS)

    def _page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = _templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def _unavailable(self) -> HTMLResponse | None:
        if self.proxy.config.master_key is None or self.proxy.store is None:
            return self._page("unavailable.html", 503)
        return None

    async def _form(self, request: Request) -> dict[str, str]:
        raw = await read_body(request, limit=MAX_FORM, timeout=self.proxy.body_timeout, limit_note="a form")
        try:
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=64))
        except (UnicodeDecodeError, ValueError):
            return {}

    # -- sign-in ------------------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/ui/overview", status_code=303, headers=HEADERS)

    async def login_page(self, request: Request, error: str | None = None, status: int = 200) -> Response:
        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable
        token = request.cookies.get(LOGIN_COOKIE, "")  # (another tab's form stays good)
        if not self._login_token_ok(token):
            token = self._login_token()
        page = self._page("login.html", status, csrf=token, error=error)
        page.set_cookie(LOGIN_COOKIE, token, max_age=3600, path="/ui", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")  # fmt: skip
        return page

    async def login(self, request: Request) -> Response:
        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable
        try:
            form = await self._form(request)
        except (errors.GessoError, ClientGone):
            return await self.login_page(request, "The form could not be read; try again", 400)
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not _same(form.get("csrf", ""), expected) or not self._login_token_ok(expected):
            return await self.login_page(request, "The form expired; try again", 403)
        given = form.get("key", "").strip()
        master = self.proxy.config.master_key
        holder = None
        if given and master and hmac.compare_digest(given.encode(), master.encode()):
            holder = "admin"
        elif given and self.proxy.store is not None:
            key = await self.proxy.store.get_key(store.hash_key(given))
            if key is not None and not key.blocked and (key.expires is None or key.expires > store.now()):
                holder = key.token_hash
        if holder is None:
            return await self.login_page(request, "That key is not one this proxy accepts", 401)
        cookie = self._sign({"h": holder, "exp": int(time.time()) + SESSION_SECONDS, "c": secrets.token_urlsafe(24)})
        answer = RedirectResponse("/ui/overview", status_code=303, headers=HEADERS)
        answer.set_cookie(COOKIE, cookie, max_age=SESSION_SECONDS, path="/ui", httponly=True, samesite="strict",
                          secure=request.url.scheme == "https")  # fmt: skip
        answer.delete_cookie(LOGIN_COOKIE, path="/ui")
        return answer

    async def logout(self, request: Request) -> Response:
        session = await self.session(request)
        try:
            form = await self._form(request)
        except (errors.GessoError, ClientGone):
            form = {}
        answer = RedirectResponse("/ui/login", status_code=303, headers=HEADERS)
        if session is not None and _same(form.get("csrf", ""), session.csrf):
            # ended for good: the cookie, if it was copied, is refused by every replica until its expiry
            await self.db.sign_out(
                session.csrf, datetime.datetime.fromtimestamp(session.expires, datetime.timezone.utc)
            )
            answer.delete_cookie(COOKIE, path="/ui")
        return answer

    # -- keys ---------------------------------------------------------------------------------------------

    async def keys_page(self, request: Request, *, made: dict[str, Any] | None = None, error: str | None = None,
                        status: int = 200) -> Response:  # fmt: skip
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        db = self.db
        query = request.query_params
        search = query.get("q", "").strip() or None
        try:
            page = keys._positive_int(query.get("page", "1"), "page")
        except errors.GessoError:
            page = 1
        found, total = await db.list_keys(alias_contains=search, visible=session.who.keys_visible(), page=page,
                                          size=PAGE_SIZE)  # fmt: skip
        pages = max(1, math.ceil(total / PAGE_SIZE))
        return self._page(
            "keys.html", status, session=session, keys=[k.info() for k in found], total=total, page=page,
            pages=pages, search=search or "", made=made, error=error, writes=session.who.writes,
            admin=session.who.admin, link=lambda p: "/ui/keys?" + urlencode({"q": search or "", "page": p}),
        )  # fmt: skip

    async def keys_action(self, request: Request) -> Response:
        """A keys form: ``create``, ``block``, ``unblock`` or ``delete``, each as the key API would do it for
        this caller (the same checks, the same scoping)."""
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        try:
            form = await self._form(request)
        except (errors.GessoError, ClientGone):
            return await self.keys_page(request, error="The form could not be read", status=400)
        if not _same(form.get("csrf", ""), session.csrf):
            return await self.keys_page(request, error="The form expired; reload the page and try again",
                                        status=403)  # fmt: skip
        db = self.db
        who = session.who
        try:
            action = form.get("action")
            if action == "create":
                return await self.keys_page(request, made=await self._create(who, db, form))
            key = await self.api._find(form.get("key", ""))
            if action in ("block", "unblock"):
                if not who.admin:
                    raise keys._error(403, "Only the admin blocks and unblocks keys", type="permission_error")
                await db.update_key(key.token_hash, {"blocked": action == "block"})
            elif action == "delete":
                await self.api._may_change(who, db, key, {})
                await db.delete_keys([key.token_hash])
            else:
                raise keys._error(400, "Unknown action")
            self.api._changed(key.token_hash)
        except errors.GessoError as exc:
            return await self.keys_page(request, error=exc.message, status=getattr(exc, "status_code", 400))
        return RedirectResponse(request.url.path + ("?" + request.url.query if request.url.query else ""),
                                status_code=303, headers=HEADERS)  # fmt: skip

    async def key_page(self, request: Request, *, error: str | None = None, status: int = 200) -> Response:
        """One key: its settings and spend, its spend over time (a plot), and a form to change its limits."""
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        key = await self._visible_key(session, request.path_params["token"])
        if key is None:
            return self._page("missing.html", 404, session=session, what="No such key you may see")
        return self._page("key.html", status, session=session, key=key.info(), error=error,
                          writes=session.who.manages_key(key))  # fmt: skip

    async def key_update(self, request: Request) -> Response:
        """Change a key's limits, as ``/key/update`` would for this caller (an empty field clears the limit)."""
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        db = self.db
        try:
            form = await self._form(request)
            if not _same(form.get("csrf", ""), session.csrf):
                raise keys._error(403, "The form expired; reload the page and try again")
            key = await self.api._find(request.path_params["token"])
            names = ("models", "max_budget", "budget_duration", "rpm_limit", "ipm_limit")
            given = _fields(form, names)
            values = keys._checked({name: given.get(name) for name in names})  # (an empty field: none)
            if values.get("budget_duration") == key.budget_duration:  # unchanged: its period is not restarted
                values.pop("budget_duration")
            await self.api._may_change(session.who, db, key, values)
            await db.update_key(key.token_hash, values)
            self.api._changed(key.token_hash)
        except (errors.GessoError, ClientGone) as exc:
            message = exc.message if isinstance(exc, errors.GessoError) else "The form could not be read"
            return await self.key_page(request, error=message, status=getattr(exc, "status_code", 400))
        return RedirectResponse(request.url.path, status_code=303, headers=HEADERS)

    async def _create(self, who: Principal, db: store.Store, form: dict[str, str]) -> dict[str, Any]:
        """A key from the create form (its fields as the key API takes them; empty ones left out)."""
        body = _fields(form, ("key_alias", "budget_duration", "team_id", "models", "max_budget", "rpm_limit",
                              "ipm_limit"))  # fmt: skip
        values = keys._checked(body)
        await self.api._owned(who, db, values)
        await self.api._unique_alias(values.get("key_alias"))
        plaintext, key = await db.create_key(**values)
        self.api._changed(key.token_hash)
        return {"key": plaintext, **key.info()}

    # -- logs -------------------------------------------------------------------------------------------------

    async def logs_page(self, request: Request) -> Response:
        """The spend log the caller may see, newest first, filtered by key, team, model, status and days."""
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        db = self.db
        query = request.query_params
        filters = {name: query.get(name, "").strip() for name in ("key", "team_id", "model", "status", "start_date",
                                                                  "end_date")}  # fmt: skip
        error, status = None, 200
        rows: list[dict[str, Any]] = []
        try:
            page = keys._positive_int(query.get("page", "1"), "page")
            start, end = keys._dates({k: v for k, v in filters.items() if k in ("start_date", "end_date") and v})
            token = None
            if filters["key"]:
                key = await db.find_key(filters["key"])
                if key is None or not session.who.sees_key(key):  # (one answer: whether it exists is not said)
                    raise keys._error(404, "key: no such key you may see", type="not_found_error", param="key")
                token = key.token_hash
            rows = await db.spend_logs(
                token_hash=token, model_name=filters["model"] or None, team_id=filters["team_id"] or None,
                status=filters["status"] or None, start=start, end=end, limit=LOG_PAGE + 1,
                offset=(page - 1) * LOG_PAGE, visible=session.who.spend_visible(),
            )  # fmt: skip
        except errors.GessoError as exc:
            page, error, status = 1, exc.message, getattr(exc, "status_code", 400)
        more = len(rows) > LOG_PAGE
        link = {p: "/ui/logs?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": p}) for p in
                (page - 1, page + 1)}  # fmt: skip
        return self._page("logs.html", status if error else 200, session=session, rows=rows[:LOG_PAGE], page=page,
                          more=more, link=link, error=error, statuses=("success", "failure", "cancelled"),
                          filters=filters)  # fmt: skip

    async def log_page(self, request: Request) -> Response:
        """One spend row: every column but an image (a row never holds one); the prompt only if the proxy keeps
        prompts (``general_settings.store_prompts``)."""
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        db = self.db
        request_id = request.path_params["request_id"]
        found = await db.spend_logs(request_id=request_id, limit=1, visible=session.who.spend_visible())
        if not found:
            return self._page("missing.html", 404, session=session, what=f"No request {request_id} you may see")
        row = found[0]
        row.pop("end_user", None)  # (the same value as ``user``)
        return self._page("log.html", session=session, row=row, keeps_prompts=self.proxy.config.store_prompts)

    # -- models -----------------------------------------------------------------------------------------------

    async def models_page(self, request: Request) -> Response:
        """Each model name's deployments: the model each calls, and its state now (ready, or resting until when
        and why; calls in flight)."""
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        router = self.proxy.router
        moment = time.monotonic()
        models = []
        for name, group in router.groups.items():
            deployments = []
            for deployment in group:
                resting = router.resting_until.get(deployment.id, 0.0) - moment
                why = router.failures.get(deployment.id, "an error")
                state = f"resting for {math.ceil(resting)} s more (after {why})" if resting > 0 else "ready"
                deployments.append({"id": deployment.id, "model": deployment.model, "state": state,
                                    "in_flight": router.in_flight.get(deployment.id, 0),
                                    **_described(deployment.model, deployment.params)})  # fmt: skip
            models.append({"name": name, "deployments": deployments})
        return self._page("models.html", session=session, models=models, cooldown=router.cooldown)

    # -- overview ---------------------------------------------------------------------------------------------

    async def overview_page(self, request: Request) -> Response:
        """Plots of the last hour, day or 30 days (drawn by ui.js from :meth:`overview_data`), and the budget burn
        of the keys (and, for the admin, the teams) that have spent most of their budgets."""
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        db = self.db
        span = request.query_params.get("range", "day")
        span = span if span in RANGES else "day"
        burning = await db.burning_keys(visible=session.who.keys_visible(), limit=10)
        teams = []
        if session.who.admin:
            listed = await Directory(db).list_teams(size=1000)
            teams = sorted((t for t in listed if t.budget.max_budget), reverse=True,
                           key=lambda t: t.budget.spend / (t.budget.max_budget or 1))[:10]  # fmt: skip
        return self._page("overview.html", session=session, span=span, spans=tuple(RANGES),
                          keys=[k.info() for k in burning], teams=[t.info() for t in teams])  # fmt: skip

    async def overview_data(self, request: Request) -> Response:
        """``?range=hour|day|month``: by bucket of time, requests, images and cost by model name, the error rate
        and latency p50/p99 (of the successful calls: the newest 5,000 of the range), of the spend rows the
        caller may see. JSON, for the signed-in only."""
        session = await self.session(request) if self._unavailable() is None else None
        if session is None:
            return JSONResponse({"error": "sign in first"}, status_code=401, headers=HEADERS)
        db = self.db
        span, step = RANGES.get(request.query_params.get("range", "day"), RANGES["day"])
        now = int(time.time())
        first = (now - span) // step * step + step
        visible = session.who.spend_visible()
        token = request.query_params.get("key")
        if token is not None:  # one key's series (``?key=<token>``), if the caller may see it
            if await self._visible_key(session, token) is None:
                return JSONResponse({"error": "no such key"}, status_code=404, headers=HEADERS)
            mine = store.spend_logs.c.token_hash == token
            visible = mine if visible is None else sa.and_(visible, mine)
        rows, latencies = await db.spend_series(
            start=datetime.datetime.fromtimestamp(first, datetime.timezone.utc), step=step, visible=visible
        )
        times = list(range(first, now // step * step + 1, step))
        index = {t: i for i, t in enumerate(times)}
        names = sorted({str(r["model_name"]) for r in rows})
        series: dict[str, dict[str, list[float]]] = {
            what: {name: [0.0] * len(times) for name in names} for what in ("requests", "images", "cost")
        }
        errors_at, requests_at = [0] * len(times), [0] * len(times)
        for row in rows:
            i = index.get(row["t"])
            if i is None:
                continue
            for what in ("requests", "images", "cost"):
                series[what][str(row["model_name"])][i] += row[what]
            errors_at[i] += row["errors"]
            requests_at[i] += row["requests"]
        p50, p99 = [], []
        for t in times:
            found = sorted(latencies.get(t, ()))
            p50.append(_percentile(found, 0.50))
            p99.append(_percentile(found, 0.99))
        rate = [round(e / r, 4) if r else None for e, r in zip(errors_at, requests_at, strict=True)]
        return JSONResponse({"range": request.query_params.get("range", "day"), "step": step, "times": times,
                             "models": names, **series, "error_rate": rate, "p50_ms": p50, "p99_ms": p99},
                            headers=HEADERS)  # fmt: skip

    # -- teams, users, customers -------------------------------------------------------------------------

    async def entities_page(self, request: Request, *, error: str | None = None, status: int = 200) -> Response:
        """The teams (the admin's, or the caller's own), users or customers (the admin's), with the admin's
        forms: make one, block or unblock it, delete it."""
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        db = self.db
        kind = request.url.path.rsplit("/", 1)[-1]
        spec = ENTITIES[kind]
        who, directory = session.who, Directory(db)
        if kind == "teams":
            mine = None if who.admin else [t for t, _ in (who.user.teams if who.user else ())]
            found: list[Any] = await directory.list_teams(size=1000, visible=mine)
        elif not who.admin:
            return self._page("missing.html", 403, session=session, what=f"Only the admin sees the {kind}")
        else:
            found = await (directory.list_users(size=1000) if kind == "users" else directory.list_customers(size=1000))
        rows = [_shown_row(entity.info()) for entity in found]
        return self._page("entities.html", status, session=session, kind=kind, spec=spec, rows=rows, error=error,
                          admin=who.admin)  # fmt: skip

    async def entities_action(self, request: Request) -> Response:
        session = await self._signed_in(request)
        if not isinstance(session, Session):
            return session
        kind = request.url.path.rsplit("/", 1)[-1]
        try:
            form = await self._form(request)
        except (errors.GessoError, ClientGone):
            return await self.entities_page(request, error="The form could not be read", status=400)
        if not _same(form.get("csrf", ""), session.csrf):
            return await self.entities_page(request, error="The form expired; reload the page", status=403)
        db = self.db
        directory = Directory(db)
        try:
            if not session.who.admin:
                raise keys._error(403, f"Only the admin changes the {kind}", type="permission_error")
            action, given = form.get("action"), form.get("id", "")
            if action == "create":
                await self._make(kind, directory, form)
            elif action in ("block", "unblock") and kind in ("teams", "customers"):
                blocked = action == "block"
                done = await (directory.update_team(given, {"blocked": blocked}) if kind == "teams"
                              else directory.update_customer(given, {"blocked": blocked}))  # fmt: skip
                if done is None:
                    raise keys._error(404, f"No such {kind[:-1]}", type="not_found_error")
            elif action == "delete":
                gone = await (directory.delete_team(given) if kind == "teams" else directory.delete_user(given)
                              if kind == "users" else directory.delete_customers([given]))  # fmt: skip
                if gone is None or (kind == "customers" and not gone):
                    raise keys._error(404, f"No such {kind[:-1]}", type="not_found_error")
            else:
                raise keys._error(400, "Unknown action")
            self.api._changed("")
        except errors.GessoError as exc:
            return await self.entities_page(request, error=exc.message, status=getattr(exc, "status_code", 400))
        return RedirectResponse(request.url.path, status_code=303, headers=HEADERS)

    async def _make(self, kind: str, directory: Directory, form: dict[str, str]) -> None:
        """A team, user or customer from its "make" form, checked as its route checks it."""
        from gesso.proxy import governance

        names = tuple(name for name, _ in ENTITIES[kind]["fields"])
        body = governance._limits(_fields(form, names))
        for name in ("team_alias", "alias", "user_email"):
            governance._text(body, name)
        if kind == "users":
            governance._user_fields(body)
        ids = [body[name] for name in ("team_id", "user_id") if name in body]
        for value in ids:
            keys._check_id(value, ENTITIES[kind]["id"])
        if kind == "customers" and not ids:
            raise keys._error(400, "user_id: required (the value apps send as user)", param="user_id")
        try:
            if kind == "teams":
                await directory.create_team(body)
            elif kind == "users":
                await directory.create_user(body)
            else:
                await directory.create_customer(body)
        except Exception as exc:  # an id or alias taken (by another request, too)
            if not isinstance(exc, Taken | sa.exc.IntegrityError):
                raise
            raise keys._error(400, str(exc) if isinstance(exc, Taken) else "taken meanwhile") from None


def _percentile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``ordered`` (nearest rank), or ``None`` when it is empty."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 1)


def _fields(form: dict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """A form's non-empty fields among ``names``, as the API takes them: ``models`` a list, the budget a number,
    the limits whole numbers (a 400 naming the field when one is not)."""
    body: dict[str, Any] = {}
    for name in names:
        text = form.get(name, "").strip()
        if not text:
            continue
        if name == "models":
            body[name] = [m.strip() for m in text.split(",") if m.strip()]
        elif name in ("max_budget", "rpm_limit", "ipm_limit"):
            try:
                body[name] = float(text) if name == "max_budget" else int(text)
            except ValueError:
                raise keys._error(400, f"{name}: a number (got {keys._shown(text)})", param=name) from None
        else:
            body[name] = text
    return body


def _shown_row(info: dict[str, Any]) -> dict[str, Any]:
    """An entity's info as its table shows it."""
    row = dict(info)
    row["models"] = ", ".join(info.get("models") or ()) or "all"
    row["spend"] = f"{info.get('spend', 0.0):.4f}"
    row["max_budget"] = f"{info['max_budget']:.2f}" if info.get("max_budget") is not None else "none"
    row["members"] = len(info.get("members_with_roles") or ())
    row["teams"] = ", ".join(info.get("teams") or ())
    row["state"] = "blocked" if info.get("blocked") else "active"
    return row


def _described(model: str, options: Any) -> dict[str, str]:
    """A deployment's model as its plugin declares it: its price per image (USD, a range when it depends on the
    size or quality) and its lifecycle (status, end of life, and whether that date has passed)."""
    from gesso.plugins import get_registry

    try:
        found = get_registry().resolve(model, options)[1].model
    except Exception:  # (a model no installed plugin knows: the config's check let it through with a warning)
        return {"price": "unknown", "lifecycle": "unknown"}
    prices = sorted(float(v) for v in found.prices.values()) if found.prices else []
    price = "unknown" if not prices else f"{prices[0]:g}" + (f"-{prices[-1]:g}" if prices[-1] != prices[0] else "")
    life, end = found.lifecycle.status, found.lifecycle.end_of_life
    lifecycle = life + (f", end of life {end}" if end else "")
    if end and end < datetime.date.today().isoformat():
        lifecycle += " (passed: calls may fail)"
    return {"price": price, "lifecycle": lifecycle}


def _same(given: str, expected: str) -> bool:
    """Whether two tokens are equal, in constant time (as bytes: a caller's text may be any Unicode)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


class SecurityHeaders:
    """ASGI middleware: :data:`HEADERS` on every answer under ``/ui`` (static files, 404s and 405s too), those the
    pages set already kept."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not (scope["path"] == "/ui" or scope["path"].startswith("/ui/")):
            await self.app(scope, receive, send)
            return

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in present]
                if scope["path"].startswith("/ui/static/"):  # (the assets may be cached; the pages may not)
                    extra = [(k, v) for k, v in extra if k != b"cache-control"]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, sending)
