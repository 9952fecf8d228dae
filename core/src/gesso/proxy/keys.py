"""Virtual keys and spend, litellm's API shape: ``POST /key/generate``, ``GET /key/info``, ``POST /key/update``,
``POST /key/delete``, ``POST /key/block``, ``POST /key/unblock``, ``GET /key/list``, ``GET /spend/logs`` and
``GET /spend/report``.

The master key (or a ``proxy_admin`` user's key) may do everything. An internal user, through one of their
keys, makes keys they own (in a team they belong to, if they name one), and reads and changes their own keys and
those of the teams they administer (:class:`gesso.proxy.directory.Principal`); an ``internal_user_viewer``
only reads; a key without an owner reads only its own info and spend. A key's plaintext is shown once, by
``/key/generate``; everywhere else a key is named by its plaintext, its hash (``token``) or its alias. Fields
gesso does not take are refused by name, never dropped; a value out of range is a 400 naming the field and the
range, never a database error.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gesso import errors
from gesso.proxy import store
from gesso.proxy.config import ProxyConfig
from gesso.proxy.directory import Directory, Principal, valid_id
from gesso.proxy.http import Caller, ClientGone, ProxyError, error_response, json_object, json_response, read_body
from gesso.proxy.ledger import Ledger

#: the fields /key/generate and /key/update take
FIELDS = (
    "key", "key_alias", "models", "max_budget", "budget_duration", "duration", "rpm_limit", "ipm_limit", "metadata",
    "blocked", "team_id", "user_id",
)  # fmt: skip
UPDATABLE = tuple(f for f in FIELDS if f not in ("key", "team_id", "user_id"))
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


#: a route's work, given the request, who calls it and the proxy's database: what the answer's JSON holds
Handler = Callable[[Request, Principal, store.Store], Awaitable[Any]]


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

    async def _handle(self, request: Request, handler: Handler, *, admin: bool = True, users: bool = False) -> Response:
        """Answer a management route: ``admin`` routes are the admin's; with ``users`` too, an internal user's
        (the handler scopes what they see and change); otherwise any caller's (the handler scopes it)."""
        request_id = uuid.uuid4().hex
        try:
            db = self.db
            caller = await self.proxy.authenticate(request)
            if self.proxy.config.master_key is None:
                raise _error(401, "Managing keys needs general_settings.master_key", type="auth_error")
            who = await self.principal(caller, db)
            if admin and not who.admin and not (users and who.user is not None):
                raise _error(401, "Only the master key (or a proxy_admin user's key) can do this", type="auth_error")
            result = await handler(request, who, db)
            return json_response(result, 200, {"x-request-id": request_id})
        except errors.GessoError as exc:
            return error_response(exc, request_id)
        except ClientGone:  # gone before its body arrived: nothing is answered
            return Response(status_code=499)

    async def principal(self, caller: Caller, db: store.Store) -> Principal:
        """Who ``caller`` is: the admin, a key, or a key's owner (with their role and teams)."""
        key = caller.key
        if caller.admin or key is None or key.user_id is None:
            return Principal(caller.admin, key)
        user = await Directory(db).user(key.user_id)
        return Principal(user is not None and user.user_role == "proxy_admin", key, user)

    # -- keys ---------------------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, FIELDS, self.proxy.body_timeout)
            values = _checked(body)
            await self._owned(caller, db, values)
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

        return await self._handle(request, run, users=True)

    async def _owned(self, caller: Principal, db: store.Store, values: dict[str, Any]) -> None:
        """Check a new key's team and owner: they exist, the owner is in the team, and a caller who is not the
        admin makes a key they own, within the limits of its team and their own. (Not one of another member's,
        even as a team's admin: a key spends its owner's personal budget, and a key of a ``proxy_admin`` is an
        admin's. Nor one without an owner: the owner's budget holds on every key of theirs.)"""
        if not caller.writes:
            raise _error(403, f"An {caller.role} may only read", type="permission_error")
        if not caller.admin:
            assert caller.user is not None
            if "user_id" not in values:
                values["user_id"] = caller.user.user_id
            if values["user_id"] != caller.user.user_id:
                raise _error(403, "user_id: you may make keys you own only (leave user_id out, or give yours)",
                             type="permission_error", param="user_id")  # fmt: skip
            if values.get("team_id") is not None and not caller.member_of(values["team_id"]):
                raise _error(403, f"team_id: you are not a member of team {values['team_id']!r}",
                             type="permission_error", param="team_id")  # fmt: skip
        directory = Directory(db)
        team_id, user_id = values.get("team_id"), values.get("user_id")
        for name, value in (("team_id", team_id), ("user_id", user_id)):
            if value is not None:
                _check_id(value, name)
        team = await directory.team(team_id) if team_id is not None else None
        if team_id is not None and (team is None or team.team_id != team_id):
            raise _error(400, f"team_id: no team {team_id!r} (POST /team/new makes one)", param="team_id")
        if team is not None and user_id is not None and team.member(user_id) is None:
            raise _error(400, f"user_id: {user_id!r} is not a member of team {team.team_id!r} (POST "
                         "/team/member_add first)", param="user_id")  # fmt: skip
        user = await directory.user(user_id) if user_id is not None else None
        if user_id is not None and user is None:
            if not caller.admin:
                raise _error(400, f"user_id: no user {user_id!r}", param="user_id")
            user = await directory.create_user({"user_id": user_id})  # litellm makes the key's owner too
        if not caller.admin:
            for level, entity in (("team", team), ("user", user)):
                if entity is not None:
                    _within(values, entity.models, entity.budget, level)

    async def info(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            given = request.query_params.get("key")
            if given is None:
                if caller.key is None:
                    raise _error(400, "key: which key? (?key=<key, hash or alias>)", param="key")
                key = caller.key
            else:
                key = await self._find(given)
                if not caller.sees_key(key):
                    raise _error(403, "A virtual key may only read its own info (a user's key: its owner's keys, "
                                 "and those of the teams they administer)", type="permission_error")  # fmt: skip
            return {"key": key.token_hash, "info": key.info()}  # never the plaintext, even if given

        return await self._handle(request, run, admin=False)

    async def update(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("key", *UPDATABLE), self.proxy.body_timeout)
            given = body.pop("key", None)
            if not isinstance(given, str):
                raise _error(400, "key: required (the key, its hash or its alias)", param="key")
            key = await self._find(given)
            values = _checked(body)
            await self._may_change(caller, db, key, values)
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

        return await self._handle(request, run, users=True)

    async def _may_change(self, caller: Principal, db: store.Store, key: store.Key, values: Mapping[str, Any]) -> None:
        """A caller who is not the admin changes only keys it manages, within their team's and owner's limits."""
        if caller.admin:
            return
        if not caller.manages_key(key):
            raise _error(403, "You may change only your own keys (and those of the teams you administer)",
                         type="permission_error", param="key")  # fmt: skip
        if "blocked" in values:  # a block is the admin's (/key/block): its owner must not lift it
            raise _error(403, "blocked: only the admin blocks and unblocks keys", type="permission_error",
                         param="blocked")  # fmt: skip
        owners = await Directory(db).owners(key.team_id, key.user_id)
        for level, entity in (("team", owners.team), ("user", owners.user)):
            if entity is not None:
                _within(values, entity.models, entity.budget, level)

    async def delete(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("keys", "key_aliases"), self.proxy.body_timeout)
            groups = [body.get("keys") or [], body.get("key_aliases") or []]
            names = [n for group in groups if isinstance(group, list) for n in group]
            if not names or not all(isinstance(g, list) for g in groups) or not all(isinstance(n, str) for n in names):
                raise _error(400, "keys or key_aliases: a list of keys (plaintext, hash) or aliases", param="keys")
            found = [await self._find(name) for name in names]
            for key in found:
                await self._may_change(caller, db, key, {})
            await db.delete_keys([k.token_hash for k in found])
            for gone in found:
                self._changed(gone.token_hash)
            return {"deleted_keys": names}

        return await self._handle(request, run, users=True)

    async def block(self, request: Request, *, blocked: bool) -> Response:
        """``POST /key/block`` / ``/key/unblock``: a blocked key is refused (401, ``key_blocked``) on its next
        request: at once on this replica, within ledger.KEY_TTL on the others."""

        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
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
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            query = request.query_params
            page = _positive_int(query.get("page", "1"), "page")
            size = min(_positive_int(query.get("size", "10"), "size"), 100)
            full = query.get("return_full_object", "false").lower() == "true"
            found, total = await db.list_keys(
                key_alias=query.get("key_alias"), team_id=query.get("team_id"), user_id=query.get("user_id"),
                visible=caller.keys_visible(), page=page, size=size,
            )  # fmt: skip
            return {
                "keys": [k.info() if full else k.token_hash for k in found],
                "total_count": total,
                "current_page": page,
                "total_pages": max(1, math.ceil(total / size)),
            }

        return await self._handle(request, run, admin=False)

    # -- spend --------------------------------------------------------------------------------------------

    async def spend_logs(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            query = request.query_params
            token = None
            if query.get("api_key"):
                key = await db.find_key(query["api_key"])
                if key is None or not caller.sees_key(key):  # (one answer: whether it exists is not said)
                    raise _error(404, "api_key: no such key you may see", type="not_found_error", param="api_key")
                token = key.token_hash
            start, end = _dates(query)
            return await db.spend_logs(
                token_hash=token, model_name=query.get("model"), team_id=query.get("team_id"),
                user_id=query.get("user_id"), end_user=query.get("end_user"), start=start, end=end,
                limit=min(_positive_int(query.get("limit", "1000"), "limit"), 10_000), visible=caller.spend_visible(),
            )  # fmt: skip

        return await self._handle(request, run, admin=False)

    async def spend_report(self, request: Request) -> Response:
        """Totals by day, and by key and model name, or (``?group_by=``) by team, user, customer, model or key."""

        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            start, end = _dates(request.query_params)
            group_by = request.query_params.get("group_by")
            if group_by is not None and group_by not in store.GROUPS:
                raise _error(400, f"group_by: one of {', '.join(store.GROUPS)} (got {_shown(group_by)})",
                             param="group_by")  # fmt: skip
            rows = await db.spend_report(start=start, end=end, group_by=group_by, visible=caller.spend_visible())
            return {
                "rows": rows,
                "total": {
                    "requests": sum(r["requests"] for r in rows),
                    "images": sum(r["images"] for r in rows),
                    "cost": round(sum(r["cost"] for r in rows), 6),
                },
            }

        return await self._handle(request, run, admin=False)

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
    for name in ("rpm_limit", "ipm_limit"):
        limit = values.get(name)
        if limit is not None and (type(limit) is not int or not 0 <= limit <= store.MAX_INT):
            raise _error(400, f"{name}: a whole number from 0 to {store.MAX_INT} (got {_shown(limit)})", param=name)
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


def _within(values: Mapping[str, Any], models: Sequence[str], budget: store.Budget, level: str) -> None:
    """A 403 unless a key's models and limits, set by a caller who is not the admin, are within its ``level``'s."""
    asked = values.get("models")
    if models and asked and any(m not in models for m in asked):
        raise _error(403, f"models: your key's {level} allows {', '.join(models)}; name some of them",
                     type="permission_error", param="models")  # fmt: skip
    for name in ("max_budget", "rpm_limit", "ipm_limit"):
        ceiling, given = getattr(budget, name), values.get(name)
        if ceiling is not None and given is not None and given > ceiling:
            raise _error(403, f"{name}: at most your key's {level}'s {ceiling:g}", type="permission_error",
                         param=name)  # fmt: skip


def _check_id(value: Any, name: str) -> None:
    """A team's, a user's or a customer's id: printable text of 1 to 256 characters."""
    if not valid_id(value):
        raise _error(400, f"{name}: printable text of 1 to 256 characters", param=name)


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
