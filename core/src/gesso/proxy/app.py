"""The OpenAI-compatible proxy: a Starlette app on the SDK's async entry points (nothing blocks the loop).

Routes (each with and without ``/v1``): ``POST /images/generations`` (JSON), ``POST /images/edits`` and
``POST /images/variations`` (multipart), ``GET /models``, ``GET /health/liveliness``, ``GET /health/readiness``,
``GET /health`` (:mod:`gesso.proxy.probes`), ``GET /metrics`` and ``GET /openapi.json``. Errors are OpenAI's
``{"error": {...}}`` with the statuses the ``openai`` client acts on; a client that disconnects cancels its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hmac
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from gesso import api, errors, params, pricing, telemetry
from gesso.aio import within
from gesso.boundary import Untrusted, is_text, printable
from gesso.cache import open_store
from gesso.cache import within as store_within
from gesso.proxy import cached, directory, idempotency, probes, store
from gesso.proxy import config as proxy_config
from gesso.proxy.cached import ExactCache
from gesso.proxy.config import Deployment, ProxyConfig
from gesso.proxy.http import (
    Caller,
    ClientGone,
    ProxyError,
    error_response,
    json_object,
    json_response,
    model_not_found,
    read_body,
)  # fmt: skip
from gesso.proxy.idempotency import Idempotency, Replay
from gesso.proxy.ledger import DB_WAIT, DatabaseUnavailable, Ledger
from gesso.proxy.lifecycle import Lifecycle, Reloader
from gesso.proxy.logs import AccessLog, Line
from gesso.proxy.metrics import MAX_TEAMS, Metrics, teams_text
from gesso.proxy.router import Router
from gesso.types import ImageResponse

logger = logging.getLogger("gesso.proxy")
T = TypeVar("T")

#: form fields that stay text (everything else in a multipart form is read as JSON when it parses as JSON)
TEXT_FIELDS = frozenset(
    ("model", "prompt", "size", "quality", "response_format", "style", "user", "background", "moderation")
)
#: tries of a request's spend-log row, and the seconds before the first retry (doubled after each)
SPEND_ATTEMPTS = 3
SPEND_RETRY_DELAY = 0.1
#: seconds a request body may take to arrive, once its headers have: 50 MB (the default size limit) at 0.5 MB/s
BODY_TIMEOUT = 100.0
#: the headers of an answer kept with it, and served again with its replays and cache hits
STORED_HEADERS = ("x-gesso-deployment", "x-gesso-response-cost")
#: seconds between sweeps of the stored answers whose time is over (Proxy.sweep)
SWEEP_EVERY = 600.0


def _presented_key(request: Request) -> str:
    """The key a request presents, where litellm looks: ``x-litellm-api-key`` first (the key, or ``Bearer <key>``;
    it wins over ``Authorization``, which may then carry another service's token), then ``Authorization: Bearer
    <key>``, then ``x-api-key`` or ``api-key``."""
    litellm_header = request.headers.get("x-litellm-api-key", "").strip()
    if litellm_header:
        scheme, _, given = litellm_header.partition(" ")
        return given.strip() if scheme.lower() == "bearer" and given.strip() else litellm_header
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        return given.strip()
    return (request.headers.get("x-api-key") or request.headers.get("api-key") or "").strip()


#: how the router sends a call to one deployment, with its options for that try
Send = Callable[[Deployment, dict[str, Any]], Awaitable[ImageResponse]]
#: the route of each operation (``/images/<route>``), as the metrics and the spend rows name it
ROUTES = {"generate": "generations", "edit": "edits", "variation": "variations"}


@attrs.define
class Exchange:
    """One image request as it goes: what its answer, log lines, metrics and spend row are made of, whatever
    becomes of it."""

    route: str
    request_id: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    started: float = attrs.field(factory=time.perf_counter)
    #: the model name as asked (for the log and the spend row), then as checked
    model_name: str = "-"
    status: int = 500
    #: the error type of a request that did not succeed
    failure: str | None = None
    caller: Caller | None = None
    prompt: Any = None
    user: Any = None
    #: what the call holds of its key's budget (gesso.proxy.ledger)
    reservation: Any = None
    #: the call's price, asked for only if it is cancelled after it was sent
    price_of: Callable[[], float | None] | None = None
    #: the deployments the call was handed to
    sent: list[Deployment] = attrs.Factory(list)
    #: the response, and the deployment that gave it
    served: tuple[ImageResponse, Deployment] | None = None
    #: refused because the database did not answer
    away: bool = False
    #: seconds from its arrival to its settling (its answer and its spend row)
    seconds: float = 0.0
    #: the idempotency key this request holds while its call runs (gesso.proxy.idempotency)
    claim: Any = None
    #: answered from what was stored ("idempotency"), the request that paid for it, and its images
    served_from: str | None = None
    replay_of: str | None = None
    replayed_images: int = 0
    #: the exact cache: hit, miss or bypass (None: the model name does not cache); each deployment's key and
    #: policy; whether the answer may be kept (not when the request said Cache-Control: no-store)
    cache_state: str | None = None
    cache_keys: dict[str, tuple[str, Any]] = attrs.Factory(dict)
    cache_store: bool = True
    #: the team's entries of the exact cache (its budget's id: a team made again under a deleted one's id does
    #: not see them)
    team_scope: str | None = None
    #: the rate counts taken before the lookup of a stored answer (the request is counted once, then)
    rated: list[Any] | None = None

    @property
    def response(self) -> ImageResponse | None:
        """The response it was answered with."""
        return self.served[0] if self.served is not None else None

    @property
    def deployment(self) -> Deployment | None:
        """The deployment that answered."""
        return self.served[1] if self.served is not None else None

    @property
    def cancelled(self) -> bool:
        """Its call was cut off: its client left, or the proxy stopped before it finished."""
        return self.failure in ("client_disconnected", "server_shutdown")


@attrs.define
class Call:
    """A request's call, read and checked, for any deployment of its model name."""

    model_name: str
    operation: str
    prompt: Any
    images: list[bytes | str]
    mask: bytes | str | None
    fields: dict[str, Any]
    #: deployment id -> the call prepared (and priced) for that deployment, when it was priced
    prepared: dict[str, Any] = attrs.Factory(dict)
    #: the model as the request gave it
    given: Any = None
    #: its price and prepared calls, once :meth:`Proxy._quote` has made them
    quoted: tuple[float | None, dict[str, Any]] | None = None
    #: the deployments of its model name that have no price (no public table, no model_info price)
    unpriced: list[str] = attrs.Factory(list)
    #: the priced ones whose price is known only from the answer (by the tokens it counts)
    unquoted: list[str] = attrs.Factory(list)


def _spend_row(exchange: Exchange) -> dict[str, Any]:
    """The request's spend-log row (once it is settled): never an image, never a secret."""
    key = exchange.caller.key if exchange.caller is not None else None
    response, deployment = exchange.response, exchange.deployment
    status, user = exchange.status, exchange.user
    return {
        "request_id": exchange.request_id,
        "token_hash": key.token_hash if key is not None else None,
        "key_alias": key.key_alias if key is not None else None,
        "route": exchange.route,
        "model_name": _column_text(exchange.model_name, "model_name"),
        "deployment": deployment.id if deployment is not None else None,
        "model_id": deployment.model if deployment is not None else None,
        "images": len(response.data) if response is not None else exchange.replayed_images,
        "cost": (response.cost or 0.0) if response is not None else 0.0,
        "latency_ms": round(exchange.seconds * 1000, 3),
        "status": "success" if status == 200 else "cancelled" if exchange.cancelled else "failure",
        "status_code": status,
        "error_type": exchange.failure,
        "user": _column_text(user, "user") if isinstance(user, str) else None,
        "team_id": key.team_id if key is not None else None,
        "user_id": key.user_id if key is not None else None,
        "served_from": exchange.served_from,
        "replay_of": exchange.replay_of,
    }


#: the most characters each text column of a spend-log row holds
_LENGTHS = {
    column.name: column.type.length
    for column in store.spend_logs.columns
    if isinstance(column.type, sa.String) and column.type.length is not None
}


def _column_text(text: str, column: str) -> str:
    """Caller text as a spend-log column can always hold it: valid Unicode, within the column's length."""
    limit = _LENGTHS[column]
    unfit = not is_text(text) or len(text) > limit or "\x00" in text  # (PostgreSQL's text holds no NUL)
    return printable(text, limit - 40) if unfit else text


class Proxy:
    """The app's state: config, router, metrics, and each deployment's locked options."""

    def __init__(self, config: ProxyConfig, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.config = config
        self.overrides = {key: dict(value) for key, value in (overrides or {}).items()}
        self.router = Router(config.deployments, config.cooldown, proxy_config.retired(config.deployments))
        self.metrics = Metrics(config.model_names, max_concurrency=api.MAX_CONCURRENCY)
        self.started = time.time()
        #: seconds a request body may take to arrive (its head's deadline is the HTTP protocol's: gesso.proxy.guard)
        self.body_timeout = BODY_TIMEOUT
        self.store = store.Store(config.database_url) if config.database_url else None
        self.ledger = Ledger(self.store) if self.store is not None else None
        self.idempotency: Idempotency | None = None
        self.cache: ExactCache | None = None
        results = config.result_store or proxy_config.default_result_store(config.database_url)
        if self.store is not None and results is not None:
            retention = datetime.timedelta(seconds=config.idempotency_retention)
            # two stores: the cache's is bounded (least recently used removed), an idempotency key's answer is
            # kept until its retention ends (the sweep removes it), whatever the cache holds
            answers = open_store(store_within(results, "keys"), max_bytes=None)
            self.idempotency = Idempotency(self.store.engine, answers, retention)
            entries = open_store(store_within(results, "cache"), max_bytes=config.result_store_max_bytes)
            self.cache = ExactCache(self.store.engine, entries)
        #: asked to stop: calls in flight finish (until :meth:`hurry`), readiness says so
        self.stopping = False
        #: the image requests being answered (:meth:`hurry` cancels them)
        self.answering: set[asyncio.Task[Any]] = set()
        #: when the teams' figures for /metrics were read, and their text
        self._teams_cache: tuple[float, str] | None = None

    def reload(self, config: ProxyConfig, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Serve ``config`` (checked) from now on: requests that arrive from here on use its model names,
        deployments, keys and settings; calls in flight keep the deployments they were routed to. The database,
        the metrics, the limit on calls in flight, the result store and the idempotency keys' retention stay those
        the process started with."""
        self.config = config
        self.overrides = {key: dict(value) for key, value in (overrides or {}).items()}
        self.router = Router(config.deployments, config.cooldown, proxy_config.retired(config.deployments))
        self.metrics.name_models(config.model_names)

    def hurry(self, why: str) -> None:
        """Cancel the calls in flight (the proxy is stopping and will not wait longer): each is answered 503 and
        recorded as cancelled."""
        if self.answering:
            logger.warning("cancelling %d calls in flight (%s)", len(self.answering), why)
        for task in list(self.answering):
            task.cancel()

    async def settled(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until no image request is being answered."""
        deadline = time.monotonic() + timeout
        while self.answering and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # -- auth -------------------------------------------------------------------------------------------

    async def authenticate(self, request: Request) -> Caller:
        """Who is calling: the admin (the master key), a virtual key, or (without a master key, which only a
        loopback bind allows) anyone."""
        given = _presented_key(request)
        master = self.config.master_key
        if master is not None and given and hmac.compare_digest(given.encode(), master.encode()):
            return Caller(admin=True)
        if given and self.ledger is not None:
            key = await self._ledger(self.ledger.key(store.hash_key(given)))
            if key is not None:
                if key.blocked:  # read at most ledger.KEY_TTL seconds ago: refused on every replica within it
                    raise ProxyError(401, f"This key ({key.key_alias or key.key_name}) is blocked; the master key "
                                     "can unblock it (POST /key/unblock)", type="auth_error",
                                     code="key_blocked")  # fmt: skip
                if key.expires is not None and key.expires <= store.now():
                    raise ProxyError(401, f"This key expired at {key.expires.isoformat()}", type="auth_error",
                                     code="expired_key")  # fmt: skip
                return Caller(key=key)
        if master is None:
            return Caller(admin=True)  # no master key: served on loopback only, to anyone who reaches it
        if not given:
            raise ProxyError(401, "Missing API key: send Authorization: Bearer <key> (or x-litellm-api-key: <key>)",
                             type="auth_error", code="missing_key")  # fmt: skip
        raise ProxyError(401, "Invalid API key", type="auth_error", code="invalid_api_key")

    async def admit(self, path: list[store.Holder], quote: float | None, images: int = 1,
                    rated: bool = False) -> Any:  # fmt: skip
        """The rate limits and budgets of a call's path (its key, member, user, team and end customer; their
        model lists were checked before the call was priced), checked before anything is sent: every budget
        holds the call's price (``quote``) at once, or the most restrictive refuses; what is held is settled when
        the request's spend row is written. ``rated``: the request was counted already, so only its images are
        counted now (and a refusal gives back only those: the caller gives back the request's count)."""
        if not path or self.ledger is None:
            return None
        for holder in path:  # more images than a level allows a minute would be refused every minute: a 400
            if holder.ipm_limit is not None and images > holder.ipm_limit:
                who = "this key" if holder.level == "key" else f"{holder.level} {holder.label}"
                raise ProxyError(400, f"n: {images} images, more than {who} may make in a minute (ipm_limit "
                                 f"{holder.ipm_limit})", type="invalid_request_error", param="n",
                                 code="ipm_limit", extra={"level": holder.level})  # fmt: skip
        taken = await self._rate(path, images, requests=0 if rated else 1)
        try:
            return await self._ledger(self.ledger.hold(path, quote or 0.0))
        except BaseException as exc:
            self.ledger.refund(taken)  # not admitted: its rate counts go back
            if not isinstance(exc, store.BudgetExceeded):
                raise
            now = exc.key or path[0]
            reset = (
                f"; it resets at {now.budget_reset_at.isoformat()}" if now.budget_reset_at else "; it does not reset"
            )
            raise ProxyError(
                429, f"Budget exceeded for {now.level} {now.label}: spent {now.spend:.4f} of "
                f"{now.max_budget or 0.0:.4f} USD ({now.reserved:.4f} held by calls in flight and replicas' leases), "
                f"this call costs {exc.amount:.4f}{reset}", type="budget_exceeded", code="budget_exceeded",
                headers={"x-should-retry": "false"}, extra={"level": now.level},
            ) from None  # fmt: skip

    async def _rate(self, path: list[store.Holder], images: int, requests: int = 1) -> list[Any]:
        """Count ``requests`` requests (one, or none when counted before) of ``images`` images against the rate
        limits of ``path``; a 429 naming the level that refuses it. What was counted (for a refund)."""
        assert self.ledger is not None
        refused, taken = await self._ledger(self.ledger.limit(path, images, requests))
        if refused is not None:
            holder, name, limit, wait = refused
            who = "this key" if holder.level == "key" else f"{holder.level} {holder.label}"
            unit = "requests" if name == "rpm_limit" else "images"
            raise ProxyError(
                429, f"Rate limit exceeded for {who}: {limit} {unit} per minute", type="rate_limit_error",
                code=name, headers={"retry-after": str(math.ceil(wait))}, extra={"level": holder.level},
            )  # fmt: skip
        return list(taken)

    async def owners(self, caller: Caller) -> directory.Owners:
        """A virtual key's team, membership and owner; a blocked team, or a key whose owner left its team, is
        refused here."""
        key = caller.key
        if key is None or self.ledger is None:
            return directory.NOBODY
        owners: directory.Owners = await self._ledger(self.ledger.owners(key))
        team = owners.team
        if team is not None and team.blocked:
            raise ProxyError(401, f"This key's team ({team.label}) is blocked; the master key can unblock it "
                             "(POST /team/unblock)", type="auth_error", code="team_blocked")  # fmt: skip
        if team is not None and key.user_id is not None and owners.member is None:
            raise ProxyError(403, f"This key's owner ({key.user_id}) is no longer a member of its team "
                             f"({team.label})", type="permission_error", code="team_member_removed")  # fmt: skip
        return owners

    async def path(self, caller: Caller, owners: directory.Owners, user: Any) -> list[store.Holder]:
        """The budgets and limits a call holds at once: its key, its owner's membership of the key's team, its
        owner, its team, and its end customer (the request's ``user``, when the proxy keeps customers)."""
        path: list[store.Holder] = []
        if caller.key is not None:
            path.append(caller.key)
            path += [level.budget for level in (owners.member, owners.user, owners.team) if level is not None]
        if isinstance(user, str) and user and self.ledger is not None:
            default = self.config.max_end_user_budget
            if not directory.valid_id(user):  # no customer has such an id (the routes take none)
                if default is None:
                    return path
                # (with a default budget every customer is held to one: a user that cannot be one is refused)
                raise ProxyError(400, "user: printable text of 1 to 256 characters (this proxy budgets each end "
                                 "customer by it: litellm_settings.max_end_user_budget)", type="invalid_request_error",
                                 param="user", code="invalid_user")  # fmt: skip
            customer = await self._ledger(self.ledger.customer(user, default))
            if customer is not None:
                if customer.blocked:
                    raise ProxyError(403, f"The end customer {printable(user)!r} (the request's user) is blocked",
                                     type="permission_error", param="user", code="customer_blocked")  # fmt: skip
                path.append(customer.budget)
        return path

    async def _ledger(self, pending: Any) -> Any:
        """A ledger step of admission; a database that does not answer is a 503 before anything is sent."""
        try:
            return await pending
        except DatabaseUnavailable as exc:
            raise ProxyError(503, f"The proxy's database did not answer ({exc}); nothing was sent or charged. "
                             "Try again shortly", type="api_error", code="database_unavailable",
                             headers={"retry-after": str(max(1, round(DB_WAIT)))}) from None  # fmt: skip

    # -- one image request --------------------------------------------------------------------------------

    async def images(self, request: Request, operation: str) -> Response:
        """``POST /images/generations``, ``/images/edits`` or ``/images/variations``: the request is admitted
        (:meth:`_admitted`), sent with the router's retries and fallbacks (:meth:`_sender`), answered
        (:meth:`_answer`, or :meth:`_failed` and :meth:`_gone`), and recorded whatever happened (:meth:`_settle`)."""
        exchange = Exchange(ROUTES[operation])
        span = telemetry.start_server(request.method, request.url.path, request.headers)  # None: no OpenTelemetry
        self.metrics.in_flight += 1
        task = asyncio.current_task()
        if task is not None:
            self.answering.add(task)
        try:
            call, path = await self._admitted(request, operation, exchange)
            if path and self.ledger is not None and self._looks_up(request, call):
                # a replay or a hit is a request too: rpm_limit counts it before anything is looked up or waited
                # for (no images are made: ipm_limit counts them if the call is made)
                exchange.rated = await self._rate(path, 0)
            replay = await self._idempotent(request, exchange, call)
            if replay is not None:
                return self._replayed(exchange, replay, "idempotency")
            hit = await self._cached(request, exchange, call)
            if hit is not None:
                answer = self._replayed(exchange, hit, "cache")
                if exchange.claim is not None:  # the hit is this key's answer too
                    await self._keep(exchange, answer)
                return answer
            await self._hold(call, path, exchange)
            sending = self.router.call(call.model_name, self._sender(call, exchange))
            # a client that leaves cancels its call, unless it holds an idempotency key: then the call runs on and
            # its answer is kept, so the client's retry gets it rather than paying for a second call
            served = await (sending if exchange.claim is not None else self._until_disconnect(request, sending))
            exchange.served = served
            answer = self._answer(exchange, *served)
            if exchange.cache_state is not None:
                answer.headers["x-gesso-cache"] = exchange.cache_state
                await self._cache_answer(exchange, answer)
            if exchange.claim is not None:
                await self._keep(exchange, answer)
            return answer
        except asyncio.CancelledError:
            if self.stopping:  # cancelled by a stop that would not wait longer (:meth:`hurry`): answered
                return self._stopped(exchange)
            self._gone(exchange)
            raise
        except Exception as exc:
            if exchange.rated and self.ledger is not None:  # refused before it was admitted: not counted
                self.ledger.refund(exchange.rated)
            return self._failed(exchange, exc)
        finally:
            self.answering.discard(task)
            self.metrics.in_flight -= 1
            if exchange.claim is not None and self.idempotency is not None:  # not answered: a retry runs again
                with contextlib.suppress(Exception):
                    await self.idempotency.abandon(exchange.claim)
            await self._settle(exchange)
            if span is not None:
                span.end(exchange.status, _span_attributes(exchange))
            if logger.isEnabledFor(logging.INFO):
                _log_access(exchange, request.method, request.url.path)

    async def _admitted(self, request: Request, operation: str, exchange: Exchange) -> tuple[Call, list[Any]]:
        """The request's caller, body and call, each checked, and the budgets its call would hold (its key's, its
        team's, ...: :meth:`_hold` holds them). Nothing is sent."""
        exchange.caller = caller = await self.authenticate(request)
        images: list[bytes | str] = []
        mask: bytes | str | None = None
        if operation == "generate":
            fields = await self._json(request)
        else:
            fields, images, mask = await self._form(request)
        given = fields.pop("model", None)
        exchange.model_name = given if isinstance(given, str) else "-"  # as asked, for the log and the spend row
        exchange.model_name = model_name = self._model_name(given, caller)
        exchange.prompt = prompt = fields.pop("prompt", None)
        exchange.user = user = fields.get("user")
        _check_text(prompt, "prompt")
        _check_text(user, "user")
        owners = await self.owners(caller)
        self._may_use(caller, model_name, owners)  # before the model's own checks: they would describe it
        call = Call(model_name, operation, prompt, images, mask, fields)
        call.given = given
        if owners.team is not None:
            exchange.team_scope = owners.team.budget.budget_id
        return call, await self.path(caller, owners, user)

    def _looks_up(self, request: Request, call: Call) -> bool:
        """Whether the request may be answered from what is stored: it sends an idempotency key, or its model
        name caches."""
        if idempotency.HEADER.lower() in request.headers:
            return True
        groups = self.router.groups.get(call.model_name, ())
        return self.cache is not None and any(self.config.cache_of(d) is not None for d in groups)

    async def _hold(self, call: Call, path: list[Any], exchange: Exchange) -> None:
        """The call priced and, for a virtual key, admitted against the rate limits and budgets of ``path`` (what
        it holds is kept in ``exchange``)."""
        quote = None
        if path:
            quote, call.prepared = call.quoted or self._quote(call)
            budgeted = [holder for holder in path if holder.max_budget is not None]
            if budgeted and call.unpriced:  # a cost it cannot count would pass every budget: refused
                who = "this key" if budgeted[0].level == "key" else f"{budgeted[0].level} {budgeted[0].label}"
                raise ProxyError(400, f"Model {call.model_name!r} has no price (deployment {call.unpriced[0]}: no "
                                 "public price, and no model_info.output_cost_per_image or input_cost_per_token/"
                                 f"output_cost_per_token), so {who}, which has a budget, cannot use it",
                                 type="invalid_request_error", param="model", code="unpriced_model")  # fmt: skip
            if budgeted and call.unquoted:  # priced by the tokens its answer counts: no budget can hold it first
                who = "this key" if budgeted[0].level == "key" else f"{budgeted[0].level} {budgeted[0].label}"
                raise ProxyError(400, f"Model {call.model_name!r} is priced by the tokens its answer counts, so its "
                                 f"cost is not known before the call and {who}, which has a budget, cannot hold it: "
                                 "use a key without a budget, or price the deployment per image (model_info."
                                 "output_cost_per_image)", type="invalid_request_error", param="model",
                                 code="cost_unknown_before_call")  # fmt: skip
        exchange.price_of = functools.partial(_given_or, quote, self._quote, call)
        n = call.fields.get("n", 1)
        exchange.reservation = await self.admit(path, quote, n if type(n) is int and n > 0 else 1,
                                                exchange.rated is not None)  # fmt: skip
        exchange.rated = None  # admitted: the request's count stands

    async def _idempotent(self, request: Request, exchange: Exchange, call: Call) -> Replay | None:
        """With an ``Idempotency-Key``: the stored answer of the request that ran it (waiting while it runs), or
        None once this request holds the key (``exchange.claim``); without one, None."""
        key = idempotency.read_key(request.headers)
        if key is None:
            return None
        if self.idempotency is None:
            raise ProxyError(400, f"{idempotency.HEADER}: this proxy keeps no database (general_settings."
                             "database_url), so it cannot keep answers for idempotency keys",
                             type="invalid_request_error", param=idempotency.HEADER,
                             code="idempotency_unavailable")  # fmt: skip
        caller = exchange.caller
        who = caller.key.token_hash if caller is not None and caller.key is not None else (
            "master" if self.config.master_key is not None else "anyone")  # fmt: skip
        call.quoted = call.quoted or self._quote(call)  # checked as it will be sent: a bad body claims no key
        print_ = idempotency.fingerprint(call.operation, call.given, call.prompt, call.fields, call.images, call.mask)
        try:
            outcome = await self._until_disconnect(
                request, self.idempotency.claim(who, key, print_, exchange.request_id, idempotency.WAIT)
            )
        except ClientGone:  # the key may have been claimed just as the client left: given back, not held on
            with contextlib.suppress(Exception):
                await self.idempotency.release(exchange.request_id)
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise ProxyError(503, f"The proxy's database did not answer ({type(exc).__name__}); nothing was sent or "
                             "charged. Try again shortly", type="api_error", code="database_unavailable",
                             headers={"retry-after": "1"}) from None  # fmt: skip
        if isinstance(outcome, Replay):
            return outcome
        exchange.claim = outcome
        return None

    def _replayed(self, exchange: Exchange, replay: Replay, source: str) -> Response:
        """A stored answer, as it was (its images, its headers), marked as served again (``source``: an
        idempotency key's repeat, or the exact cache's hit); it costs nothing."""
        exchange.status = replay.status
        exchange.served_from, exchange.replay_of = source, replay.request_id
        exchange.replayed_images = replay.images
        headers = {**replay.headers, "x-request-id": exchange.request_id, "x-gesso-replay-of": replay.request_id}
        if source == "idempotency":
            headers["idempotent-replayed"] = "true"
        else:
            headers["x-gesso-cache"] = "hit"
        return Response(replay.body, status_code=replay.status, headers=headers, media_type="application/json")

    async def _cached(self, request: Request, exchange: Exchange, call: Call) -> Replay | None:
        """The exact cache's answer for ``call``, when its model name caches, its bodies fix their seed, a live
        entry of its scope has it, and the request did not say ``Cache-Control: no-cache``; else None (with
        ``exchange`` noting what to keep after the call)."""
        if self.cache is None:
            return None
        policies = [(d, self.config.cache_of(d)) for d in self.router.groups[call.model_name]]
        if not any(policy is not None for _, policy in policies):
            return None
        control = cached.directives(request.headers)
        call.quoted = call.quoted or self._quote(call)  # (checked as it will be sent: bad input is refused here)
        prepared = call.quoted[1]
        for deployment, policy in policies:
            if policy is not None:
                # the model name asked for is part of the key: a caller allowed one name never gets another's
                scope = f"{self._cache_scope(exchange, policy.scope)}\x00{call.model_name}"
                key = api.cache_key(prepared[deployment.id], scope)
                if key is not None:
                    exchange.cache_keys[deployment.id] = (key, policy)
        exchange.cache_store = "no-store" not in control
        exchange.cache_state = "miss" if exchange.cache_keys and "no-cache" not in control else "bypass"
        hit = None
        if exchange.cache_state == "miss":
            keys = list(dict.fromkeys(key for key, _ in exchange.cache_keys.values()))
            try:
                hit = await self.cache.find(keys)
            except sa.exc.SQLAlchemyError as exc:  # a miss: the call is made, as without a cache
                logger.warning("request %s: the cache could not be read (%s)", exchange.request_id, type(exc).__name__)
            if hit is not None:
                exchange.cache_state = "hit"
        self.metrics.cached(call.model_name, exchange.cache_state)
        return hit

    def _cache_scope(self, exchange: Exchange, scope: str) -> str:
        """Whose entries a lookup sees: the virtual key's, its team's (a key in no team: its own), or everyone's."""
        key = exchange.caller.key if exchange.caller is not None else None
        if scope == "global":
            return "global"
        if scope == "team" and key is not None and exchange.team_scope is not None:
            return f"team:{exchange.team_scope}"
        if key is not None:
            return f"key:{key.token_hash}"
        return "master" if self.config.master_key is not None else "anyone"

    async def _cache_answer(self, exchange: Exchange, answer: Response) -> None:
        """A miss's answer kept for the next identical request (unless it said ``Cache-Control: no-store``); a
        failure to keep it is logged: the answer stands."""
        deployment, response = exchange.deployment, exchange.response
        if self.cache is None or deployment is None or response is None or not exchange.cache_store:
            return
        entry = exchange.cache_keys.get(deployment.id)
        if entry is None or exchange.cache_state != "miss":
            return
        key, policy = entry
        kept = {name: answer.headers[name] for name in STORED_HEADERS}
        try:
            await self.cache.keep(key, model_name=exchange.model_name, deployment=deployment.id,
                                  request_id=exchange.request_id, ttl=policy.ttl, headers=kept,
                                  images=len(response.data), body=bytes(answer.body))  # fmt: skip
        except Exception:
            logger.exception("request %s: its answer could not be kept in the cache", exchange.request_id)

    async def _keep(self, exchange: Exchange, answer: Response) -> None:
        """A successful answer stored for its idempotency key's repeats (a failure to store it is logged: the
        answer stands, and a repeat runs again)."""
        assert self.idempotency is not None
        claim, exchange.claim = exchange.claim, None
        kept = {name: answer.headers[name] for name in (*STORED_HEADERS, "x-gesso-cache") if name in answer.headers}
        images = len(exchange.response.data) if exchange.response is not None else exchange.replayed_images
        try:
            await self.idempotency.complete(claim, answer.status_code, kept, images, bytes(answer.body))
        except Exception:
            logger.exception("request %s: its answer could not be kept for its idempotency key", exchange.request_id)
            with contextlib.suppress(Exception):
                await self.idempotency.abandon(claim)

    def _sender(self, call: Call, exchange: Exchange) -> Send:
        """What the router sends ``call`` with, once for each deployment it tries (``overrides``: the router's
        options for that try)."""

        async def send(deployment: Deployment, overrides: dict[str, Any]) -> ImageResponse:
            exchange.sent.append(deployment)
            try:  # prepared once: the call priced for the budget is the one sent (unless the router changed it)
                prepared = call.prepared.get(deployment.id) if not overrides else None
                if prepared is None:
                    prepared = self._prepare(deployment, overrides, call)
                return await api.asend(prepared)
            except (errors.AuthenticationError, errors.PermissionDeniedError) as exc:
                # the deployment's own credentials were refused: the caller's key is fine, so not a 401/403
                raise errors.ProviderError(
                    f"The provider refused the proxy deployment's credentials ({deployment.id}): {exc.message}",
                    model=exc.model,
                ) from exc

        return send

    def _answer(self, exchange: Exchange, response: ImageResponse, deployment: Deployment) -> Response:
        """A served call's answer: its images, and what it cost in the headers."""
        exchange.status = 200
        self.metrics.paid(exchange.model_name, len(response.data), response.cost)
        headers = {
            "x-request-id": exchange.request_id,
            "x-gesso-deployment": deployment.id,
            "x-gesso-response-cost": "" if response.cost is None else f"{response.cost:.6f}",
        }
        return json_response(response.to_dict(), 200, headers)

    def _failed(self, exchange: Exchange, exc: Exception) -> Response:
        """The answer to a request that failed: its error (a bug of the proxy's is a 500 that says nothing
        more), or nothing at all when the client has gone."""
        if isinstance(exc, ClientGone):  # answered with nothing (uvicorn drops sends to a gone client): no error
            self._gone(exchange)
            return Response(status_code=499)
        if not isinstance(exc, errors.GessoError):
            exchange.failure = "internal_error"
            self.metrics.error("internal_error")
            logger.error("request %s %s failed", exchange.request_id, exchange.route, exc_info=exc)
            exc = ProxyError(500, "Internal error in the proxy", type="internal_error")
        else:
            exchange.status = exc.status_code
            exchange.failure = exc.type
            exchange.away = exc.code == "database_unavailable"
            self.metrics.error(exc.type)
        return error_response(exc, exchange.request_id)

    def _gone(self, exchange: Exchange) -> None:
        """The client went away: its call was cancelled."""
        exchange.status, exchange.failure = 499, "client_disconnected"
        self.metrics.error("client_disconnected")

    def _stopped(self, exchange: Exchange) -> Response:
        """The answer to a request whose call the stopping proxy cancelled: a 503 to retry elsewhere."""
        exchange.status, exchange.failure = 503, "server_shutdown"
        self.metrics.error("server_shutdown")
        error = ProxyError(503, "The proxy is stopping and cancelled this call before it finished; try again",
                           type="api_error", code="server_shutdown", headers={"retry-after": "1"})  # fmt: skip
        return error_response(error, exchange.request_id)

    async def _settle(self, exchange: Exchange) -> None:
        """The request's metrics and, with a database, its spend row (and what it held of its key's budget)."""
        exchange.seconds = seconds = time.perf_counter() - exchange.started
        self.metrics.observe(exchange.route, exchange.model_name, exchange.status, seconds)
        if self.store is None:
            return
        row = _spend_row(exchange)
        if exchange.cancelled and exchange.sent and exchange.price_of is not None:
            # the provider had the call when it was cut off: it may well have charged for it, so the call is
            # priced as sent (a client cannot spend a provider's money by hanging up in time)
            row["cost"] = _cancelled_price(exchange.price_of, exchange.request_id)
        prompt = exchange.prompt
        if self.config.store_prompts and isinstance(prompt, str):
            fits = is_text(prompt) and "\x00" not in prompt
            row["prompt"] = prompt if fits else printable(prompt, len(prompt) * 12)
        if self.ledger is not None and exchange.reservation is not None:
            self.ledger.finished(exchange.reservation, row["cost"])
        await self._record(
            row, exchange.reservation, exchange.request_id, paid=exchange.served is not None, wait=not exchange.away
        )

    async def _record(
        self, row: dict[str, Any], reservation: Any, request_id: str, *, paid: bool, wait: bool = True
    ) -> None:
        """Write the request's spend-log row (and settle what it held), trying again after a failure: a database
        that is slow or away keeps the row queued (the answer waits for it at most ``store.ROW_WAIT`` seconds),
        and one that refuses it is tried again before the loss is logged and counted."""
        assert self.store is not None
        for attempt in range(1, SPEND_ATTEMPTS + 1):
            try:  # shielded: written (and settled) even if cancelled
                # (a refusal because the database is away is answered at once: its row waits for the database)
                if not await self.store.finish(row, reservation, **({} if wait else {"wait": 0.0})) and wait:
                    logger.warning("request %s: its spend-log row waits for the database (%d queued); answered",
                                   request_id, self.store.queued)  # fmt: skip
                return
            except Exception:
                if attempt == SPEND_ATTEMPTS:  # the answer stands (a paid call's images are returned); loudly
                    self.metrics.error("spend_log_failed")
                    what = "its images were paid for and are returned" if paid else "nothing was paid"
                    logger.exception("request %s: its spend-log row could not be written (%s)", request_id, what)
                    if self.ledger is not None and reservation is not None:
                        self.ledger.settled([(reservation, row["cost"])])  # never written: no longer waited for
                    return
                await asyncio.sleep(SPEND_RETRY_DELAY * attempt)

    def _model_name(self, given: Any, caller: Caller) -> str:
        """The configured model name the request asks for; a 400 when it names none, a 404 (listing the
        models the caller may use) when it names one not served."""
        if not isinstance(given, str) or not given:
            raise ProxyError(400, "model: required, one of: " + ", ".join(self._usable(caller)),
                             type="invalid_request_error", param="model", code="missing_model")  # fmt: skip
        if not is_text(given):
            raise ProxyError(400, "model: is not valid Unicode text", type="invalid_request_error", param="model",
                             code="invalid_text")  # fmt: skip
        if given not in self.router.groups:
            raise model_not_found(given, self._usable(caller))
        return given

    def _may_use(self, caller: Caller, model_name: str, owners: directory.Owners | None = None) -> None:
        """A 403 unless the key, its team and its owner all allow ``model_name`` (an empty list allows all)."""
        key = caller.key
        if key is not None and key.models and model_name not in key.models:
            raise ProxyError(403, f"This key may not use model {model_name!r}; it may use: {', '.join(key.models)}",
                             type="permission_error", param="model", code="key_model_access_denied")  # fmt: skip
        for level, entity in (("team", owners.team if owners else None), ("user", owners.user if owners else None)):
            if entity is not None and entity.models and model_name not in entity.models:
                raise ProxyError(403, f"This key's {level} may not use model {model_name!r}; it may use: "
                                 f"{', '.join(entity.models)}", type="permission_error", param="model",
                                 code=f"{level}_model_access_denied")  # fmt: skip

    def _usable(self, caller: Caller, owners: directory.Owners | None = None) -> list[str]:
        """The configured model names ``caller`` may use (a virtual key, its team and its owner may each be limited
        to some)."""
        allowed = [caller.key.models if caller.key is not None else ()]
        if owners is not None:
            allowed += [entity.models for entity in (owners.team, owners.user) if entity is not None]
        return [name for name in self.config.model_names if all(not models or name in models for models in allowed)]

    def _trusted(
        self, deployment: Deployment, overrides: Mapping[str, Any], fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The deployment's own kwargs (its config, the emulator's options and the router's for this attempt):
        configuration, where a request's fields never go (they travel as :class:`Untrusted`). A deployment's image
        store serves the requests that ask for ``url`` images; the others get theirs inline."""
        kwargs = {**deployment.params, **self.overrides.get(deployment.id, {}), **overrides}
        if fields.get("response_format", kwargs.get("response_format")) != "url":
            kwargs.pop("image_store", None)
            kwargs.pop("image_url_expiry", None)
        return kwargs

    def _quote(self, call: Call) -> tuple[float | None, dict[str, Any]]:
        """The most ``call`` can cost on any of its deployments, and the call prepared for each (checked as it
        will be sent: bad input is refused here, before a budget is touched)."""
        prices, prepared = [], {}
        call.unpriced, call.unquoted = [], []
        for deployment in self.router.groups[call.model_name]:
            ready = self._prepare(deployment, {}, call)
            prepared[deployment.id] = ready
            prices.append(api.price(ready))
            if not pricing.has_price(ready.request.model):
                call.unpriced.append(deployment.id)
            elif prices[-1] is None:  # a model priced by tokens has a price, but no quote before the answer
                call.unquoted.append(deployment.id)
        known = [p for p in prices if p is not None]
        return (max(known) if known else None), prepared

    def _prepare(self, deployment: Deployment, overrides: Mapping[str, Any], call: Call) -> Any:
        """``call`` for ``deployment``: its configuration as kwargs, the request's fields as :class:`Untrusted`."""
        kwargs = self._trusted(deployment, overrides, call.fields)
        model = kwargs.pop("model")
        untrusted = Untrusted(call.fields, granted=deployment.caller_params)
        inputs: dict[str, Any] = (
            {"image": call.images or None, "mask": call.mask} if call.operation != "generate" else {}
        )
        return api.prepare(model, call.prompt, operation=call.operation, untrusted=untrusted, **inputs, **kwargs)

    async def _until_disconnect(self, request: Request, call: Awaitable[T]) -> T:
        """Run ``call``; if the client disconnects first, cancel it (its HTTP request and retries with it)."""
        task = asyncio.ensure_future(call)
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            # a cancellation can be lost (asyncio.wait_for before Python 3.12 drops it when what it waits for
            # completes at that moment, as a new connection does): repeat it until the call has ended
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.05)
            if not task.cancelled():
                task.exception()  # retrieved: a call that failed as the client left is not logged as lost
            raise ClientGone
        finally:
            watcher.cancel()
            if not task.done():
                task.cancel()

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_request_bytes
        note = f"the proxy takes ({limit} bytes; general_settings.max_request_size_mb)"
        return await read_body(request, limit=limit, timeout=self.body_timeout, limit_note=note)

    async def _json(self, request: Request) -> dict[str, Any]:
        return json_object(await self._body(request))

    async def _form(self, request: Request) -> tuple[dict[str, Any], list[bytes | str], bytes | str | None]:
        from starlette.formparsers import MultiPartException, MultiPartParser

        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ProxyError(400, "Edits and variations take multipart/form-data (image, mask, and fields)",
                             type="invalid_request_error", code="invalid_content_type")  # fmt: skip
        body = await self._body(request)

        async def stream() -> AsyncGenerator[bytes, None]:
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=64, max_fields=256).parse()
        except (MultiPartException, ValueError) as exc:
            raise ProxyError(400, f"Malformed multipart body: {exc}", type="invalid_request_error",
                             code="invalid_multipart") from None  # fmt: skip
        fields: dict[str, Any] = {}
        images: list[bytes | str] = []
        mask: bytes | str | None = None
        try:
            for name, value in form.multi_items():
                if name in ("image", "image[]"):
                    images.append(await _bytes(value, name))
                elif name in ("mask", "mask[]"):
                    if mask is not None:
                        raise ProxyError(400, "mask: give one mask", type="invalid_request_error", param="mask")
                    mask = await _bytes(value, name)
                elif not isinstance(value, str):
                    raise ProxyError(400, f"{name}: a file where a value was expected", type="invalid_request_error",
                                     param=name)  # fmt: skip
                elif name in fields:
                    raise ProxyError(400, f"{name}: given twice", type="invalid_request_error", param=name)
                else:
                    fields[name] = value if name in TEXT_FIELDS else _form_value(value)
        finally:
            await form.close()
        return fields, images, mask

    # -- the other routes ---------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        try:
            caller = await self.authenticate(request)
            owners = await self.owners(caller)
        except errors.GessoError as error:
            return error_response(error, uuid.uuid4().hex)
        created = int(self.started)
        data = [{"id": name, "object": "model", "created": created, "owned_by": "gesso"}
                for name in self._usable(caller, owners)]  # fmt: skip
        return JSONResponse({"object": "list", "data": data})

    async def liveliness(self, request: Request) -> Response:
        return JSONResponse("I'm alive!")

    async def probe(
        self, deployment: Deployment, prompt: str
    ) -> tuple[ImageResponse | None, errors.GessoError | None, float]:
        """One small generation on ``deployment`` (``GET /health``'s paid check): paid, counted and recorded as a
        spend row of the route ``health`` (no key's budget pays for it); its response or error, and seconds."""
        exchange = Exchange("health", model_name=deployment.model_name)
        call = Call(deployment.model_name, "generate", prompt, [], None, {"n": 1})
        exchange.sent.append(deployment)
        error = None
        try:
            response = await api.asend(self._prepare(deployment, {"max_retries": 0}, call))
        except errors.GessoError as exc:
            exchange.status, exchange.failure, error = exc.status_code, exc.type, exc
            self.metrics.error(exc.type)
        else:
            exchange.status, exchange.served = 200, (response, deployment)
            self.metrics.paid(deployment.model_name, len(response.data), response.cost)
        exchange.seconds = time.perf_counter() - exchange.started
        if self.store is not None:
            await self._record(_spend_row(exchange), None, exchange.request_id, paid=error is None)
        return exchange.response, error, exchange.seconds

    async def sweep(self, every: float = SWEEP_EVERY) -> None:
        """Every ``every`` seconds: idempotency keys past their retention (and claims their replica left) and
        expired cache entries removed, rows and bytes (each replica sweeps; what one removes, the others find
        gone)."""
        while True:
            await asyncio.sleep(every)
            try:
                assert self.idempotency is not None and self.cache is not None
                gone = await self.idempotency.purge()
                expired = await self.cache.expire()
                if gone or expired:
                    logger.info("swept %d idempotency keys and %d cache entries past their time", gone, expired)
            except Exception as exc:  # tried again at the next sweep
                logger.warning("the sweep of stored answers failed: %s", type(exc).__name__)

    async def cache_purge(self, request: Request) -> Response:
        """``POST /cache/purge`` (the master key's): the exact cache's entries removed, all of them or those of
        ``model`` (a model name) made more than ``older_than`` (a duration: 30m, 24h, 7d) ago, with every expired
        one; answers how many. Entries are never listed."""
        request_id = uuid.uuid4().hex
        try:
            caller = await self.authenticate(request)
            if not caller.admin or self.config.master_key is None:
                raise ProxyError(401, "Only the master key can purge the cache", type="auth_error")
            if self.cache is None:
                raise ProxyError(501, "This proxy has no database (general_settings.database_url), so no cache",
                                 type="api_error")  # fmt: skip
            body = await self._body(request)
            fields = json_object(body) if body.strip() else {}
            unknown = sorted(str(name) for name in fields if name not in ("model", "older_than"))
            if unknown:
                raise ProxyError(400, f"{printable(unknown[0])}: unknown (this route takes model and older_than)",
                                 type="invalid_request_error", param=printable(unknown[0]))  # fmt: skip
            model = fields.get("model")
            if model is not None and not (isinstance(model, str) and is_text(model) and model.isprintable()
                                          and 0 < len(model) <= 256):  # fmt: skip
                raise ProxyError(400, "model: a model name", type="invalid_request_error", param="model")
            older = fields.get("older_than")
            try:
                older_than = None if older is None else store.parse_duration(older, "older_than").total_seconds()
            except ValueError as exc:
                raise ProxyError(400, str(exc), type="invalid_request_error", param="older_than") from None
            deleted = await self.cache.purge(model, older_than)
            return json_response({"deleted": deleted}, 200, {"x-request-id": request_id})
        except errors.GessoError as exc:
            return error_response(exc, request_id)
        except ClientGone:
            return Response(status_code=499)

    async def readiness(self, request: Request) -> Response:
        return await probes.readiness(self, request)

    async def health(self, request: Request) -> Response:
        return await probes.health(self, request)

    async def metrics_text(self, request: Request) -> Response:
        if self.config.metrics_require_auth:  # general_settings.metrics_require_auth: the master key only
            try:
                if not (await self.authenticate(request)).admin:
                    raise ProxyError(401, "Only the master key can read /metrics (general_settings."
                                     "metrics_require_auth)", type="auth_error", code="not_admin")  # fmt: skip
            except errors.GessoError as error:
                return error_response(error, uuid.uuid4().hex)
        text = self.metrics.render()
        if self.ledger is not None:
            text += await self._teams_text()
        return PlainTextResponse(text, media_type=self.metrics.content_type)

    async def _teams_text(self) -> str:
        """The teams' spend and budgets for ``/metrics`` (read at most every 5 s; nothing while the database does
        not answer: the process's own metrics are still served)."""
        moment = time.monotonic()
        if self._teams_cache is not None and moment - self._teams_cache[0] < 5.0:
            return self._teams_cache[1]
        assert self.ledger is not None
        try:
            teams = await within(self.ledger.directory.list_teams(size=MAX_TEAMS), DB_WAIT)
        except Exception as exc:
            logger.warning("/metrics: the teams' spend could not be read (%s)", type(exc).__name__)
            return ""
        text = teams_text((t.team_id, t.team_alias, t.budget.spend, t.budget.max_budget) for t in teams)
        self._teams_cache = (moment, text)
        return text

    async def openapi(self, request: Request) -> Response:
        from gesso.proxy.openapi import spec

        return JSONResponse(spec(self.config.model_names))


def _span_attributes(exchange: Exchange) -> dict[str, Any]:
    """gesso's attributes of a request's server span (gesso.telemetry): never the key, the prompt or an image."""
    response, deployment = exchange.response, exchange.deployment
    return {
        "gesso.request_id": exchange.request_id,
        "gesso.model_name": exchange.model_name,
        "gesso.deployment": deployment.id if deployment is not None else None,
        "gesso.attempts": len(exchange.sent),
        "gesso.response.images": len(response.data) if response is not None else None,
        "gesso.cost.usd": response.cost if response is not None else None,
        "error.type": exchange.failure,
        "gesso.cache": exchange.cache_state,
        "gesso.served_from": exchange.served_from,
    }


def _given_or(
    given: float | None, quote: Callable[[Call], tuple[float | None, dict[str, Any]]], call: Call
) -> float | None:
    """``given``, the price ``call`` was quoted at, or (when it was not quoted) its ``quote`` now."""
    return given if given is not None else quote(call)[0]


def _cancelled_price(price_of: Callable[[], float | None], request_id: str) -> float:
    try:
        return float(price_of() or 0.0)
    except Exception:  # (it was priced before, or checked as it was sent: this does not fail, but must not raise)
        logger.exception("request %s: its cancelled call could not be priced", request_id)
        return 0.0


def _log_access(exchange: Exchange, method: str, path: str) -> None:
    """The request's access line: who asked for what, what became of it; never the key, the prompt or an image
    (caller text in it is escaped: gesso.proxy.logs.Line)."""
    response, deployment = exchange.response, exchange.deployment
    key = exchange.caller.key if exchange.caller is not None else None
    gone = ": the client went away; call cancelled" if exchange.status == 499 else ""
    fields = {
        "request_id": exchange.request_id,
        "route": exchange.route,
        "model_name": exchange.model_name,
        "deployment": deployment.id if deployment is not None else None,
        "key_alias": key.key_alias if key is not None else None,
        "team": getattr(key, "team_id", None),
        "status": exchange.status,
        "error_type": exchange.failure,
        "images": len(response.data) if response is not None else exchange.replayed_images,
        "cost": response.cost if response is not None else None,
        "latency_ms": round(exchange.seconds * 1000, 3),
        "attempts": len(exchange.sent),
    }
    logger.info(Line(f"{method} {path} {exchange.status}{gone}", fields))


def _check_text(value: Any, name: str) -> None:
    """A 400 when ``value`` (caller text) is not valid Unicode: refused before anything is reserved or sent."""
    if isinstance(value, str) and not is_text(value):
        raise ProxyError(400, f"{name}: is not valid Unicode text (a lone surrogate)", type="invalid_request_error",
                         param=name, code="invalid_text")  # fmt: skip


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read by then, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _bytes(value: UploadFile | str, name: str) -> bytes | str:
    if isinstance(value, str):
        return value  # base64 or a data: URL in a text field: the SDK reads it as such
    data = await value.read()
    if not data:
        raise ProxyError(400, f"{name}: an empty file", type="invalid_request_error", param=name)
    return data


def _form_value(value: str) -> Any:
    """A form field as JSON when it is JSON (numbers, booleans, objects, lists), else as text."""
    text = value.strip()
    if text[:1] in "{[-0123456789" or text in ("true", "false", "null"):
        try:
            return params.json_loads(text)
        except (ValueError, RecursionError):
            return value
    return value


def build_app(
    config: ProxyConfig, overrides: Mapping[str, Mapping[str, Any]] | None = None, *, reloader: Reloader | None = None
) -> Starlette:
    """The proxy's app for ``config``; ``reloader`` (what reads the config again, for SIGHUP) makes it reloadable.
    Served by uvicorn in the main thread, it stops on SIGTERM as :mod:`gesso.proxy.lifecycle` says."""
    proxy = Proxy(config, overrides)
    lifecycle = Lifecycle(proxy, reloader)
    routes: list[Route | Mount] = []
    for prefix in ("", "/v1"):
        routes += [
            Route(
                f"{prefix}/images/generations", functools.partial(proxy.images, operation="generate"), methods=["POST"]
            ),
            Route(f"{prefix}/images/edits", functools.partial(proxy.images, operation="edit"), methods=["POST"]),
            Route(
                f"{prefix}/images/variations", functools.partial(proxy.images, operation="variation"), methods=["POST"]
            ),
            Route(f"{prefix}/models", proxy.models, methods=["GET"]),
        ]
    routes += [
        Route("/health/liveliness", proxy.liveliness, methods=["GET"]),
        Route("/health/liveness", proxy.liveliness, methods=["GET"]),
        Route("/health/readiness", proxy.readiness, methods=["GET"]),
        Route("/health", proxy.health, methods=["GET"]),
        Route("/metrics", proxy.metrics_text, methods=["GET"]),
        Route("/openapi.json", proxy.openapi, methods=["GET"]),
        Route("/cache/purge", proxy.cache_purge, methods=["POST"]),
    ]
    from gesso.proxy import governance, keys, ui

    routes += [*keys.routes(proxy), *governance.routes(proxy), *ui.routes(proxy)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        exported = telemetry.configure_from_env()  # in each worker: OTEL_* asks for export and the extra is there
        if exported:
            logger.info("OpenTelemetry: exporting %s", " and ".join(exported))
        if proxy.store is not None and proxy.ledger is not None:
            released = await proxy.store.release_stale()  # held by a replica that died mid-call
            if released:
                logger.warning("released %d budget reservations no replica settled", released)
            proxy.ledger.start()
        sweeping = asyncio.ensure_future(proxy.sweep()) if proxy.idempotency is not None else None
        lifecycle.install()
        try:
            yield
        finally:
            if sweeping is not None:
                sweeping.cancel()
            # uvicorn has waited for the requests being answered; those cancelled at a stop finish answering
            await proxy.settled(timeout=10.0)
            lifecycle.uninstall()
            if proxy.store is not None and proxy.ledger is not None:
                await proxy.store.drain()  # the spend rows first: a lease is given back once its calls are settled
                await proxy.ledger.close()
                await proxy.store.close()
            telemetry.shutdown()  # what configure_from_env set up: the spans still batched are sent

    image_paths = frozenset(f"{prefix}/images/{route}" for prefix in ("", "/v1") for route in ROUTES.values())
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed}, lifespan=lifespan,
                    middleware=[Middleware(AccessLog, logged_by_app=image_paths),
                                Middleware(ui.SecurityHeaders)])  # fmt: skip
    app.state.proxy = proxy
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    error = ProxyError(404, f"No route {request.method} {request.url.path}", type="invalid_request_error",
                       code="not_found")  # fmt: skip
    return error_response(error, uuid.uuid4().hex)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    error = ProxyError(405, f"{request.method} is not allowed on {request.url.path}", type="invalid_request_error",
                       code="method_not_allowed")  # fmt: skip
    return error_response(error, uuid.uuid4().hex)
