"""Who a key belongs to, in the proxy's database: teams, their members, internal users and end customers (the
request's ``user``), each with a budget row (:data:`gesso.proxy.store.budgets`) holding its budget, spend and
limits, which a call's price is held against with the key's own (:mod:`gesso.proxy.ledger`).

litellm's model: a team has members with roles (``admin`` or ``user``) and, optionally, a budget for each member
inside the team; an internal user has a role (``proxy_admin``, ``internal_user``, ``internal_user_viewer``) and a
personal budget; a key may belong to a team, a user, or both (then the user is a member of the team).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import sqlalchemy as sa

from gesso.proxy import store
from gesso.proxy.store import Budget, budgets, customers, keys, members, now, parse_duration, reservations, teams, users

#: an internal user's roles, and a team member's
USER_ROLES = ("proxy_admin", "internal_user", "internal_user_viewer")
MEMBER_ROLES = ("admin", "user")
#: the fields a budget row holds, as the API names them
BUDGET_FIELDS = ("max_budget", "budget_duration", "rpm_limit", "ipm_limit")


@attrs.frozen
class Member:
    team_id: str
    user_id: str
    role: str
    budget: Budget

    def info(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "role": self.role, "max_budget_in_team": self.budget.max_budget,
                "spend": round(self.budget.spend, 6)}  # fmt: skip


@attrs.frozen
class Team:
    team_id: str
    team_alias: str | None
    models: tuple[str, ...]
    metadata: Mapping[str, Any]
    blocked: bool
    budget: Budget
    created_at: Any
    updated_at: Any
    members: tuple[Member, ...] = ()

    @property
    def label(self) -> str:
        return self.team_alias or self.team_id

    def member(self, user_id: str | None) -> Member | None:
        return next((m for m in self.members if m.user_id == user_id), None)

    def info(self) -> dict[str, Any]:
        return {
            "team_id": self.team_id,
            "team_alias": self.team_alias,
            "models": list(self.models),
            "metadata": dict(self.metadata),
            "blocked": self.blocked,
            **self.budget.info(),
            "members_with_roles": [m.info() for m in self.members],
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@attrs.frozen
class User:
    user_id: str
    user_email: str | None
    user_role: str
    models: tuple[str, ...]
    metadata: Mapping[str, Any]
    budget: Budget
    created_at: Any
    updated_at: Any
    #: (team_id, role) of each team the user is a member of
    teams: tuple[tuple[str, str], ...] = ()

    def admin_of(self, team_id: str | None) -> bool:
        return any(t == team_id and role == "admin" for t, role in self.teams)

    def member_of(self, team_id: str | None) -> bool:
        return any(t == team_id for t, _ in self.teams)

    def info(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "user_email": self.user_email,
            "user_role": self.user_role,
            "models": list(self.models),
            "metadata": dict(self.metadata),
            **self.budget.info(),
            "teams": [t for t, _ in self.teams],
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@attrs.frozen
class Customer:
    user_id: str
    alias: str | None
    blocked: bool
    metadata: Mapping[str, Any]
    implicit: bool
    budget: Budget
    created_at: Any
    updated_at: Any

    def info(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "alias": self.alias,
            "blocked": self.blocked,
            "metadata": dict(self.metadata),
            **self.budget.info(),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@attrs.frozen
class Owners:
    """A key's team, its owner's membership of that team, and its owner, as one read found them."""

    team: Team | None = None
    member: Member | None = None
    user: User | None = None


@attrs.frozen
class Principal:
    """Who calls a management route, and what that lets them see and change (litellm's roles): the admin (the
    master key, or a key of a ``proxy_admin`` user); an internal user (through one of their keys), who reads and
    makes their own keys, and the keys of the teams they administer; an ``internal_user_viewer``, who only
    reads; a key without an owner, which reads only itself."""

    admin: bool
    key: store.Key | None = None
    user: User | None = None

    @property
    def role(self) -> str:
        return "proxy_admin" if self.admin else self.user.user_role if self.user is not None else "key"

    @property
    def writes(self) -> bool:
        """May change what it sees (a viewer, or a key without an owner, may not)."""
        return self.admin or self.role == "internal_user"

    def admin_of(self, team_id: str | None) -> bool:
        return self.admin or (self.user is not None and team_id is not None and self.user.admin_of(team_id))

    def member_of(self, team_id: str | None) -> bool:
        return self.admin or (self.user is not None and self.user.member_of(team_id))

    def _mine(self) -> tuple[str | None, list[str]]:
        user = self.user
        return (user.user_id if user else None), [t for t, role in (user.teams if user else ()) if role == "admin"]

    def sees_key(self, key: store.Key) -> bool:
        """Its own key, its owner's keys, and the keys of the teams its owner administers."""
        if self.admin or (self.key is not None and key.token_hash == self.key.token_hash):
            return True
        user_id, teams_run = self._mine()
        return user_id is not None and (key.user_id == user_id or key.team_id in teams_run)

    def manages_key(self, key: store.Key) -> bool:
        return self.writes and self.sees_key(key)

    def keys_visible(self) -> Any:
        """What it may see of the keys table, as a condition (``None``: all)."""
        if self.admin:
            return None
        user_id, teams_run = self._mine()
        own = keys.c.token_hash == (self.key.token_hash if self.key is not None else "")
        if user_id is None:
            return own
        return sa.or_(own, keys.c.user_id == user_id, keys.c.team_id.in_(teams_run))

    def spend_visible(self) -> Any:
        """What it may see of the spend log, as a condition (``None``: all)."""
        if self.admin:
            return None
        user_id, teams_run = self._mine()
        own = store.spend_logs.c.token_hash == (self.key.token_hash if self.key is not None else "")
        if user_id is None:
            return own
        logs = store.spend_logs.c
        return sa.or_(own, logs.user_id == user_id, logs.team_id.in_(teams_run))


#: the owners of a key that has no team and no owner (most keys: one object for all of their calls)
NOBODY = Owners()


class Taken(Exception):
    """The id or alias is someone else's already."""


def _iso(value: Any) -> str | None:
    return store._aware(value).isoformat() if value is not None else None


def _budget_row(values: Mapping[str, Any]) -> dict[str, Any]:
    moment = now()
    duration = values.get("budget_duration")
    return {
        "budget_id": uuid.uuid4().hex,
        "max_budget": values.get("max_budget"),
        "budget_duration": duration,
        "budget_reset_at": moment + parse_duration(duration, "budget_duration") if duration else None,
        "spend": 0.0,
        "reserved": 0.0,
        "rpm_limit": values.get("rpm_limit"),
        "ipm_limit": values.get("ipm_limit"),
        "created_at": moment,
        "updated_at": moment,
    }


def _budget_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    values = {name: changes[name] for name in BUDGET_FIELDS if name in changes}
    if "budget_duration" in values:
        duration = values["budget_duration"]
        values["budget_reset_at"] = now() + parse_duration(duration, "budget_duration") if duration else None
    return values


def _own(changes: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The ``changes`` of an entity's own columns among ``names`` (null clears a list, an object or a flag)."""
    own = {name: changes[name] for name in names if name in changes}
    if "models" in own:
        own["models"] = list(own["models"] or [])
    if "metadata" in own:
        own["metadata"] = dict(own["metadata"] or {})
    if "blocked" in own:
        own["blocked"] = bool(own["blocked"])
    return own


def valid_id(value: object) -> bool:
    """A team's, a user's or a customer's id: printable text of 1 to 256 characters (no NUL, no control
    character, what every database's column holds)."""
    return isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable()


def _nul_free(*texts: str | None) -> bool:
    return all(text is None or "\x00" not in text for text in texts)


class Directory:
    """Teams, members, users and customers in one proxy database (a :class:`gesso.proxy.store.Store`)."""

    def __init__(self, database: store.Store) -> None:
        self.store = database

    @property
    def engine(self) -> Any:
        return self.store.engine

    # -- reading ----------------------------------------------------------------------------------------

    async def _budgets(self, conn: Any, ids: Iterable[str]) -> dict[str, Budget]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = (await conn.execute(budgets.select().where(budgets.c.budget_id.in_(wanted)))).all()
        return {row.budget_id: Budget.from_row(row) for row in rows}

    async def _teams(self, conn: Any, rows: Sequence[Any]) -> list[Team]:
        ids = [row.team_id for row in rows]
        found = (await conn.execute(members.select().where(members.c.team_id.in_(ids)))).all() if ids else []
        by_budget = await self._budgets(conn, [r.budget_id for r in rows] + [m.budget_id for m in found])
        made = []
        for row in rows:
            team_members = tuple(
                Member(m.team_id, m.user_id, m.role, by_budget[m.budget_id].evolve_level("member", m.user_id))
                for m in sorted(found, key=lambda m: m.created_at)
                if m.team_id == row.team_id
            )
            label = row.team_alias or row.team_id
            made.append(Team(row.team_id, row.team_alias, tuple(row.models or ()), dict(row.metadata or {}),
                             bool(row.blocked), by_budget[row.budget_id].evolve_level("team", label), row.created_at,
                             row.updated_at, team_members))  # fmt: skip
        return made

    async def _users(self, conn: Any, rows: Sequence[Any]) -> list[User]:
        ids = [row.user_id for row in rows]
        found = (await conn.execute(members.select().where(members.c.user_id.in_(ids)))).all() if ids else []
        by_budget = await self._budgets(conn, [r.budget_id for r in rows])
        made = []
        for row in rows:
            roles = tuple((m.team_id, m.role) for m in found if m.user_id == row.user_id)
            budget = by_budget[row.budget_id].evolve_level("user", row.user_id)
            made.append(User(row.user_id, row.user_email, row.user_role, tuple(row.models or ()),
                             dict(row.metadata or {}), budget, row.created_at, row.updated_at, roles))  # fmt: skip
        return made

    async def team(self, team_id: str) -> Team | None:
        """A team by its id or its alias."""
        if not _nul_free(team_id):
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(teams.select().where(teams.c.team_id == team_id))).first()
            if row is None:
                row = (await conn.execute(teams.select().where(teams.c.team_alias == team_id))).first()
            return (await self._teams(conn, [row]))[0] if row is not None else None

    async def user(self, user_id: str) -> User | None:
        if not _nul_free(user_id):
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(users.select().where(users.c.user_id == user_id))).first()
            return (await self._users(conn, [row]))[0] if row is not None else None

    async def customer(self, user_id: str) -> Customer | None:
        if not _nul_free(user_id):
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(customers.select().where(customers.c.user_id == user_id))).first()
            if row is None:
                return None
            budget = (await self._budgets(conn, [row.budget_id]))[row.budget_id]
        return _customer(row, budget)

    async def owners(self, team_id: str | None, user_id: str | None) -> Owners:
        """A key's team, membership and owner, in one connection."""
        async with self.engine.connect() as conn:
            team = user = None
            if team_id is not None:
                row = (await conn.execute(teams.select().where(teams.c.team_id == team_id))).first()
                team = (await self._teams(conn, [row]))[0] if row is not None else None
            if user_id is not None:
                row = (await conn.execute(users.select().where(users.c.user_id == user_id))).first()
                user = (await self._users(conn, [row]))[0] if row is not None else None
        return Owners(team, team.member(user_id) if team is not None else None, user)

    async def list_teams(self, *, page: int = 1, size: int = 100, visible: Sequence[str] | None = None) -> list[Team]:
        query = teams.select().order_by(teams.c.created_at, teams.c.team_id).offset((page - 1) * size).limit(size)
        if visible is not None:
            query = query.where(teams.c.team_id.in_(list(visible)))
        async with self.engine.connect() as conn:
            return await self._teams(conn, (await conn.execute(query)).all())

    async def list_users(self, *, page: int = 1, size: int = 100, team_id: str | None = None) -> list[User]:
        query = users.select().order_by(users.c.created_at, users.c.user_id).offset((page - 1) * size).limit(size)
        if team_id is not None:
            query = query.where(users.c.user_id.in_(sa.select(members.c.user_id).where(members.c.team_id == team_id)))
        async with self.engine.connect() as conn:
            return await self._users(conn, (await conn.execute(query)).all())

    async def list_customers(self, *, page: int = 1, size: int = 100) -> list[Customer]:
        query = customers.select().order_by(customers.c.created_at, customers.c.user_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.offset((page - 1) * size).limit(size))).all()
            by_budget = await self._budgets(conn, [r.budget_id for r in rows])
        return [_customer(row, by_budget[row.budget_id]) for row in rows]

    # -- teams ------------------------------------------------------------------------------------------

    async def create_team(self, values: Mapping[str, Any], roster: Sequence[Mapping[str, Any]] = ()) -> Team:
        """A new team (``team_id`` chosen or made), with its members (users made when they do not exist)."""
        team_id = values.get("team_id") or uuid.uuid4().hex
        budget = _budget_row(values)
        moment = budget["created_at"]
        async with self.engine.begin() as conn:
            # a team is named by its id or its alias: no id may be another team's alias, nor the other way round
            named = sa.or_(teams.c.team_id == team_id, teams.c.team_alias == team_id)
            if (await conn.execute(sa.select(teams.c.team_id).where(named))).first():
                raise Taken(f"team_id: {team_id!r} is taken (a team's id or alias)")
            alias = values.get("team_alias")
            await self._alias_free(conn, alias)
            await conn.execute(budgets.insert().values(**budget))
            await conn.execute(teams.insert().values(
                team_id=team_id, team_alias=alias, models=list(values.get("models") or []),
                metadata=dict(values.get("metadata") or {}), blocked=bool(values.get("blocked")),
                budget_id=budget["budget_id"], created_at=moment, updated_at=moment,
            ))  # fmt: skip
            for member in roster:
                await self._add_member(conn, team_id, member)
        found = await self.team(team_id)
        assert found is not None
        return found

    async def update_team(self, team_id: str, changes: Mapping[str, Any]) -> Team | None:
        team = await self.team(team_id)
        if team is None:
            return None
        own = _own(changes, ("team_alias", "models", "metadata", "blocked"))
        async with self.engine.begin() as conn:
            alias = own.get("team_alias")
            if alias != team.team_alias:
                await self._alias_free(conn, alias, team.team_id)
            await conn.execute(teams.update().where(teams.c.team_id == team.team_id).values(**own, updated_at=now()))
            await self._change_budget(conn, team.budget.budget_id, changes)
        return await self.team(team.team_id)

    async def delete_team(self, team_id: str) -> list[str] | None:
        """Delete a team, its memberships and its keys; the deleted keys' hashes (``None``: no such team)."""
        team = await self.team(team_id)
        if team is None:
            return None
        async with self.engine.begin() as conn:
            hashes = await _delete_keys(conn, keys.c.team_id == team.team_id)
            gone = [team.budget.budget_id, *(m.budget.budget_id for m in team.members)]
            await conn.execute(members.delete().where(members.c.team_id == team.team_id))
            await conn.execute(teams.delete().where(teams.c.team_id == team.team_id))
            await self._drop_budgets(conn, gone)
        return hashes

    async def _alias_free(self, conn: Any, alias: str | None, own: str | None = None) -> None:
        named = sa.and_(sa.or_(teams.c.team_alias == alias, teams.c.team_id == alias), teams.c.team_id != own)
        if alias is not None and (await conn.execute(sa.select(teams.c.team_id).where(named))).first():
            raise Taken(f"team_alias: {alias!r} is taken (a team's id or alias); team aliases are unique")

    async def add_members(self, team_id: str, roster: Sequence[Mapping[str, Any]]) -> None:
        """Add members to a team in one transaction: all of them, or none (one a member already)."""
        async with self.engine.begin() as conn:
            for member in roster:
                await self._add_member(conn, team_id, member)

    async def _add_member(self, conn: Any, team_id: str, member: Mapping[str, Any]) -> None:
        user_id = member["user_id"]
        there = members.select().where(members.c.team_id == team_id, members.c.user_id == user_id)
        if (await conn.execute(there)).first():
            raise Taken(f"member: {user_id!r} is a member of this team already (POST /team/member_update)")
        if not (await conn.execute(users.select().where(users.c.user_id == user_id))).first():
            await self._insert_user(conn, {"user_id": user_id, "user_email": member.get("user_email")})
        budget = _budget_row({"max_budget": member.get("max_budget_in_team")})
        await conn.execute(budgets.insert().values(**budget))
        await conn.execute(members.insert().values(
            team_id=team_id, user_id=user_id, role=member.get("role") or "user", budget_id=budget["budget_id"],
            created_at=budget["created_at"],
        ))  # fmt: skip

    async def update_member(self, team_id: str, user_id: str, changes: Mapping[str, Any]) -> bool:
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                members.select().where(members.c.team_id == team_id, members.c.user_id == user_id)
            )).first()  # fmt: skip
            if row is None:
                return False
            if changes.get("role") is not None:
                await conn.execute(members.update().where(members.c.team_id == team_id, members.c.user_id == user_id)
                                   .values(role=changes["role"]))  # fmt: skip
            if "max_budget_in_team" in changes:
                await self._change_budget(conn, row.budget_id, {"max_budget": changes["max_budget_in_team"]})
        return True

    async def delete_member(self, team_id: str, user_id: str) -> bool:
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                members.select().where(members.c.team_id == team_id, members.c.user_id == user_id)
            )).first()  # fmt: skip
            if row is None:
                return False
            await conn.execute(members.delete().where(members.c.team_id == team_id, members.c.user_id == user_id))
            await self._drop_budgets(conn, [row.budget_id])
        return True

    # -- users ------------------------------------------------------------------------------------------

    async def create_user(self, values: Mapping[str, Any]) -> User:
        user_id = values.get("user_id") or uuid.uuid4().hex
        async with self.engine.begin() as conn:
            if (await conn.execute(users.select().where(users.c.user_id == user_id))).first():
                raise Taken(f"user_id: {user_id!r} is taken")
            await self._insert_user(conn, {**values, "user_id": user_id})
            for team_id in values.get("teams") or ():
                await self._add_member(conn, team_id, {"user_id": user_id, "role": "user"})
        found = await self.user(user_id)
        assert found is not None
        return found

    async def _insert_user(self, conn: Any, values: Mapping[str, Any]) -> None:
        budget = _budget_row(values)
        await conn.execute(budgets.insert().values(**budget))
        await conn.execute(users.insert().values(
            user_id=values["user_id"], user_email=values.get("user_email"),
            user_role=values.get("user_role") or "internal_user", models=list(values.get("models") or []),
            metadata=dict(values.get("metadata") or {}), budget_id=budget["budget_id"],
            created_at=budget["created_at"], updated_at=budget["created_at"],
        ))  # fmt: skip

    async def update_user(self, user_id: str, changes: Mapping[str, Any]) -> User | None:
        user = await self.user(user_id)
        if user is None:
            return None
        own = _own(changes, ("user_email", "user_role", "models", "metadata"))
        if own.get("user_role", "") is None:
            own["user_role"] = "internal_user"
        async with self.engine.begin() as conn:
            await conn.execute(users.update().where(users.c.user_id == user_id).values(**own, updated_at=now()))
            await self._change_budget(conn, user.budget.budget_id, changes)
        return await self.user(user_id)

    async def delete_user(self, user_id: str) -> list[str] | None:
        """Delete a user, their memberships and their keys; the deleted keys' hashes."""
        user = await self.user(user_id)
        if user is None:
            return None
        async with self.engine.begin() as conn:
            hashes = await _delete_keys(conn, keys.c.user_id == user_id)
            gone = [user.budget.budget_id]
            gone += list((await conn.execute(sa.select(members.c.budget_id).where(members.c.user_id == user_id)))
                         .scalars())  # fmt: skip
            await conn.execute(members.delete().where(members.c.user_id == user_id))
            await conn.execute(users.delete().where(users.c.user_id == user_id))
            await self._drop_budgets(conn, gone)
        return hashes

    # -- customers --------------------------------------------------------------------------------------

    async def create_customer(self, values: Mapping[str, Any], *, implicit: bool = False) -> Customer:
        budget = _budget_row(values)
        moment = budget["created_at"]
        async with self.engine.begin() as conn:
            if (await conn.execute(customers.select().where(customers.c.user_id == values["user_id"]))).first():
                raise Taken(f"user_id: customer {values['user_id']!r} exists already")
            await conn.execute(budgets.insert().values(**budget))
            await conn.execute(customers.insert().values(
                user_id=values["user_id"], alias=values.get("alias"), blocked=bool(values.get("blocked")),
                metadata=dict(values.get("metadata") or {}), implicit=implicit, budget_id=budget["budget_id"],
                created_at=moment, updated_at=moment,
            ))  # fmt: skip
        found = await self.customer(values["user_id"])
        assert found is not None
        return found

    async def implicit_customer(self, user_id: str, max_budget: float) -> Customer:
        """The customer ``user_id``, made with ``max_budget`` (``litellm_settings.max_end_user_budget``) if a
        request names it first (another replica may make it at the same moment: then theirs is used)."""
        try:
            return await self.create_customer({"user_id": user_id, "max_budget": max_budget}, implicit=True)
        except (Taken, sa.exc.IntegrityError):
            found = await self.customer(user_id)
            assert found is not None
            return found

    async def update_customer(self, user_id: str, changes: Mapping[str, Any]) -> Customer | None:
        customer = await self.customer(user_id)
        if customer is None:
            return None
        own = _own(changes, ("alias", "blocked", "metadata"))
        async with self.engine.begin() as conn:
            await conn.execute(customers.update().where(customers.c.user_id == user_id)
                               .values(**own, implicit=False, updated_at=now()))  # fmt: skip
            await self._change_budget(conn, customer.budget.budget_id, changes)
        return await self.customer(user_id)

    async def delete_customers(self, user_ids: Sequence[str]) -> list[str]:
        deleted = []
        async with self.engine.begin() as conn:
            for user_id in user_ids:
                row = (await conn.execute(customers.select().where(customers.c.user_id == user_id))).first()
                if row is not None:
                    await conn.execute(customers.delete().where(customers.c.user_id == user_id))
                    await self._drop_budgets(conn, [row.budget_id])
                    deleted.append(user_id)
        return deleted

    # -- budgets ----------------------------------------------------------------------------------------

    async def _change_budget(self, conn: Any, budget_id: str, changes: Mapping[str, Any]) -> None:
        values = _budget_changes(changes)
        if values:
            await conn.execute(budgets.update().where(budgets.c.budget_id == budget_id)
                               .values(**values, updated_at=now()))  # fmt: skip

    async def _drop_budgets(self, conn: Any, budget_ids: Sequence[str]) -> None:
        """Delete budget rows and their leases (a replica holding one finds it gone and settles as spend)."""
        await conn.execute(reservations.delete().where(reservations.c.token_hash.in_(list(budget_ids)),
                                                       reservations.c.level == "budget"))  # fmt: skip
        await conn.execute(budgets.delete().where(budgets.c.budget_id.in_(list(budget_ids))))


async def _delete_keys(conn: Any, which: Any) -> list[str]:
    """Delete the keys ``which`` selects, and their leases; their hashes."""
    hashes = list((await conn.execute(sa.select(keys.c.token_hash).where(which))).scalars())
    await conn.execute(keys.delete().where(which))
    if hashes:
        await conn.execute(reservations.delete().where(reservations.c.token_hash.in_(hashes)))
    return hashes


def _customer(row: Any, budget: Budget) -> Customer:
    return Customer(row.user_id, row.alias, bool(row.blocked), dict(row.metadata or {}), bool(row.implicit),
                    budget.evolve_level("customer", row.alias or row.user_id), row.created_at,
                    row.updated_at)  # fmt: skip
