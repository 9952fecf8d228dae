"""The OpenAI-compatible proxy: a Starlette app on the SDK's async entry points (nothing blocks the loop).

Routes (each with and without ``/v1``): ``POST /images/generations`` (JSON), ``POST /images/edits`` and
``POST /images/variations`` (multipart), ``GET /models``, ``GET /health/liveliness``, ``GET /health/readiness``,
``GET /metrics`` and ``GET /openapi.json``. Errors are OpenAI's ``{"error": {...}}`` with the statuses the
``openai`` client acts on; a client that disconnects cancels its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gesso import api, errors, params, redact
from gesso.aio import within
from gesso.boundary import Untrusted, is_text, printable
from gesso.proxy import store
from gesso.proxy.config import Deployment, ProxyConfig
from gesso.proxy.ledger import DB_WAIT, DatabaseUnavailable, Ledger
from gesso.proxy.metrics import Metrics
from gesso.proxy.router import Router

logger = logging.getLogger("gesso.proxy")

#: form fields that stay text (everything else in a multipart form is read as JSON when it parses as JSON)
TEXT_FIELDS = frozenset(
    ("model", "prompt", "size", "quality", "response_format", "style", "user", "background", "moderation")
)
#: tries of a request's spend-log row, and the seconds before the first retry (doubled after each)
SPEND_ATTEMPTS = 3
SPEND_RETRY_DELAY = 0.1
#: seconds a request body may take to arrive, once its headers have: 50 MB (the default size limit) at 0.5 MB/s
BODY_TIMEOUT = 100.0


class ProxyError(errors.GessoError):
    """An error of the proxy's own (a bad body, a missing key), in the same OpenAI shape."""

    def __init__(
        self, status: int, message: str, *, type: str, param: str | None = None, code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message, param=param, code=code)
        self.status_code = status
        self.type = type
        self.headers = dict(headers or {})


@attrs.frozen
class Caller:
    """Who sent a request: the admin (master key, or anyone when there is none) or a virtual key."""

    admin: bool = False
    key: store.Key | None = None


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


def _spend_row(
    request_id: str, route: str, model_name: str, caller: Caller | None, served: Any, status: int,
    failure: str | None, seconds: float, user: Any,
) -> dict[str, Any]:  # fmt: skip
    """The request's spend-log row: never an image, never a secret."""
    key = caller.key if caller is not None else None
    response, deployment = served if served is not None else (None, None)
    return {
        "request_id": request_id,
        "token_hash": key.token_hash if key is not None else None,
        "key_alias": key.key_alias if key is not None else None,
        "route": route,
        "model_name": _column_text(model_name, "model_name"),
        "deployment": deployment.id if deployment is not None else None,
        "model_id": deployment.model if deployment is not None else None,
        "images": len(response.data) if response is not None else 0,
        "cost": (response.cost or 0.0) if response is not None else 0.0,
        "latency_ms": round(seconds * 1000, 3),
        "status": "success" if status == 200 else "cancelled" if status == 499 else "failure",
        "status_code": status,
        "error_type": failure,
        "user": _column_text(user, "user") if isinstance(user, str) else None,
    }


def _column_text(text: str, column: str) -> str:
    """Caller text as a spend-log column can always hold it: valid Unicode, within the column's length."""
    limit = store.spend_logs.c[column].type.length
    unfit = not is_text(text) or len(text) > limit or "\x00" in text  # (PostgreSQL's text holds no NUL)
    return printable(text, limit - 40) if unfit else text


class ClientGone(Exception):
    """The client disconnected before its answer: its call was cancelled, and nothing is sent."""


class Proxy:
    """The app's state: config, router, metrics, and each deployment's locked options."""

    def __init__(self, config: ProxyConfig, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.config = config
        self.overrides = {key: dict(value) for key, value in (overrides or {}).items()}
        self.router = Router(config.deployments, config.cooldown)
        self.metrics = Metrics(config.model_names)
        self.started = time.time()
        #: seconds a request body may take to arrive (its head's deadline is the HTTP protocol's: gesso.proxy.guard)
        self.body_timeout = BODY_TIMEOUT
        self.store = store.Store(config.database_url) if config.database_url else None
        self.ledger = Ledger(self.store) if self.store is not None else None

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

    async def admit(self, caller: Caller, quote: float | None) -> Any:
        """A virtual key's rate limit and budget (its model list was checked before the call was priced),
        checked before anything is sent; the budget is held (``quote``, the call's price) and settled when the
        request's spend row is written."""
        key = caller.key
        if key is None or self.ledger is None:
            return None
        wait = await self._ledger(self.ledger.count(key))
        if wait is not None:
            raise ProxyError(
                429, f"Rate limit exceeded for this key: {key.rpm_limit} requests per minute", type="rate_limit_error",
                code="rpm_limit", headers={"retry-after": str(math.ceil(wait))},
            )  # fmt: skip
        try:
            return await self._ledger(self.ledger.hold(key, quote or 0.0))
        except store.BudgetExceeded as exc:
            now = exc.key or key
            reset = (
                f"; it resets at {now.budget_reset_at.isoformat()}" if now.budget_reset_at else "; it does not reset"
            )
            raise ProxyError(
                429, f"Budget exceeded for key {now.key_alias or now.key_name}: spent {now.spend:.4f} of "
                f"{now.max_budget:.4f} USD ({now.reserved:.4f} held by calls in flight and replicas' leases), this "
                f"call costs {exc.amount:.4f}{reset}", type="budget_exceeded", code="budget_exceeded",
                headers={"x-should-retry": "false"},
            ) from None  # fmt: skip

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
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        route = {"generate": "generations", "edit": "edits", "variation": "variations"}[operation]
        model_name = "-"
        status = 500
        caller: Caller | None = None
        reservation: Any = None  # what the call holds of its key's budget (gesso.proxy.ledger)
        served: tuple[Any, Deployment] | None = None
        failure: str | None = None
        prompt: Any = None
        user: Any = None
        sent: list[Deployment] = []  # the deployments the call was handed to
        away = False  # refused because the database did not answer
        price_of: Any = None  # the call's price, asked for only if it is cancelled after it was sent
        self.metrics.in_flight += 1
        try:
            caller = await self.authenticate(request)
            if operation == "generate":
                fields = await self._json(request)
                images: list[bytes] = []
                mask = None
            else:
                fields, images, mask = await self._form(request)
            given = fields.pop("model", None)
            model_name = given if isinstance(given, str) else "-"  # as asked, for the log and the spend row
            model_name = self._model_name(given, caller)
            prompt = fields.pop("prompt", None)
            user = fields.get("user")
            _check_text(prompt, "prompt")
            _check_text(user, "user")
            self._may_use(caller, model_name)  # before the model's own checks: they would describe it
            prepared: dict[str, Any] = {}  # deployment id -> the call prepared (and priced) for it
            if caller.key is not None:
                quote, prepared = self._quote(model_name, operation, prompt, images, mask, fields)
            else:
                quote = None
            price_of = functools.partial(_given_or, quote, self._quote, model_name, operation, prompt, images, mask,
                                         fields)  # fmt: skip
            reservation = await self.admit(caller, quote)

            async def send(deployment: Deployment, overrides: dict[str, Any]) -> Any:
                sent.append(deployment)
                try:  # prepared once: the call priced for the budget is the one sent (unless the router changed it)
                    call = prepared.get(deployment.id) if not overrides else None
                    if call is None:
                        call = self._prepare(deployment, overrides, operation, prompt, images, mask, fields)
                    return await api.asend(call)
                except (errors.AuthenticationError, errors.PermissionDeniedError) as exc:
                    # the deployment's own credentials were refused: the caller's key is fine, so not a 401/403
                    raise errors.ProviderError(
                        f"The provider refused the proxy deployment's credentials ({deployment.id}): {exc.message}",
                        model=exc.model,
                    ) from exc

            served = await self._until_disconnect(request, self.router.call(model_name, send))
            response, deployment = served
            status = 200
            self.metrics.paid(model_name, len(response.data), response.cost)
            logger.info(
                "request %s %s model_name=%s deployment=%s images=%d cost=%s latency=%.3fs", request_id, route,
                _field(model_name), deployment.id, len(response.data), response.cost, time.perf_counter() - started,
            )  # fmt: skip
            headers = {
                "x-request-id": request_id,
                "x-gesso-deployment": deployment.id,
                "x-gesso-response-cost": "" if response.cost is None else f"{response.cost:.6f}",
            }
            return _json_response(response.to_dict(), 200, headers)
        except errors.GessoError as error:
            status = error.status_code
            failure = error.type
            away = error.code == "database_unavailable"
            self.metrics.error(error.type)
            logger.info("request %s %s model_name=%s failed: %s %s", request_id, route, _field(model_name), status,
                        error.type)  # fmt: skip
            return _error_response(error, request_id)
        except ClientGone:  # answered with nothing (uvicorn drops sends to a gone client), so no error is logged
            status, failure = 499, "client_disconnected"
            self.metrics.error("client_disconnected")
            logger.info("request %s %s model_name=%s: the client went away; call cancelled", request_id, route,
                        _field(model_name))  # fmt: skip
            return Response(status_code=499)
        except asyncio.CancelledError:
            status, failure = 499, "client_disconnected"
            self.metrics.error("client_disconnected")
            logger.info("request %s %s model_name=%s: the client went away; call cancelled", request_id, route,
                        _field(model_name))  # fmt: skip
            raise
        except Exception:
            failure = "internal_error"
            self.metrics.error("internal_error")
            logger.exception("request %s %s failed", request_id, route)
            error = ProxyError(500, "Internal error in the proxy", type="internal_error")
            return _error_response(error, request_id)
        finally:
            self.metrics.in_flight -= 1
            seconds = time.perf_counter() - started
            self.metrics.observe(route, model_name, status, seconds)
            if self.store is not None:
                row = _spend_row(request_id, route, model_name, caller, served, status, failure, seconds, user)
                if status == 499 and sent and price_of is not None:
                    # the provider had the call when the client left: it may well have charged for it, so the
                    # call is priced as sent (a client cannot spend a provider's money by hanging up in time)
                    row["cost"] = _cancelled_price(price_of, request_id)
                if self.config.store_prompts and isinstance(prompt, str):
                    fits = is_text(prompt) and "\x00" not in prompt
                    row["prompt"] = prompt if fits else printable(prompt, len(prompt) * 12)
                if self.ledger is not None and reservation is not None:
                    self.ledger.finished(reservation, row["cost"])
                await self._record(row, reservation, request_id, paid=served is not None, wait=not away)

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
            raise ProxyError(
                404, f"Model '{printable(given)}' is not served here; configured models: "
                f"{', '.join(self._usable(caller)) or 'none for this key'}", type="invalid_request_error",
                param="model", code="model_not_found",
            )  # fmt: skip
        return given

    def _may_use(self, caller: Caller, model_name: str) -> None:
        key = caller.key
        if key is not None and key.models and model_name not in key.models:
            raise ProxyError(403, f"This key may not use model {model_name!r}; it may use: {', '.join(key.models)}",
                             type="permission_error", param="model", code="key_model_access_denied")  # fmt: skip

    def _usable(self, caller: Caller) -> list[str]:
        """The configured model names ``caller`` may use (a virtual key may be limited to some)."""
        names = self.config.model_names
        if caller.key is not None and caller.key.models:
            return [name for name in names if name in caller.key.models]
        return names

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

    def _quote(
        self, model_name: str, operation: str, prompt: Any, images: list[bytes], mask: Any, fields: Mapping[str, Any]
    ) -> tuple[float | None, dict[str, Any]]:
        """The most the call can cost on any of its deployments, and the call prepared for each (checked as it
        will be sent: bad input is refused here, before a budget is touched)."""
        prices, prepared = [], {}
        for deployment in self.router.groups[model_name]:
            call = self._prepare(deployment, {}, operation, prompt, images, mask, fields)
            prepared[deployment.id] = call
            prices.append(api.price(call))
        known = [p for p in prices if p is not None]
        return (max(known) if known else None), prepared

    def _prepare(
        self, deployment: Deployment, overrides: Mapping[str, Any], operation: str, prompt: Any,
        images: list[bytes], mask: Any, fields: Mapping[str, Any],
    ) -> Any:  # fmt: skip
        """The call for ``deployment``: its configuration as kwargs, the request's fields as :class:`Untrusted`."""
        kwargs = self._trusted(deployment, overrides, fields)
        model = kwargs.pop("model")
        untrusted = Untrusted(fields, granted=deployment.caller_params)
        inputs = {"image": images or None, "mask": mask} if operation != "generate" else {}
        return api.prepare(model, prompt, operation=operation, untrusted=untrusted, **inputs, **kwargs)

    async def _until_disconnect(self, request: Request, call: Any) -> Any:
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
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ProxyError(400, "Content-Length must be a number", type="invalid_request_error")
            if int(declared) > limit:
                raise _too_large(limit)
        from starlette.requests import ClientDisconnect

        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
            return b"".join(chunks)

        try:  # a stalled or trickling client is not waited for
            return await within(read(), self.body_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise ProxyError(408, f"The request body did not arrive within {self.body_timeout:g} s",
                             type="invalid_request_error", code="request_timeout",
                             headers={"connection": "close"}) from None  # fmt: skip
        except ClientDisconnect:  # gone before its body arrived: nothing to answer, and not the proxy's fault
            raise ClientGone from None

    async def _json(self, request: Request) -> dict[str, Any]:
        body = await self._body(request)
        try:
            data = params.json_loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # (RecursionError: nested too deep)
            raise ProxyError(400, f"The body is not valid JSON: {exc}", type="invalid_request_error",
                             code="invalid_json") from None  # fmt: skip
        if not isinstance(data, dict):
            raise ProxyError(400, "The body must be a JSON object", type="invalid_request_error", code="invalid_json")
        return data

    async def _form(self, request: Request) -> tuple[dict[str, Any], list[bytes], bytes | None]:
        from starlette.formparsers import MultiPartException, MultiPartParser

        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ProxyError(400, "Edits and variations take multipart/form-data (image, mask, and fields)",
                             type="invalid_request_error", code="invalid_content_type")  # fmt: skip
        body = await self._body(request)

        async def stream() -> AsyncIterator[bytes]:
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=64, max_fields=256).parse()
        except (MultiPartException, ValueError) as exc:
            raise ProxyError(400, f"Malformed multipart body: {exc}", type="invalid_request_error",
                             code="invalid_multipart") from None  # fmt: skip
        fields: dict[str, Any] = {}
        images: list[bytes] = []
        mask: bytes | None = None
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
        except errors.GessoError as error:
            return _error_response(error, uuid.uuid4().hex)
        created = int(self.started)
        data = [{"id": name, "object": "model", "created": created, "owned_by": "gesso"}
                for name in self._usable(caller)]  # fmt: skip
        return JSONResponse({"object": "list", "data": data})

    async def liveliness(self, request: Request) -> Response:
        return JSONResponse("I'm alive!")

    async def readiness(self, request: Request) -> Response:
        return JSONResponse({"status": "healthy", "models": len(self.config.model_names),
                             "deployments": len(self.config.deployments)})  # fmt: skip

    async def metrics_text(self, request: Request) -> Response:
        if self.config.metrics_require_auth:  # general_settings.metrics_require_auth: the master key only
            try:
                if not (await self.authenticate(request)).admin:
                    raise ProxyError(401, "Only the master key can read /metrics (general_settings."
                                     "metrics_require_auth)", type="auth_error", code="not_admin")  # fmt: skip
            except errors.GessoError as error:
                return _error_response(error, uuid.uuid4().hex)
        return PlainTextResponse(self.metrics.render(), media_type=self.metrics.content_type)

    async def openapi(self, request: Request) -> Response:
        from gesso.proxy.openapi import spec

        return JSONResponse(spec(self.config.model_names))


def _given_or(given: float | None, quote: Any, *args: Any) -> float | None:
    return given if given is not None else quote(*args)[0]


def _cancelled_price(price_of: Any, request_id: str) -> float:
    try:
        return float(price_of() or 0.0)
    except Exception:  # (it was priced before, or checked as it was sent: this does not fail, but must not raise)
        logger.exception("request %s: its cancelled call could not be priced", request_id)
        return 0.0


def _field(text: str) -> str:
    """Caller text as one field of a log line: escaped, shortened, and quoted when it holds a space, a quote or
    an equals sign (so ``model_name=a cost=9`` cannot pass for two fields)."""
    shown = printable(text)
    return json.dumps(shown) if any(c in shown for c in ' ="') else shown


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


async def _bytes(value: Any, name: str) -> bytes | str:
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


def _too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"The request body is larger than the proxy takes ({limit} bytes; "
                      "general_settings.max_request_size_mb)", type="invalid_request_error",
                      code="request_too_large")  # fmt: skip


def _json_response(content: Any, status: int, headers: dict[str, str]) -> Response:
    body = json.dumps(content, separators=(",", ":")).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _error_response(error: errors.GessoError, request_id: str) -> Response:
    headers = {"x-request-id": request_id, **getattr(error, "headers", {})}
    if isinstance(error, errors.RateLimitError):
        if error.code == "quota_exceeded":
            headers["x-should-retry"] = "false"
        else:
            headers["retry-after"] = "1"
    body = error.to_dict()
    # never a secret in an answer: a value the proxy read from its environment or config is named, not shown
    body["error"]["message"] = redact.redact(body["error"]["message"])
    return _json_response(body, error.status_code, headers)


def build_app(config: ProxyConfig, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Starlette:
    proxy = Proxy(config, overrides)
    routes = []
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
        Route("/metrics", proxy.metrics_text, methods=["GET"]),
        Route("/openapi.json", proxy.openapi, methods=["GET"]),
    ]
    from gesso.proxy import keys

    routes += keys.routes(proxy)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if proxy.store is not None and proxy.ledger is not None:
            released = await proxy.store.release_stale()  # held by a replica that died mid-call
            if released:
                logger.warning("released %d budget reservations no replica settled", released)
            proxy.ledger.start()
        try:
            yield
        finally:
            if proxy.store is not None and proxy.ledger is not None:
                await proxy.store.drain()  # the spend rows first: a lease is given back once its calls are settled
                await proxy.ledger.close()
                await proxy.store.close()

    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed}, lifespan=lifespan)
    app.state.proxy = proxy
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    error = ProxyError(404, f"No route {request.method} {request.url.path}", type="invalid_request_error",
                       code="not_found")  # fmt: skip
    return _error_response(error, uuid.uuid4().hex)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    error = ProxyError(405, f"{request.method} is not allowed on {request.url.path}", type="invalid_request_error",
                       code="method_not_allowed")  # fmt: skip
    return _error_response(error, uuid.uuid4().hex)
