"""Virtual keys and spend, litellm's API shape: ``POST /key/generate``, ``GET /key/info``, ``POST /key/update``,
``POST /key/delete``, ``POST /key/block``, ``POST /key/unblock``, ``GET /key/list``, ``GET /spend/logs`` and
``GET /spend/report``.

The master key may do everything; a virtual key may only read its own ``/key/info``. A key's plaintext is
shown once, by ``/key/generate``; everywhere else a key is named by its plaintext, its hash (``token``) or
its alias. Fields gesso does not take are refused by name, never dropped; a value out of range is a 400
naming the field and the range, never a database error.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gesso import errors
from gesso.proxy import store
from gesso.proxy.config import ProxyConfig
from gesso.proxy.http import Caller, ClientGone, ProxyError, error_response, json_object, json_response, read_body
from gesso.proxy.ledger import Ledger

#: the fields /key/generate and /key/update take
FIELDS = (
    "key", "key_alias", "models", "max_budget", "budget_duration", "duration", "rpm_limit", "metadata", "blocked",
)  # fmt: skip
UPDATABLE = tuple(f for f in FIELDS if f != "key")
#: the largest body the key API reads (a key's fields; metadata is at most MAX_METADATA_BYTES of it)
MAX_BODY = 1024 * 1024
#: the largest ``max_budget``, in USD: a float still counts spend to 1e-7 USD there
MAX_BUDGET = 1e9
#: ``metadata``: at most this many bytes as JSON (UTF-8), nested at most this deep (the object itself is 1)
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32
#: the largest ``page`` of /key/list (and of any positive whole number a query takes)
MAX_QUERY_INT = 10**9
#: a chosen key: ``sk-`` and visible ASCII (what an HTTP header carries unchanged), 16 to 256 characters
CHOSEN_KEY = re.compile(r"sk-[\x21-\x7e]{13,253}")


class Host(Protocol):
    """What the key API needs of the proxy it is served by (:class:`gesso.proxy.app.Proxy`)."""

    @property
    def config(self) -> ProxyConfig: ...
    @property
    def store(self) -> store.Store | None: ...
    @property
    def ledger(self) -> Ledger | None: ...
    @property
    def body_timeout(self) -> float: ...
    async def authenticate(self, request: Request) -> Caller: ...


#: a route's work, given the request, its caller and the proxy's database: what the answer's JSON holds
Handler = Callable[[Request, Caller, store.Store], Awaitable[Any]]


def routes(proxy: Host) -> list[Route]:
    api = KeyApi(proxy)
    return [
        Route("/key/generate", api.generate, methods=["POST"]),
        Route("/key/info", api.info, methods=["GET"]),
        Route("/key/update", api.update, methods=["POST"]),
        Route("/key/delete", api.delete, methods=["POST"]),
        Route("/key/block", functools.partial(api.block, blocked=True), methods=["POST"]),
        Route("/key/unblock", functools.partial(api.block, blocked=False), methods=["POST"]),
        Route("/key/list", api.list, methods=["GET"]),
        Route("/spend/logs", api.spend_logs, methods=["GET"]),
        Route("/spend/report", api.spend_report, methods=["GET"]),
    ]


def _error(
    status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> ProxyError:
    return ProxyError(status, message, type=type, param=param, code=code)


class KeyApi:
    def __init__(self, proxy: Host) -> None:
        self.proxy = proxy

    @property
    def db(self) -> store.Store:
        """The proxy's database; a 501 when it has none."""
        found = self.proxy.store
        if found is None:
            raise _error(501, "This proxy has no database (general_settings.database_url)", type="api_error")
        return found

    async def _handle(self, request: Request, handler: Handler, *, admin: bool = True) -> Response:
        request_id = uuid.uuid4().hex
        try:
            db = self.db
            caller = await self.proxy.authenticate(request)
            if self.proxy.config.master_key is None:
                raise _error(401, "Managing keys needs general_settings.master_key", type="auth_error")
            if admin and not caller.admin:
                raise _error(401, "Only the master key can do this", type="auth_error")
            result = await handler(request, caller, db)
            return json_response(result, 200, {"x-request-id": request_id})
        except errors.GessoError as exc:
            return error_response(exc, request_id)
        except ClientGone:  # gone before its body arrived: nothing is answered
            return Response(status_code=499)

    # -- keys ---------------------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        async def run(request: Request, caller: Caller, db: store.Store) -> Any:
            body = await _body(request, FIELDS, self.proxy.body_timeout)
            values = _checked(body)
            given = values.pop("key", None)
            if given is not None and (not isinstance(given, str) or not CHOSEN_KEY.fullmatch(given)):
                raise _error(400, "key: a chosen key must start with sk- and be 16 to 256 characters of visible "
                             "ASCII (no spaces)", param="key")  # fmt: skip
            if given is not None and given == self.proxy.config.master_key:
                raise _error(400, "key: that is the master key; choose another", param="key")
            await self._unique_key(given)
            await self._unique_alias(values.get("key_alias"))
            try:
                plaintext, key = await db.create_key(key=given, **values)
            except sa.exc.IntegrityError:  # another request took the key or the alias since the checks above
                if given is not None and await db.get_key(store.hash_key(given)) is not None:
                    raise _key_taken() from None
                raise _alias_taken(values.get("key_alias")) from None
            self._changed(key.token_hash)  # a lookup before it existed may be cached as "no such key"
            return {"key": plaintext, **key.info()}

        return await self._handle(request, run)

    async def info(self, request: Request) -> Response:
        async def run(request: Request, caller: Caller, db: store.Store) -> Any:
            given = request.query_params.get("key")
            if given is None:
                if caller.key is None:
                    raise _error(400, "key: which key? (?key=<key, hash or alias>)", param="key")
                key = caller.key
            else:
                key = await self._find(given)
                if not caller.admin and (caller.key is None or key.token_hash != caller.key.token_hash):
                    raise _error(403, "A virtual key may only read its own info", type="permission_error")
            return {"key": key.token_hash, "info": key.info()}  # never the plaintext, even if given

        return await self._handle(request, run, admin=False)

    async def update(self, request: Request) -> Response:
        async def run(request: Request, caller: Caller, db: store.Store) -> Any:
            body = await _body(request, ("key", *UPDATABLE), self.proxy.body_timeout)
            given = body.pop("key", None)
            if not isinstance(given, str):
                raise _error(400, "key: required (the key, its hash or its alias)", param="key")
            key = await self._find(given)
            values = _checked(body)
            if values.get("key_alias") not in (None, key.key_alias):
                await self._unique_alias(values["key_alias"])
            try:
                updated = await db.update_key(key.token_hash, values)
                self._changed(key.token_hash)
            except sa.exc.IntegrityError:  # another request took the alias since the check above
                raise _alias_taken(values.get("key_alias")) from None
            if updated is None:
                raise _error(404, f"No key {given!r}", type="not_found_error", param="key")
            return {"key": updated.token_hash, **updated.info()}

        return await self._handle(request, run)

    async def delete(self, request: Request) -> Response:
        async def run(request: Request, caller: Caller, db: store.Store) -> Any:
            body = await _body(request, ("keys", "key_aliases"), self.proxy.body_timeout)
            groups = [body.get("keys") or [], body.get("key_aliases") or []]
            names = [n for group in groups if isinstance(group, list) for n in group]
            if not names or not all(isinstance(g, list) for g in groups) or not all(isinstance(n, str) for n in names):
                raise _error(400, "keys or key_aliases: a list of keys (plaintext, hash) or aliases", param="keys")
            found = [await self._find(name) for name in names]
            await db.delete_keys([k.token_hash for k in found])
            for gone in found:
                self._changed(gone.token_hash)
            return {"deleted_keys": names}

        return await self._handle(request, run)

    async def block(self, request: Request, *, blocked: bool) -> Response:
        """``POST /key/block`` / ``/key/unblock``: a blocked key is refused (401, ``key_blocked``) on its next
        request: at once on this replica, within ledger.KEY_TTL on the others."""

        async def run(request: Request, caller: Caller, db: store.Store) -> Any:
            body = await _body(request, ("key",), self.proxy.body_timeout)
            given = body.get("key")
            if not isinstance(given, str) or not given:
                raise _error(400, "key: required (the key, its hash or its alias)", param="key")
            key = await self._find(given)
            updated = await db.update_key(key.token_hash, {"blocked": blocked})
            self._changed(key.token_hash)
            if updated is None:  # deleted meanwhile
                raise _error(404, f"No key {given!r}", type="not_found_error", param="key")
            return {"key": updated.token_hash, **updated.info()}

        return await self._handle(request, run)

    async def list(self, request: Request) -> Response:
        async def run(request: Request, caller: Caller, db: store.Store) -> Any:
            page = _positive_int(request.query_params.get("page", "1"), "page")
            size = min(_positive_int(request.query_params.get("size", "10"), "size"), 100)
            full = request.query_params.get("return_full_object", "false").lower() == "true"
            found, total = await db.list_keys(key_alias=request.query_params.get("key_alias"), page=page, size=size)
            return {
                "keys": [k.info() if full else k.token_hash for k in found],
                "total_count": total,
                "current_page": page,
                "total_pages": max(1, math.ceil(total / size)),
            }

        return await self._handle(request, run)

    # -- spend --------------------------------------------------------------------------------------------

    async def spend_logs(self, request: Request) -> Response:
        async def run(request: Request, caller: Caller, db: store.Store) -> Any:
            query = request.query_params
            token = None
            if query.get("api_key"):
                token = (await self._find(query["api_key"])).token_hash
            start, end = _dates(query)
            return await db.spend_logs(
                token_hash=token, model_name=query.get("model"), start=start, end=end,
                limit=min(_positive_int(query.get("limit", "1000"), "limit"), 10_000),
            )  # fmt: skip

        return await self._handle(request, run)

    async def spend_report(self, request: Request) -> Response:
        async def run(request: Request, caller: Caller, db: store.Store) -> Any:
            start, end = _dates(request.query_params)
            rows = await db.spend_report(start=start, end=end)
            return {
                "rows": rows,
                "total": {
                    "requests": sum(r["requests"] for r in rows),
                    "images": sum(r["images"] for r in rows),
                    "cost": round(sum(r["cost"] for r in rows), 6),
                },
            }

        return await self._handle(request, run)

    # -- helpers ------------------------------------------------------------------------------------------

    async def _find(self, given: str) -> store.Key:
        key = await self.db.find_key(given)
        if key is None:
            raise _error(404, "No such key (give the key, its hash or its alias)", type="not_found_error", param="key")
        return key

    def _changed(self, token_hash: str) -> None:
        """This replica changed a key: its cache forgets it at once (other replicas within ledger.KEY_TTL)."""
        if self.proxy.ledger is not None:
            self.proxy.ledger.forget(token_hash)

    async def _unique_key(self, given: str | None) -> None:
        if given is not None and await self.db.get_key(store.hash_key(given)) is not None:
            raise _key_taken()

    async def _unique_alias(self, alias: Any) -> None:
        if alias is not None and await self.db.find_key(alias) is not None:
            raise _alias_taken(alias)


def _key_taken() -> ProxyError:
    return _error(400, "key: a key with this value exists already; choose another (or leave key out)", param="key")


def _alias_taken(alias: Any) -> ProxyError:
    return _error(400, f"key_alias: {alias!r} is taken; aliases are unique", param="key_alias")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


async def _body(request: Request, allowed: tuple[str, ...], timeout: float) -> dict[str, Any]:
    """The body's JSON object (an empty body is ``{}``), of at most :data:`MAX_BODY` bytes, with only the
    ``allowed`` fields."""
    note = f"the key API takes ({MAX_BODY} bytes)"
    raw = await read_body(request, limit=MAX_BODY, timeout=timeout, limit_note=note)
    # NaN and Infinity are not JSON (and no database's JSON column takes them)
    body = json_object(raw, parse_constant=_not_json) if raw.strip() else {}
    try:  # JSON may escape a lone surrogate ("\ud800"): text no key, alias or database can hold
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise _error(400, "The body has text that is not valid Unicode (a lone surrogate escape)") from None
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise _error(400, f"{', '.join(unknown)}: not taken here (fields: {', '.join(allowed)})", param=unknown[0])
    return body


def _checked(body: Mapping[str, Any]) -> dict[str, Any]:
    """The key fields, each checked (a bad one is a 400 naming it and what it takes)."""
    values = dict(body)
    models = values.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
        raise _error(400, "models: a list of model names ([] for all)", param="models")
    budget = values.get("max_budget")
    if budget is not None:
        number = _float(budget)
        if number is None or not 0 <= number <= MAX_BUDGET:
            raise _error(400, f"max_budget: a number of USD from 0 to {MAX_BUDGET:.0f} (got {_shown(budget)})",
                         param="max_budget")  # fmt: skip
        values["max_budget"] = number
    for name in ("budget_duration", "duration"):
        if values.get(name) is not None:
            try:
                store.parse_duration(values[name], name)
            except ValueError as exc:
                raise _error(400, str(exc), param=name) from None
    rpm = values.get("rpm_limit")
    if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or not 0 <= rpm <= store.MAX_INT):
        raise _error(400, f"rpm_limit: a whole number from 0 to {store.MAX_INT} (got {_shown(rpm)})",
                     param="rpm_limit")  # fmt: skip
    alias = values.get("key_alias")
    if alias is not None and (not isinstance(alias, str) or not alias or len(alias) > 256 or not alias.isprintable()):
        raise _error(400, "key_alias: printable text of 1 to 256 characters", param="key_alias")
    if values.get("metadata") is not None:
        _check_metadata(values["metadata"])
    if values.get("blocked") is not None and not isinstance(values["blocked"], bool):
        raise _error(400, f"blocked: true or false (got {_shown(values['blocked'])})", param="blocked")
    if "blocked" in values and values["blocked"] is None:
        values["blocked"] = False  # null clears it, as litellm's update does
    if "models" in values and values["models"] is None:
        values["models"] = []
    return values


def _float(value: Any) -> float | None:
    """A JSON number as a finite float, else ``None`` (booleans, text, and integers too big for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise _error(400, "metadata: a JSON object", param="metadata")
    level: list[dict[str, Any] | list[Any]] = [metadata]
    depth = 1
    while level:  # breadth-first, so no recursion
        if depth > MAX_METADATA_DEPTH:
            raise _error(400, f"metadata: nested at most {MAX_METADATA_DEPTH} levels deep", param="metadata")
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, dict) else value)
            if isinstance(child, (dict, list))
        ]
        depth += 1
    try:
        size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode())
    except ValueError:  # a number too large for a float (1e400 reads as infinity)
        raise _error(400, "metadata: numbers must be finite (1e400 is not)", param="metadata") from None
    if size > MAX_METADATA_BYTES:
        raise _error(400, f"metadata: at most {MAX_METADATA_BYTES} bytes as JSON (got {size})", param="metadata")


def _positive_int(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 10 or not 1 <= int(text) <= MAX_QUERY_INT:
        raise _error(400, f"{name}: a whole number from 1 to {MAX_QUERY_INT} (got {_shown(text)})", param=name)
    return int(text)


def _dates(query: Mapping[str, str]) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """``start_date`` and ``end_date`` (``YYYY-MM-DD``, both days included), as UTC bounds."""
    start, end = _day(query, "start_date"), _day(query, "end_date")
    if end is not None:  # the day after it; after 9999-12-31 there is none, so no bound
        end = end + datetime.timedelta(days=1) if end.date() < datetime.date.max else None
    return start, end


def _day(query: Mapping[str, str], name: str) -> datetime.datetime | None:
    """The query's date ``name`` (``YYYY-MM-DD``) as the UTC moment it begins, or ``None`` when not given."""
    text = query.get(name)
    if text is None:
        return None
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise _error(400, f"{name}: a date, YYYY-MM-DD (got {text!r})", param=name) from None
    return datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.timezone.utc)
