"""Virtual keys and spend, litellm's API shape: ``POST /key/generate``, ``GET /key/info``, ``POST /key/update``,
``POST /key/delete``, ``GET /key/list``, ``GET /spend/logs`` and ``GET /spend/report``.

The master key may do everything; a virtual key may only read its own ``/key/info``. A key's plaintext is
shown once, by ``/key/generate``; everywhere else a key is named by its plaintext, its hash (``token``) or
its alias. Fields gesso does not take are refused by name, never dropped.
"""

from __future__ import annotations

import datetime
import json
import math
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gesso import errors
from gesso.proxy import store

if TYPE_CHECKING:
    from gesso.proxy.app import Proxy

#: the fields /key/generate and /key/update take
FIELDS = ("key", "key_alias", "models", "max_budget", "budget_duration", "duration", "rpm_limit", "metadata")
UPDATABLE = tuple(f for f in FIELDS if f != "key")


def routes(proxy: Proxy) -> list[Route]:
    api = KeyApi(proxy)
    return [
        Route("/key/generate", api.generate, methods=["POST"]),
        Route("/key/info", api.info, methods=["GET"]),
        Route("/key/update", api.update, methods=["POST"]),
        Route("/key/delete", api.delete, methods=["POST"]),
        Route("/key/list", api.list, methods=["GET"]),
        Route("/spend/logs", api.spend_logs, methods=["GET"]),
        Route("/spend/report", api.spend_report, methods=["GET"]),
    ]


def _error(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None) -> Exception:
    from gesso.proxy.app import ProxyError

    return ProxyError(status, message, type=type, param=param)


class KeyApi:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    async def _handle(self, request: Request, handler: Any, *, admin: bool = True) -> Response:
        from gesso.proxy.app import _error_response, _json_response

        request_id = uuid.uuid4().hex
        try:
            if self.proxy.store is None:
                raise _error(501, "This proxy has no database (general_settings.database_url)", type="api_error")
            caller = await self.proxy.authenticate(request)
            if self.proxy.config.master_key is None:
                raise _error(401, "Managing keys needs general_settings.master_key", type="auth_error")
            if admin and not caller.admin:
                raise _error(401, "Only the master key can do this", type="auth_error")
            result = await handler(request, caller)
            return _json_response(result, 200, {"x-request-id": request_id})
        except errors.GessoError as exc:
            return _error_response(exc, request_id)

    # -- keys ---------------------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        async def run(request: Request, caller: Any) -> Any:
            body = await _body(request, FIELDS)
            values = _checked(body)
            given = values.pop("key", None)
            if given is not None and (not isinstance(given, str) or not given.startswith("sk-") or len(given) < 16):
                raise _error(400, "key: a chosen key must start with sk- and be at least 16 characters", param="key")
            await self._unique_alias(values.get("key_alias"))
            plaintext, key = await self.proxy.store.create_key(key=given, **values)
            return {"key": plaintext, **key.info()}

        return await self._handle(request, run)

    async def info(self, request: Request) -> Response:
        async def run(request: Request, caller: Any) -> Any:
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
        async def run(request: Request, caller: Any) -> Any:
            body = await _body(request, ("key", *UPDATABLE))
            given = body.pop("key", None)
            if not isinstance(given, str):
                raise _error(400, "key: required (the key, its hash or its alias)", param="key")
            key = await self._find(given)
            values = _checked(body)
            if values.get("key_alias") not in (None, key.key_alias):
                await self._unique_alias(values["key_alias"])
            updated = await self.proxy.store.update_key(key.token_hash, values)
            if updated is None:
                raise _error(404, f"No key {given!r}", type="not_found_error", param="key")
            return {"key": updated.token_hash, **updated.info()}

        return await self._handle(request, run)

    async def delete(self, request: Request) -> Response:
        async def run(request: Request, caller: Any) -> Any:
            body = await _body(request, ("keys", "key_aliases"))
            groups = [body.get("keys") or [], body.get("key_aliases") or []]
            names = [n for group in groups if isinstance(group, list) for n in group]
            if not names or not all(isinstance(g, list) for g in groups) or not all(isinstance(n, str) for n in names):
                raise _error(400, "keys or key_aliases: a list of keys (plaintext, hash) or aliases", param="keys")
            found = [await self._find(name) for name in names]
            await self.proxy.store.delete_keys([k.token_hash for k in found])
            return {"deleted_keys": names}

        return await self._handle(request, run)

    async def list(self, request: Request) -> Response:
        async def run(request: Request, caller: Any) -> Any:
            page = _positive_int(request.query_params.get("page", "1"), "page")
            size = min(_positive_int(request.query_params.get("size", "10"), "size"), 100)
            full = request.query_params.get("return_full_object", "false").lower() == "true"
            found, total = await self.proxy.store.list_keys(
                key_alias=request.query_params.get("key_alias"), page=page, size=size
            )
            return {
                "keys": [k.info() if full else k.token_hash for k in found],
                "total_count": total,
                "current_page": page,
                "total_pages": max(1, math.ceil(total / size)),
            }

        return await self._handle(request, run)

    # -- spend --------------------------------------------------------------------------------------------

    async def spend_logs(self, request: Request) -> Response:
        async def run(request: Request, caller: Any) -> Any:
            query = request.query_params
            token = None
            if query.get("api_key"):
                token = (await self._find(query["api_key"])).token_hash
            start, end = _dates(query)
            return await self.proxy.store.spend_logs(
                token_hash=token, model_name=query.get("model"), start=start, end=end,
                limit=min(_positive_int(query.get("limit", "1000"), "limit"), 10_000),
            )  # fmt: skip

        return await self._handle(request, run)

    async def spend_report(self, request: Request) -> Response:
        async def run(request: Request, caller: Any) -> Any:
            start, end = _dates(request.query_params)
            rows = await self.proxy.store.spend_report(start=start, end=end)
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
        key = await self.proxy.store.find_key(given)
        if key is None:
            raise _error(404, "No such key (give the key, its hash or its alias)", type="not_found_error", param="key")
        return key

    async def _unique_alias(self, alias: Any) -> None:
        if alias is not None and await self.proxy.store.find_key(alias) is not None:
            raise _error(400, f"key_alias: {alias!r} is taken; aliases are unique", param="key_alias")


async def _body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:  # (RecursionError: nested too deep)
        raise _error(400, f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _error(400, "The body must be a JSON object")
    try:  # JSON may escape a lone surrogate ("\ud800"): text no key, alias or database can hold
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise _error(400, "The body has text that is not valid Unicode (a lone surrogate escape)") from None
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise _error(400, f"{', '.join(unknown)}: not taken here (fields: {', '.join(allowed)})", param=unknown[0])
    return body


def _checked(body: Mapping[str, Any]) -> dict[str, Any]:
    """The key fields, each checked (a bad one is a 400 naming it)."""
    values = dict(body)
    models = values.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
        raise _error(400, "models: a list of model names ([] for all)", param="models")
    budget = values.get("max_budget")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0
    ):
        raise _error(400, f"max_budget: a number of USD, 0 or more (got {budget!r})", param="max_budget")
    for name in ("budget_duration", "duration"):
        if values.get(name) is not None:
            try:
                store.parse_duration(values[name], name)
            except ValueError as exc:
                raise _error(400, str(exc), param=name) from None
    rpm = values.get("rpm_limit")
    if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 0):
        raise _error(400, f"rpm_limit: a whole number, 0 or more (got {rpm!r})", param="rpm_limit")
    alias = values.get("key_alias")
    if alias is not None and (not isinstance(alias, str) or not alias or len(alias) > 256 or not alias.isprintable()):
        raise _error(400, "key_alias: printable text of 1 to 256 characters", param="key_alias")
    if values.get("metadata") is not None and not isinstance(values["metadata"], dict):
        raise _error(400, "metadata: a JSON object", param="metadata")
    if "models" in values and values["models"] is None:
        values["models"] = []
    return values


def _positive_int(text: str, name: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise _error(400, f"{name}: a whole number, 1 or more (got {text!r})", param=name)
    return int(text)


def _dates(query: Mapping[str, str]) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """``start_date`` and ``end_date`` (``YYYY-MM-DD``, both days included), as UTC bounds."""
    found = []
    for name in ("start_date", "end_date"):
        text = query.get(name)
        if text is None:
            found.append(None)
            continue
        try:
            day = datetime.date.fromisoformat(text)
        except ValueError:
            raise _error(400, f"{name}: a date, YYYY-MM-DD (got {text!r})", param=name) from None
        moment = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.timezone.utc)
        found.append(moment + datetime.timedelta(days=1) if name == "end_date" else moment)
    return found[0], found[1]
