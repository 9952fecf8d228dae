"""Teams, internal users and end customers, litellm's API shape: ``/team/new|info|update|delete|list``,
``/team/member_add|member_delete|member_update``, ``/team/block|unblock``; ``/user/new|info|update|delete|list``;
``/customer/new|info|update|delete|list|block|unblock``.

Each has a budget (``max_budget``, ``budget_duration``), limits (``rpm_limit``, ``ipm_limit``: images per minute)
and, for teams and users, a model list; a call holds its price against every budget on its path at once
(:mod:`gesso.proxy.ledger`). The admin manages all of it; a team's admin manages its members; a user reads
their own record and teams. Fields gesso does not take are refused by name, as on the key API.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gesso.proxy import keys, store
from gesso.proxy.directory import MEMBER_ROLES, USER_ROLES, Directory, Principal, Taken, Team
from gesso.proxy.keys import _body, _check_id, _checked, _error, _float, _positive_int, _shown

#: the budget and limit fields every entity takes
LIMITS = ("max_budget", "budget_duration", "rpm_limit", "ipm_limit")
TEAM_FIELDS = ("team_id", "team_alias", "models", "metadata", "blocked", "members_with_roles", *LIMITS)
USER_FIELDS = ("user_id", "user_email", "user_role", "models", "metadata", "teams", "auto_create_key", *LIMITS)
CUSTOMER_FIELDS = ("user_id", "alias", "blocked", "metadata", *LIMITS)


def routes(proxy: keys.Host) -> list[Route]:
    api = GovernanceApi(proxy)
    routes = [
        Route("/team/new", api.team_new, methods=["POST"]),
        Route("/team/info", api.team_info, methods=["GET"]),
        Route("/team/update", api.team_update, methods=["POST"]),
        Route("/team/delete", api.team_delete, methods=["POST"]),
        Route("/team/list", api.team_list, methods=["GET"]),
        Route("/team/member_add", api.member_add, methods=["POST"]),
        Route("/team/member_delete", api.member_delete, methods=["POST"]),
        Route("/team/member_update", api.member_update, methods=["POST"]),
        Route("/user/new", api.user_new, methods=["POST"]),
        Route("/user/info", api.user_info, methods=["GET"]),
        Route("/user/update", api.user_update, methods=["POST"]),
        Route("/user/delete", api.user_delete, methods=["POST"]),
        Route("/user/list", api.user_list, methods=["GET"]),
        Route("/customer/new", api.customer_new, methods=["POST"]),
        Route("/customer/info", api.customer_info, methods=["GET"]),
        Route("/customer/update", api.customer_update, methods=["POST"]),
        Route("/customer/delete", api.customer_delete, methods=["POST"]),
        Route("/customer/list", api.customer_list, methods=["GET"]),
    ]
    for action, blocked in (("block", True), ("unblock", False)):
        routes.append(Route(f"/team/{action}", functools.partial(api.team_block, blocked=blocked), methods=["POST"]))
        routes.append(
            Route(f"/customer/{action}", functools.partial(api.customer_block, blocked=blocked), methods=["POST"])
        )
    return routes


class GovernanceApi(keys.KeyApi):
    """The routes, on the key API's handling (who calls, body limits, errors)."""

    def _forget(self) -> None:
        """This replica changed a team, user or customer: its cached paths forget them at once (others within
        ledger.KEY_TTL)."""
        if self.proxy.ledger is not None:
            self.proxy.ledger.forget()

    async def _read(self, request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
        return _limits(await _body(request, allowed, self.proxy.body_timeout))

    async def _team(self, db: store.Store, given: Any) -> Team:
        if not isinstance(given, str) or not given:
            raise _error(400, "team_id: required (the team's id or alias)", param="team_id")
        team = await Directory(db).team(given)
        if team is None:
            raise _error(404, f"No team {given!r}", type="not_found_error", param="team_id")
        return team

    # -- teams ------------------------------------------------------------------------------------------

    async def team_new(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await self._read(request, TEAM_FIELDS)
            _text(body, "team_alias")
            if body.get("team_id") is not None:
                _check_id(body["team_id"], "team_id")
            given = body.get("members_with_roles") or []
            if not isinstance(given, list):
                raise _error(400, "members_with_roles: a list of {user_id, role}", param="members_with_roles")
            roster = [_member(m, param="members_with_roles") for m in given]
            _distinct([m["user_id"] for m in roster], "members_with_roles")
            try:
                team = await Directory(db).create_team(body, roster)
            except (Taken, sa.exc.IntegrityError) as exc:
                raise _taken(exc, "team_id") from None
            self._forget()
            return team.info()

        return await self._handle(request, run)

    async def team_info(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            team = await self._team(db, request.query_params.get("team_id"))
            if not caller.member_of(team.team_id):
                raise _error(403, "You may read only the teams you are a member of", type="permission_error")
            found, _ = await db.list_keys(team_id=team.team_id, size=1000, visible=caller.keys_visible())
            return {"team_id": team.team_id, "team_info": team.info(), "keys": [k.info() for k in found]}

        return await self._handle(request, run, admin=False)

    async def team_update(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await self._read(request, tuple(f for f in TEAM_FIELDS if f != "members_with_roles"))
            team = await self._team(db, body.pop("team_id", None))
            _text(body, "team_alias")
            try:
                updated = await Directory(db).update_team(team.team_id, body)
            except (Taken, sa.exc.IntegrityError) as exc:
                raise _taken(exc, "team_alias") from None
            self._forget()
            if updated is None:
                raise _error(404, f"No team {team.team_id!r}", type="not_found_error", param="team_id")
            return updated.info()

        return await self._handle(request, run)

    async def team_block(self, request: Request, *, blocked: bool) -> Response:
        """A blocked team's keys are refused (401, ``team_blocked``) until it is unblocked."""

        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("team_id",), self.proxy.body_timeout)
            team = await self._team(db, body.get("team_id"))
            updated = await Directory(db).update_team(team.team_id, {"blocked": blocked})
            self._forget()
            return updated.info() if updated is not None else {"team_id": team.team_id}

        return await self._handle(request, run)

    async def team_delete(self, request: Request) -> Response:
        """Delete teams, their memberships and their keys."""

        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("team_ids",), self.proxy.body_timeout)
            given = _list(body.get("team_ids"), "team_ids", required=True)
            found = [await self._team(db, team_id) for team_id in given]
            deleted = 0
            for team in found:
                deleted += len(await Directory(db).delete_team(team.team_id) or [])
            self._forget()
            return {"deleted_teams": [t.team_id for t in found], "deleted_keys": deleted}

        return await self._handle(request, run)

    async def team_list(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            page, size = _paging(request)
            mine = None if caller.admin else [t for t, _ in (caller.user.teams if caller.user else ())]
            return [t.info() for t in await Directory(db).list_teams(page=page, size=size, visible=mine)]

        return await self._handle(request, run, admin=False)

    async def member_add(self, request: Request) -> Response:
        """``{"team_id", "member": {"user_id", "user_email", "role"} or a list of them, "max_budget_in_team"}``:
        a user named who does not exist is made (an internal user)."""

        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("team_id", "member", "max_budget_in_team"), self.proxy.body_timeout)
            team = await self._managed(caller, db, body.get("team_id"))
            given = body.get("member")
            default = _member({"user_id": "-", "max_budget_in_team": body.get("max_budget_in_team")})
            roster = [_member(m, param="member") for m in (given if isinstance(given, list) else [given])]
            for member in roster:  # a member's own budget, else the request's
                if member["max_budget_in_team"] is None:
                    member["max_budget_in_team"] = default["max_budget_in_team"]
            _distinct([m["user_id"] for m in roster], "member")
            try:
                await Directory(db).add_members(team.team_id, roster)  # all of them, or none
            except (Taken, sa.exc.IntegrityError) as exc:
                raise _taken(exc, "member") from None
            self._forget()
            return (await self._team(db, team.team_id)).info()

        return await self._handle(request, run, users=True)

    async def member_update(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("team_id", "user_id", "role", "max_budget_in_team"), self.proxy.body_timeout)
            team = await self._managed(caller, db, body.get("team_id"))
            if not caller.admin and caller.user is not None and body.get("user_id") == caller.user.user_id:
                raise _error(403, "user_id: a team's admin may not change their own role or budget in it",
                             type="permission_error", param="user_id")  # fmt: skip
            checked = _member({k: body[k] for k in ("user_id", "role", "max_budget_in_team") if k in body}, None)
            changes: dict[str, Any] = {k: checked[k] for k in ("role", "max_budget_in_team") if k in body}
            if not await Directory(db).update_member(team.team_id, body["user_id"], changes):
                raise _not_member(body["user_id"], team)
            self._forget()
            return (await self._team(db, team.team_id)).info()

        return await self._handle(request, run, users=True)

    async def member_delete(self, request: Request) -> Response:
        """Remove a member (their keys in the team are refused from then on: 403 ``team_member_removed``)."""

        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("team_id", "user_id"), self.proxy.body_timeout)
            team = await self._managed(caller, db, body.get("team_id"))
            _check_id(body.get("user_id"), "user_id")
            if not await Directory(db).delete_member(team.team_id, body["user_id"]):
                raise _not_member(body["user_id"], team)
            self._forget()
            return (await self._team(db, team.team_id)).info()

        return await self._handle(request, run, users=True)

    async def _managed(self, caller: Principal, db: store.Store, given: Any) -> Team:
        """The team ``given``, if the caller administers it (the admin, or one of its ``admin`` members)."""
        team = await self._team(db, given)
        if not caller.writes or not caller.admin_of(team.team_id):
            raise _error(403, f"Only the admin or an admin of team {team.team_id!r} may change its members",
                         type="permission_error", param="team_id")  # fmt: skip
        return team

    # -- users ------------------------------------------------------------------------------------------

    async def user_new(self, request: Request) -> Response:
        """A user, and (unless ``auto_create_key`` is false, as litellm) a key they own, shown once."""

        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await self._read(request, USER_FIELDS)
            _user_fields(body)
            if body.get("user_id") is not None:
                _check_id(body["user_id"], "user_id")
            directory = Directory(db)
            teams = _list(body.get("teams"), "teams")
            _distinct(teams, "teams")
            for team_id in teams:
                body_team = await self._team(db, team_id)
                if body_team.team_id != team_id:
                    raise _error(400, f"teams: name teams by their id ({team_id!r} is an alias)", param="teams")
            try:
                user = await directory.create_user(body)
            except (Taken, sa.exc.IntegrityError) as exc:
                raise _taken(exc, "user_id") from None
            answer = user.info()
            if body.get("auto_create_key", True) is not False:
                plaintext, key = await db.create_key(user_id=user.user_id)
                answer.update(key=plaintext, token=key.token_hash)
            self._forget()
            return answer

        return await self._handle(request, run)

    async def user_info(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            given = request.query_params.get("user_id")
            if given is None and caller.user is not None:
                given = caller.user.user_id
            if not isinstance(given, str):
                raise _error(400, "user_id: which user? (?user_id=)", param="user_id")
            if not caller.admin and (caller.user is None or caller.user.user_id != given):
                raise _error(403, "You may read only your own user", type="permission_error", param="user_id")
            user = await Directory(db).user(given)
            if user is None:
                raise _error(404, f"No user {given!r}", type="not_found_error", param="user_id")
            found, _ = await db.list_keys(user_id=user.user_id, size=1000)
            return {"user_id": user.user_id, "user_info": user.info(), "keys": [k.info() for k in found]}

        return await self._handle(request, run, admin=False)

    async def user_update(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await self._read(request, tuple(f for f in USER_FIELDS if f not in ("teams", "auto_create_key")))
            given = body.pop("user_id", None)
            _check_id(given, "user_id")
            _user_fields(body)
            updated = await Directory(db).update_user(given, body)
            if updated is None:
                raise _error(404, f"No user {given!r}", type="not_found_error", param="user_id")
            self._forget()
            return updated.info()

        return await self._handle(request, run)

    async def user_delete(self, request: Request) -> Response:
        """Delete users, their memberships and their keys."""

        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("user_ids",), self.proxy.body_timeout)
            given = _list(body.get("user_ids"), "user_ids", required=True)
            directory = Directory(db)
            for user_id in given:
                if await directory.user(user_id) is None:
                    raise _error(404, f"No user {user_id!r}", type="not_found_error", param="user_ids")
            deleted = sum([len(await directory.delete_user(u) or []) for u in given])
            self._forget()
            return {"deleted_users": given, "deleted_keys": deleted}

        return await self._handle(request, run)

    async def user_list(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            page, size = _paging(request)
            found = await Directory(db).list_users(page=page, size=size, team_id=request.query_params.get("team_id"))
            return {"users": [u.info() for u in found], "page": page, "page_size": size}

        return await self._handle(request, run)

    # -- customers --------------------------------------------------------------------------------------

    async def customer_new(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await self._read(request, CUSTOMER_FIELDS)
            _check_id(body.get("user_id"), "user_id")
            _text(body, "alias")
            try:
                customer = await Directory(db).create_customer(body)
            except (Taken, sa.exc.IntegrityError) as exc:
                raise _taken(exc, "user_id") from None
            self._forget()
            return customer.info()

        return await self._handle(request, run)

    async def customer_info(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            given = request.query_params.get("end_user_id") or request.query_params.get("user_id")
            _check_id(given, "end_user_id")
            assert given is not None
            customer = await Directory(db).customer(given)
            if customer is None:
                raise _error(404, f"No customer {given!r}", type="not_found_error", param="end_user_id")
            return customer.info()

        return await self._handle(request, run)

    async def customer_update(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await self._read(request, CUSTOMER_FIELDS)
            given = body.pop("user_id", None)
            _check_id(given, "user_id")
            _text(body, "alias")
            updated = await Directory(db).update_customer(given, body)
            if updated is None:
                raise _error(404, f"No customer {given!r}", type="not_found_error", param="user_id")
            self._forget()
            return updated.info()

        return await self._handle(request, run)

    async def customer_block(self, request: Request, *, blocked: bool) -> Response:
        """``{"user_ids": [...]}``: a blocked customer's requests are refused (403, ``customer_blocked``)."""

        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("user_ids",), self.proxy.body_timeout)
            given = _list(body.get("user_ids"), "user_ids", required=True)
            directory = Directory(db)
            done = []
            for user_id in given:
                _check_id(user_id, "user_ids")
                if await directory.customer(user_id) is None:  # blocking one never seen makes it, as litellm
                    await directory.create_customer({"user_id": user_id})
                done.append(await directory.update_customer(user_id, {"blocked": blocked}))
            self._forget()
            return {"blocked_users" if blocked else "unblocked_users": [c.user_id for c in done if c is not None]}

        return await self._handle(request, run)

    async def customer_delete(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            body = await _body(request, ("user_ids",), self.proxy.body_timeout)
            given = _list(body.get("user_ids"), "user_ids", required=True)
            directory = Directory(db)
            for user_id in given:  # every one there, or none deleted
                if await directory.customer(user_id) is None:
                    raise _error(404, f"No customer {user_id!r}", type="not_found_error", param="user_ids")
            deleted = await directory.delete_customers(given)
            self._forget()
            return {"deleted_customers": deleted}

        return await self._handle(request, run)

    async def customer_list(self, request: Request) -> Response:
        async def run(request: Request, caller: Principal, db: store.Store) -> Any:
            page, size = _paging(request)
            return [c.info() for c in await Directory(db).list_customers(page=page, size=size)]

        return await self._handle(request, run)


def _limits(body: dict[str, Any]) -> dict[str, Any]:
    """The body with its budget, limits, models, metadata and flag checked as the key API checks them."""
    shared = {k: body[k] for k in ("models", "metadata", "blocked", *LIMITS) if k in body}
    return {**body, **_checked(shared)}


def _text(body: Mapping[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value or len(value) > 256 or not value.isprintable()):
        raise _error(400, f"{name}: printable text of 1 to 256 characters", param=name)


def _list(value: Any, name: str, *, required: bool = False) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or (required and not value):
        raise _error(400, f"{name}: a list of ids", param=name)
    return value


def _paging(request: Request) -> tuple[int, int]:
    page = _positive_int(request.query_params.get("page", "1"), "page")
    size = min(_positive_int(request.query_params.get("page_size", "100"), "page_size"), 1000)
    return page, size


def _distinct(ids: list[str], param: str) -> None:
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise _error(400, f"{param}: {repeated[0]!r} is named twice", param=param)


def _member(given: Any, default_role: str | None = "user", *, param: str = "member") -> dict[str, Any]:
    """A member as ``members_with_roles`` or ``member`` give it: ``user_id``, ``user_email``, ``role``, and the
    member's budget in the team (``max_budget_in_team``)."""
    if not isinstance(given, dict):
        raise _error(400, f"{param}: an object with user_id (and role: admin or user)", param=param)
    unknown = sorted(set(given) - {"user_id", "user_email", "role", "max_budget_in_team"})
    if unknown:
        raise _error(400, f"{unknown[0]}: not taken in a member (user_id, user_email, role)", param=unknown[0])
    _check_id(given.get("user_id"), "user_id")
    _text(given, "user_email")
    role = given.get("role") if given.get("role") is not None else default_role
    if role is not None and role not in MEMBER_ROLES:
        raise _error(400, f"role: one of {', '.join(MEMBER_ROLES)} (got {_shown(role)})", param="role")
    budget = given.get("max_budget_in_team")
    if budget is not None:
        number = _float(budget)
        if number is None or not 0 <= number <= keys.MAX_BUDGET:
            raise _error(400, f"max_budget_in_team: a number of USD from 0 to {keys.MAX_BUDGET:.0f} (got "
                         f"{_shown(budget)})", param="max_budget_in_team")  # fmt: skip
        budget = number
    return {**given, "role": role, "max_budget_in_team": budget}


def _user_fields(body: Mapping[str, Any]) -> None:
    _text(body, "user_email")
    role = body.get("user_role")
    if role is not None and role not in USER_ROLES:
        raise _error(400, f"user_role: one of {', '.join(USER_ROLES)} (got {_shown(role)})", param="user_role")
    if "auto_create_key" in body and not isinstance(body["auto_create_key"], bool):
        raise _error(400, "auto_create_key: true or false", param="auto_create_key")


def _taken(exc: Exception, param: str) -> Exception:
    message = str(exc) if isinstance(exc, Taken) else f"{param}: taken (another request made it meanwhile)"
    return _error(400, message, param=message.split(":", 1)[0] if isinstance(exc, Taken) else param)


def _not_member(user_id: Any, team: Team) -> Exception:
    return _error(404, f"{user_id!r} is not a member of team {team.team_id!r}", type="not_found_error",
                  param="user_id")  # fmt: skip
