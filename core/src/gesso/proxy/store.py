"""The proxy's data: virtual keys, budgets and spend logs, on SQLite (one machine) or PostgreSQL (replicas).

SQLAlchemy 2 Core on async drivers (aiosqlite, asyncpg): no call blocks the event loop. The schema is
Alembic's (:mod:`gesso.proxy.migrations`), applied at start or by ``gesso db upgrade``.

Budgets hold across replicas and under concurrency because a call's cost is known before it is sent:
:meth:`Store.reserve` adds it to the key's ``reserved`` in one conditional ``UPDATE`` that succeeds only while
``spend + reserved + cost <= max_budget`` (a row lock on PostgreSQL, the write lock on SQLite), and records the
reservation. :meth:`Store.finish` writes the request's spend-log row and, in the same transaction, settles the
reservation (the actual cost moves to ``spend``; filtered outputs are never charged). Rows are committed in
groups (every request waiting for its group's commit before its answer is sent), so a finished request's row
is never lost and a busy proxy commits once for many requests. Reservations a crashed replica left behind are
released after :data:`STALE_RESERVATION` seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from gesso.aio import within

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgreSQLInsert
    from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert

logger = logging.getLogger("gesso.proxy")

#: the schema. A change to it comes with a new migration (gesso/proxy/migrations/versions) that makes it:
#: tests/test_migrations.py requires an empty database migrated to the newest revision to match it exactly.
metadata = sa.MetaData()

keys = sa.Table(
    "gesso_keys",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("key_name", sa.String(32), nullable=False),
    sa.Column("key_alias", sa.String(256), unique=True),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("max_budget", sa.Float),
    sa.Column("budget_duration", sa.String(16)),
    sa.Column("budget_reset_at", sa.DateTime(timezone=True)),
    sa.Column("spend", sa.Float, nullable=False, default=0.0),
    sa.Column("reserved", sa.Float, nullable=False, default=0.0),
    sa.Column("expires", sa.DateTime(timezone=True)),
    sa.Column("rpm_limit", sa.Integer),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("blocked", sa.Boolean, nullable=False, default=False, server_default=sa.false()),  # migration 0002
    # migration 0004: who owns it, and its images-per-minute limit
    sa.Column("team_id", sa.String(256), index=True),
    sa.Column("user_id", sa.String(256), index=True),
    sa.Column("ipm_limit", sa.Integer),
)
#: the budget, spend and limits of a team, a team member, an internal user or an end customer (migration 0004):
#: each of those rows names one; a key keeps its own in its row
budgets = sa.Table(
    "gesso_budgets",
    metadata,
    sa.Column("budget_id", sa.String(64), primary_key=True),
    sa.Column("max_budget", sa.Float),
    sa.Column("budget_duration", sa.String(16)),
    sa.Column("budget_reset_at", sa.DateTime(timezone=True)),
    sa.Column("spend", sa.Float, nullable=False, default=0.0),
    sa.Column("reserved", sa.Float, nullable=False, default=0.0),
    sa.Column("rpm_limit", sa.Integer),
    sa.Column("ipm_limit", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
teams = sa.Table(
    "gesso_teams",
    metadata,
    sa.Column("team_id", sa.String(256), primary_key=True),
    sa.Column("team_alias", sa.String(256), unique=True),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("blocked", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("budget_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
users = sa.Table(
    "gesso_users",
    metadata,
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("user_email", sa.String(256)),
    sa.Column("user_role", sa.String(32), nullable=False),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("budget_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
members = sa.Table(
    "gesso_team_members",
    metadata,
    sa.Column("team_id", sa.String(256), primary_key=True),
    sa.Column("user_id", sa.String(256), primary_key=True, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("budget_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
customers = sa.Table(
    "gesso_customers",
    metadata,
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("alias", sa.String(256)),
    sa.Column("blocked", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("metadata", sa.JSON, nullable=False),
    #: made by a request under litellm_settings.max_end_user_budget, not by /customer/new
    sa.Column("implicit", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("budget_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
reservations = sa.Table(
    "gesso_reservations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, index=True),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # a replica's lease on a slice of the budget (migration 0003): released by any replica once past it
    sa.Column("expires_at", sa.DateTime(timezone=True), index=True),
    # what token_hash names (migration 0004): a key's hash ("key") or a gesso_budgets row ("budget")
    sa.Column("level", sa.String(8), nullable=False, default="key", server_default="key"),
)
rate_windows = sa.Table(
    "gesso_rate_windows",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("window", sa.BigInteger, primary_key=True),  # minutes since the epoch
    sa.Column("count", sa.Integer, nullable=False),
)
spend_logs = sa.Table(
    "gesso_spend_logs",
    metadata,
    sa.Column("request_id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), index=True),
    sa.Column("key_alias", sa.String(256)),
    sa.Column("route", sa.String(32), nullable=False),
    sa.Column("model_name", sa.String(256), index=True),
    sa.Column("deployment", sa.String(256)),
    sa.Column("model_id", sa.String(2048)),
    sa.Column("images", sa.Integer, nullable=False),
    sa.Column("cost", sa.Float, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # success, failure, cancelled
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("error_type", sa.String(64)),
    sa.Column("user", sa.String(256), index=True),  # the request's ``user``: its end customer (litellm's end_user)
    sa.Column("prompt", sa.Text),
    sa.Column("team_id", sa.String(256), index=True),  # migration 0004: the key's team and owner
    sa.Column("user_id", sa.String(256), index=True),
    # migration 0005: covers the admin UI's overview (Store.spend_series) without reading the rows
    sa.Index("ix_gesso_spend_logs_series", "created_at", "model_name", "status", "images", "cost", "latency_ms"),
    # migration 0006: an answer stored earlier, served again (``served_from``: "idempotency" or "cache") costs 0
    # and names the request that paid for it
    sa.Column("served_from", sa.String(16)),
    sa.Column("replay_of", sa.String(32)),
)

#: admin UI sessions signed out before their expiry (migration 0005): refused until then, then swept
signouts = sa.Table(
    "gesso_ui_signouts",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

#: migration 0006: a request's Idempotency-Key, for the key that sent it (``token_hash``: a virtual key's hash, or
#: ``master``/``anyone``): its body's fingerprint, and the request that runs or ran it: ``running`` (``beat_at``
#: renewed while it runs; a claim not renewed for a while was its replica's, which died, and is taken over) or
#: ``done`` (its answer kept in the result store until ``expires_at``; ``answer``: its status, headers, images)
idempotency = sa.Table(
    "gesso_idempotency",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("idempotency_key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(32), nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), index=True),
    sa.Column("answer", sa.JSON),
)

#: migration 0006: the exact cache's entries: an answer by the hash of its request as sent (``gesso.api.cache_key``,
#: its scope included), served again until ``expires_at`` (its bytes in the result store's ``cache/``, under that
#: key and the id of the request that made them)
cache_entries = sa.Table(
    "gesso_cache",
    metadata,
    sa.Column("cache_key", sa.String(64), primary_key=True),
    sa.Column("model_name", sa.String(256), nullable=False, index=True),
    sa.Column("deployment", sa.String(256), nullable=False),
    sa.Column("request_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("answer", sa.JSON, nullable=False),
)

_EMPTY_LOG = {column.name: None for column in spend_logs.columns}
#: Seconds after which a reservation nobody settled (its replica died) is released.
STALE_RESERVATION = 3600.0
#: Tries of a spend-log group's transaction that PostgreSQL aborts as a deadlock or serialization failure.
FLUSH_ATTEMPTS = 5
#: Seconds a group of spend rows waits for more before it is written (a busy proxy writes one group for many).
GROUP_WAIT = 0.005
#: Seconds a request waits for its spend row's commit before it is answered anyway (the row stays queued).
ROW_WAIT = 10.0
#: Seconds between tries of a database that does not answer: the first, and the most (doubling in between).
RETRY_FIRST, RETRY_CAP = 0.05, 2.0
#: Seconds ``close`` waits for the queued rows.
CLOSE_WAIT = 30.0
_TRANSIENT = ("40P01", "40001")
_DURATION = re.compile(r"(\d{1,12})(s|m|h|d|w|mo)", re.ASCII)  # (at most 16 characters: budget_duration's column)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}
_WORDS = {"hourly": "1h", "daily": "1d", "weekly": "7d", "monthly": "30d"}
#: The longest ``duration`` or ``budget_duration``: 100 years of 365 days (an expiry or a reset must be a date
#: every database and Python can hold; a longer one means "never", which is ``null``).
MAX_DURATION = datetime.timedelta(days=36_500)
#: The largest value of an ``Integer`` column (``rpm_limit``): PostgreSQL's 4-byte integer.
MAX_INT = 2**31 - 1


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def parse_duration(text: Any, field: str) -> datetime.timedelta:
    """litellm's durations: ``30s``, ``30m``, ``30h``, ``30d``, ``2w``, ``1mo`` (30 days); ``hourly``..."""
    value = _WORDS.get(text, text) if isinstance(text, str) else text
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) == 0:
        shown = repr(text) if len(repr(text)) <= 40 else repr(text)[:37] + "..."
        raise ValueError(f"{field}: must be a duration such as 30s, 30m, 30h, 30d, 2w or 1mo (got {shown})")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{field}: at most 100 years (36500d; null for none), got {text!r}")
    return datetime.timedelta(seconds=seconds)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """``sk-`` and 192 random bits (litellm's keys have 128)."""
    return "sk-" + secrets.token_urlsafe(24)


def async_url(url: str) -> str:
    """A plain ``sqlite:///path`` or ``postgresql://...`` URL with its async driver."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


@attrs.frozen
class Key:
    token_hash: str
    key_name: str
    key_alias: str | None
    models: tuple[str, ...]
    max_budget: float | None
    budget_duration: str | None
    budget_reset_at: datetime.datetime | None
    spend: float
    reserved: float
    expires: datetime.datetime | None
    rpm_limit: int | None
    metadata: Mapping[str, Any]
    created_at: datetime.datetime
    updated_at: datetime.datetime
    blocked: bool = False
    team_id: str | None = None
    user_id: str | None = None
    ipm_limit: int | None = None

    #: a budget's level on a call's path (see :class:`Budget`), its table, and its row's id there
    level = "key"
    table = "key"

    @property
    def holder(self) -> str:
        return self.token_hash

    @property
    def label(self) -> str:
        return self.key_alias or self.key_name

    @classmethod
    def from_row(cls, row: Any) -> Key:
        """A key from a result row, or from a mapping of its columns."""
        data = dict(getattr(row, "_mapping", row))
        data["models"] = tuple(data["models"] or ())
        for name in ("budget_reset_at", "expires", "created_at", "updated_at"):
            data[name] = _aware(data[name])
        data["blocked"] = bool(data.get("blocked"))
        return cls(**data)

    def info(self) -> dict[str, Any]:
        """The key's public fields (never its hash's preimage)."""
        return {
            "token": self.token_hash,
            "key_name": self.key_name,
            "key_alias": self.key_alias,
            "team_id": self.team_id,
            "user_id": self.user_id,
            "models": list(self.models),
            "max_budget": self.max_budget,
            "budget_duration": self.budget_duration,
            "budget_reset_at": _iso(self.budget_reset_at),
            "spend": round(self.spend, 6),
            "expires": _iso(self.expires),
            "rpm_limit": self.rpm_limit,
            "ipm_limit": self.ipm_limit,
            "blocked": self.blocked,
            "metadata": dict(self.metadata),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "status": "expired" if self.expires is not None and self.expires <= now() else "active",
        }


@attrs.frozen
class Budget:
    """A ``gesso_budgets`` row: the budget, spend and limits of one team, team member, internal user or end
    customer, named on a call's path by ``level`` and ``label`` (:class:`Key` has the same attributes)."""

    budget_id: str
    max_budget: float | None
    budget_duration: str | None
    budget_reset_at: datetime.datetime | None
    spend: float
    reserved: float
    rpm_limit: int | None
    ipm_limit: int | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    level: str = "budget"
    label: str = ""
    table = "budget"

    @property
    def holder(self) -> str:
        return self.budget_id

    @classmethod
    def from_row(cls, row: Any, level: str = "budget", label: str = "") -> Budget:
        data = {column.name: getattr(row, column.name) for column in budgets.columns}
        for name in ("budget_reset_at", "created_at", "updated_at"):
            data[name] = _aware(data[name])
        return cls(**data, level=level, label=label)

    def evolve_level(self, level: str, label: str) -> Budget:
        """This budget as ``level`` ``label`` of a call's path (a team's, a member's...)."""
        return attrs.evolve(self, level=level, label=label)

    def info(self) -> dict[str, Any]:
        return {
            "max_budget": self.max_budget,
            "budget_duration": self.budget_duration,
            "budget_reset_at": _iso(self.budget_reset_at),
            "spend": round(self.spend, 6),
            "rpm_limit": self.rpm_limit,
            "ipm_limit": self.ipm_limit,
        }


#: a key or a budget row: what a budget lease or a rate-limit window belongs to
Holder = Key | Budget


def _aware(value: Any) -> Any:
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)  # SQLite gives naive datetimes back
    return value


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


#: what a call held of its budgets: a per-call reservation, a share of a lease, a spend to add (no budget), or a
#: tuple of those (one for each level of its path)
Held = Any
_Entry = tuple[dict[str, Any], Any, float, "asyncio.Future[None]"]


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL aborting a transaction that may succeed when tried again."""
    return isinstance(exc, sa.exc.DBAPIError) and getattr(exc.orig, "sqlstate", None) in _TRANSIENT


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database did not answer (down, unreachable, its pool or locks held past their
    wait), rather than that it refused the statement."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, OSError, TimeoutError)):
        return True
    return bool(getattr(exc, "connection_invalidated", False))


class BudgetExceeded(Exception):
    """A budget on the call's path cannot hold its price: ``key`` is that key or budget as the database has it
    now (its ``level`` names it: key, team, member, user or customer)."""

    def __init__(self, key: Holder | None, amount: float) -> None:
        super().__init__("budget exceeded")
        self.key, self.amount = key, amount


class BudgetPending(BudgetExceeded):
    """A budget cannot hold a call's price now, but could without what calls in flight and replicas' leases
    hold: it may once they finish or are given back (the ledger waits, then refuses)."""


@attrs.frozen
class Reservation:
    id: str
    token_hash: str
    amount: float


@attrs.frozen
class LeaseShare:
    """One call's share of a replica's budget lease (:mod:`gesso.proxy.ledger`): settled into the lease."""

    lease_id: str
    table: str
    holder: str
    amount: float


@attrs.frozen
class Spend:
    """A call on a level without a budget: nothing held, its cost added to that key's or budget row's spend."""

    table: str
    holder: str


def _table(table: str) -> tuple[sa.Table, Any]:
    """The table a budget lives in, and its id column."""
    return (keys, keys.c.token_hash) if table == "key" else (budgets, budgets.c.budget_id)


class Store:
    """One database, shared by every replica that points at it."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self.url = url
        self.sqlite = url.startswith("sqlite")
        options: dict[str, Any] = {}
        if self.sqlite:
            options["connect_args"] = {"timeout": 30}
        else:
            options.update(pool_size=10, max_overflow=20)
        self.engine = create_async_engine(async_url(url), **options)
        if self.sqlite:
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._pending: list[_Entry] = []
        self._flushing: asyncio.Task[None] | None = None
        #: called with each committed group's (what it held, cost) pairs (the ledger keeps its leases by it)
        self.on_settled: Callable[[list[tuple[Held, float]]], None] | None = None
        #: since when the database has not answered a spend-row write (None: it answers)
        self.outage_since: float | None = None

    async def close(self, wait: float = CLOSE_WAIT) -> None:
        """Write the queued spend rows (:meth:`drain`) and close the connections."""
        await self.drain(wait)
        await self.engine.dispose()

    async def ping(self) -> None:
        """A query the database must answer (``SELECT 1``): raises when it cannot."""
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def drain(self, wait: float = CLOSE_WAIT) -> None:
        """Write the queued spend rows, for at most ``wait`` seconds (a database that stays away loses them,
        loudly)."""
        if self._flushing is not None and not self._flushing.done():
            try:
                await within(asyncio.shield(self._flushing), wait)
            except (TimeoutError, asyncio.TimeoutError):
                logger.error("the database did not answer for %g s at shutdown: %d spend rows are lost", wait,
                             len(self._pending))  # fmt: skip
                self._flushing.cancel()

    # -- keys ---------------------------------------------------------------------------------------------

    async def create_key(
        self,
        *,
        key: str | None = None,
        key_alias: str | None = None,
        models: Sequence[str] = (),
        max_budget: float | None = None,
        budget_duration: str | None = None,
        duration: str | None = None,
        rpm_limit: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        blocked: bool = False,
        team_id: str | None = None,
        user_id: str | None = None,
        ipm_limit: int | None = None,
    ) -> tuple[str, Key]:
        """A new key: its plaintext (shown once) and its stored row."""
        plaintext = key or new_key()
        moment = now()
        row = {
            "token_hash": hash_key(plaintext),
            "key_name": f"sk-...{plaintext[-4:]}",
            "key_alias": key_alias,
            "models": list(models),
            "max_budget": max_budget,
            "budget_duration": budget_duration,
            "budget_reset_at": moment + parse_duration(budget_duration, "budget_duration") if budget_duration else None,
            "spend": 0.0,
            "reserved": 0.0,
            "expires": moment + parse_duration(duration, "duration") if duration else None,
            "rpm_limit": rpm_limit,
            "metadata": dict(metadata or {}),
            "created_at": moment,
            "updated_at": moment,
            "blocked": bool(blocked),
            "team_id": team_id,
            "user_id": user_id,
            "ipm_limit": ipm_limit,
        }
        async with self.engine.begin() as conn:
            await conn.execute(keys.insert().values(**row))
        return plaintext, Key.from_row(row)

    async def get_key(self, token_hash: str) -> Key | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(keys.select().where(keys.c.token_hash == token_hash))).first()
        return Key.from_row(row) if row is not None else None

    async def find_key(self, given: str) -> Key | None:
        """A key by its plaintext, its hash or its alias."""
        if "\x00" in given:  # no alias holds one (PostgreSQL text cannot), and the query would fail
            return None
        for token_hash in (hash_key(given), given):
            found = await self.get_key(token_hash)
            if found is not None:
                return found
        async with self.engine.connect() as conn:
            row = (await conn.execute(keys.select().where(keys.c.key_alias == given))).first()
        return Key.from_row(row) if row is not None else None

    async def list_keys(
        self,
        *,
        key_alias: str | None = None,
        team_id: str | None = None,
        user_id: str | None = None,
        visible: Any = None,
        page: int = 1,
        size: int = 10,
        alias_contains: str | None = None,
    ) -> tuple[list[Key], int]:
        """A page of keys (and how many there are), filtered by alias, team and owner, and by ``visible`` (a
        condition on the keys' columns: what a caller who is not the admin may see)."""
        query = keys.select()
        count = sa.select(sa.func.count()).select_from(keys)
        conditions = [] if visible is None else [visible]
        if alias_contains is not None:
            if "\x00" in alias_contains:
                return [], 0
            conditions.append(keys.c.key_alias.contains(alias_contains, autoescape=True))
        for column, value in ((keys.c.key_alias, key_alias), (keys.c.team_id, team_id), (keys.c.user_id, user_id)):
            if value is not None:
                if "\x00" in value:  # no row holds one (PostgreSQL text cannot)
                    return [], 0
                conditions.append(column == value)
        if conditions:
            query, count = query.where(*conditions), count.where(*conditions)
        query = query.order_by(keys.c.created_at, keys.c.token_hash).offset((page - 1) * size).limit(size)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            total = (await conn.execute(count)).scalar_one()
        return [Key.from_row(r) for r in rows], total

    async def burning_keys(self, *, visible: Any = None, limit: int = 10) -> list[Key]:
        """The keys with a budget that have spent the largest share of it (``visible``: which the caller sees)."""
        query = keys.select().where(keys.c.max_budget > 0).order_by((keys.c.spend / keys.c.max_budget).desc())
        if visible is not None:
            query = query.where(visible)
        async with self.engine.connect() as conn:
            return [Key.from_row(row) for row in (await conn.execute(query.limit(limit))).all()]

    async def update_key(self, token_hash: str, changes: Mapping[str, Any]) -> Key | None:
        values = dict(changes)
        moment = now()
        if "duration" in values:
            duration = values.pop("duration")
            values["expires"] = moment + parse_duration(duration, "duration") if duration else None
        if "budget_duration" in values:
            duration = values["budget_duration"]
            values["budget_reset_at"] = moment + parse_duration(duration, "budget_duration") if duration else None
        if "models" in values:
            values["models"] = list(values["models"] or [])
        if "blocked" in values:
            values["blocked"] = bool(values["blocked"])  # null: not blocked
        values["updated_at"] = moment
        async with self.engine.begin() as conn:
            done = await conn.execute(keys.update().where(keys.c.token_hash == token_hash).values(**values))
        return await self.get_key(token_hash) if done.rowcount else None

    async def delete_keys(self, token_hashes: Sequence[str]) -> int:
        async with self.engine.begin() as conn:
            done = await conn.execute(keys.delete().where(keys.c.token_hash.in_(list(token_hashes))))
            await conn.execute(reservations.delete().where(reservations.c.token_hash.in_(list(token_hashes))))
        return done.rowcount

    # -- limits and budgets -------------------------------------------------------------------------------

    async def count_request(self, key: Key) -> float | None:
        """Count one request in the key's current minute; the seconds until the next minute when it is over
        ``rpm_limit`` (a fixed one-minute window, shared by every replica), else ``None``."""
        if key.rpm_limit is None:
            return None
        moment = now().timestamp()
        window = int(moment // 60)
        insert = _insert(self.sqlite, rate_windows).values(token_hash=key.token_hash, window=window, count=1)
        upsert = insert.on_conflict_do_update(
            index_elements=[rate_windows.c.token_hash, rate_windows.c.window],
            set_={"count": rate_windows.c.count + 1},
        ).returning(rate_windows.c.count)
        async with self.engine.begin() as conn:
            count = (await conn.execute(upsert)).scalar_one()
            if count == 1:  # the first request of a minute sweeps the key's old windows
                await conn.execute(
                    rate_windows.delete().where(
                        rate_windows.c.token_hash == key.token_hash, rate_windows.c.window < window
                    )
                )
        if count > key.rpm_limit:
            return max(1.0, (window + 1) * 60 - moment)
        return None

    async def take_requests(self, holder: Holder | str, wanted: int, limit: int | None = None) -> tuple[int, float]:
        """Count up to ``wanted`` requests (or images) at once in a holder's current minute (a key, a budget row,
        or a window's id), for this replica to spend locally: how many it may send (0 when the minute's ``limit``,
        by default the holder's ``rpm_limit``, is reached) and the seconds left in the minute."""
        window_id = holder if isinstance(holder, str) else holder.holder
        limit = limit if limit is not None or isinstance(holder, str) else holder.rpm_limit
        assert limit is not None
        moment = now().timestamp()
        window = int(moment // 60)
        insert = _insert(self.sqlite, rate_windows).values(token_hash=window_id, window=window, count=wanted)
        upsert = insert.on_conflict_do_update(
            index_elements=[rate_windows.c.token_hash, rate_windows.c.window],
            set_={"count": rate_windows.c.count + wanted},
        ).returning(rate_windows.c.count)
        async with self.engine.begin() as conn:
            count = (await conn.execute(upsert)).scalar_one()
            if count == wanted:  # the first take of a minute sweeps the holder's old windows
                await conn.execute(
                    rate_windows.delete().where(rate_windows.c.token_hash == window_id, rate_windows.c.window < window)
                )
        granted = max(0, min(wanted, limit - (count - wanted)))
        return granted, max(0.0, (window + 1) * 60 - moment)

    async def reserve(self, key: Key, amount: float) -> Reservation:
        """Hold ``amount`` of the key's budget for one call, atomically; raise :class:`BudgetExceeded`."""
        moment = now()
        reservation = Reservation(uuid.uuid4().hex, key.token_hash, amount)
        async with self.engine.begin() as conn:
            await self._reset_if_due(conn, key, moment)
            held = keys.update().where(keys.c.token_hash == key.token_hash)
            if key.max_budget is not None:
                held = held.where(keys.c.spend + keys.c.reserved + amount <= key.max_budget + 1e-9)
            done = await conn.execute(held.values(reserved=keys.c.reserved + amount))
            if not done.rowcount:
                raise BudgetExceeded(await self._key_in(conn, key.token_hash), amount)
            await conn.execute(
                reservations.insert().values(
                    id=reservation.id, token_hash=key.token_hash, amount=amount, created_at=moment
                )
            )
        return reservation

    async def _key_in(self, conn: Any, token_hash: str) -> Key | None:
        row = (await conn.execute(keys.select().where(keys.c.token_hash == token_hash))).first()
        return Key.from_row(row) if row is not None else None

    async def release_stale(self, older_than: float = STALE_RESERVATION) -> int:
        """Release the per-call reservations no replica settled within ``older_than`` seconds (it died). Leases are
        not: a live replica renews them, and any replica releases them once past their expiry."""
        cutoff = now() - datetime.timedelta(seconds=older_than)
        released = 0
        async with self.engine.begin() as conn:
            stale = reservations.select().where(reservations.c.created_at < cutoff, reservations.c.expires_at.is_(None))
            rows = (await conn.execute(stale)).all()
            for row in sorted(rows, key=lambda row: (row.level, row.token_hash, row.id)):  # the lock order: _write
                # (another replica's sweep may have read the same rows: only the one that deletes a row counts it)
                released += await self._settle(conn, Reservation(row.id, row.token_hash, row.amount), 0.0, row.level)
        return released

    # -- budget leases (gesso.proxy.ledger) ----------------------------------------------------------------

    async def grow_leases(
        self,
        wanted: Sequence[tuple[Holder, str | None, float]],
        price: float,
        calls: int,
        share: float,
        ttl: float,
    ) -> list[tuple[str, float, bool]]:
        """For each (holder, lease_id, needed): add at least ``needed`` to this replica's lease on the holder's
        budget, and up to ``calls - 1`` more calls of ``price`` while that leaves at least ``1 - share`` of what
        remains to other replicas; all in one transaction. Returns, for each, the lease's id, the amount added and
        whether ``lease_id`` was still there (a lease past its expiry may have been released by another replica:
        then a new one is made). When any ``needed`` does not fit, nothing is added and :class:`BudgetExceeded`
        names the most restrictive holder that refused (the one with the least left; of those, the smallest
        budget), or :class:`BudgetPending` when every one that refused would fit without what is held."""
        moment = now()
        expires = moment + datetime.timedelta(seconds=ttl)
        order = sorted(range(len(wanted)), key=lambda i: (wanted[i][0].table, wanted[i][0].holder))
        results: list[tuple[str, float, bool]] = [("", 0.0, False)] * len(wanted)
        async with self.engine.begin() as conn:
            for i in order:  # every holder's row locked first, in the one order every transaction takes them
                await _lock(conn, wanted[i][0].table, wanted[i][0].holder)
            refused: list[tuple[float, Holder, bool]] = []
            granted: dict[int, float] = {}
            for i in order:
                holder, _, needed = wanted[i]
                await self._reset_if_due(conn, holder, moment)
                amount = await self._take(conn, holder, needed, price, calls, share)
                if isinstance(amount, tuple):
                    refused.append(amount)
                else:
                    granted[i] = amount
            if refused:  # the transaction is rolled back: nothing was added anywhere
                # the most restrictive: the least left, then the smallest budget (a customer's before its team's);
                # a level that cannot fit the call whatever comes back refuses before one that may yet
                definite = [r for r in refused if not r[2]]
                worst = min(definite or refused, key=lambda r: (round(r[0], 9), r[1].max_budget or 0.0))[1]
                raise (BudgetExceeded if definite else BudgetPending)(worst, price)
            for i in order:
                holder, lease_id, _ = wanted[i]
                kept = False
                if lease_id is not None:
                    grown = await conn.execute(
                        reservations.update()
                        .where(reservations.c.id == lease_id)
                        .values(amount=reservations.c.amount + granted[i], expires_at=expires)
                    )
                    kept = bool(grown.rowcount)
                if lease_id is None or not kept:
                    lease_id = uuid.uuid4().hex
                    await conn.execute(reservations.insert().values(
                        id=lease_id, token_hash=holder.holder, amount=granted[i], created_at=moment,
                        expires_at=expires, level=holder.table,
                    ))  # fmt: skip
                results[i] = (lease_id, granted[i], kept)
        return results

    async def _take(
        self, conn: Any, holder: Holder, needed: float, price: float, calls: int, share: float
    ) -> float | tuple[float, Holder, bool]:
        """Reserve ``needed`` and what more :meth:`grow_leases` allows of one locked holder's budget: the amount,
        or, when ``needed`` does not fit, (what is left, the holder as it is now, whether it would fit without what
        calls in flight and leases hold: then it may yet). Near the end of a budget (less than ``calls`` calls
        beyond this one left) only ``needed`` is reserved: no lease holds calls it may not make."""
        table, column = _table(holder.table)
        budget = float(holder.max_budget or 0.0)
        remaining, pending = -1.0, False
        for _ in range(4):  # another replica may take what was read as remaining (SQLite has no row lock): again
            read = sa.select(table.c.spend, table.c.reserved).where(column == holder.holder)
            row = (await conn.execute(read)).first()
            remaining = budget - row.spend - row.reserved if row is not None else -1.0
            if remaining + 1e-9 < needed:
                pending = row is not None and row.reserved > 1e-9 and budget - row.spend + 1e-9 >= needed
                break
            if needed <= 0 and remaining < price:  # a top-up with nothing to spare: nothing, and no refusal
                return 0.0
            left = max(0.0, remaining - needed)
            more = math.floor(left * share / price + 1e-9) if price > 0 and left >= calls * price else 0
            amount = needed + price * min(calls - 1, more)
            fits_too = table.c.spend + table.c.reserved + amount <= budget + 1e-9  # what was read still holds
            done = await conn.execute(
                table.update().where(column == holder.holder, fits_too).values(reserved=table.c.reserved + amount)
            )
            if done.rowcount:
                return amount
        return remaining, await self._holder_in(conn, holder), pending

    async def _holder_in(self, conn: Any, holder: Holder) -> Holder:
        """``holder`` as the database has it now (itself, if it is gone)."""
        table, column = _table(holder.table)
        row = (await conn.execute(table.select().where(column == holder.holder))).first()
        if row is None:
            return holder
        if isinstance(holder, Key):
            return Key.from_row(row)
        return Budget.from_row(row, holder.level, holder.label)

    async def _reset_if_due(self, conn: Any, holder: Holder, moment: datetime.datetime) -> None:
        if holder.budget_duration and holder.budget_reset_at is not None and holder.budget_reset_at <= moment:
            table, column = _table(holder.table)
            next_reset = moment + parse_duration(holder.budget_duration, "budget_duration")
            await conn.execute(
                table.update()
                .where(column == holder.holder, table.c.budget_reset_at <= moment)
                .values(spend=0.0, budget_reset_at=next_reset)
            )  # another replica may have reset it already: then this changes nothing

    async def renew_leases(self, lease_ids: Sequence[str], ttl: float) -> set[str]:
        """Push the leases' expiry ``ttl`` seconds on; the ids of those still there."""
        if not lease_ids:
            return set()
        expires = now() + datetime.timedelta(seconds=ttl)
        async with self.engine.begin() as conn:
            await conn.execute(
                reservations.update().where(reservations.c.id.in_(list(lease_ids))).values(expires_at=expires)
            )
            found = await conn.execute(sa.select(reservations.c.id).where(reservations.c.id.in_(list(lease_ids))))
            return set(found.scalars())

    async def return_lease(self, lease_id: str, holder: str, table: str = "key") -> None:
        """Give back what is left of a lease (its holder has nothing in flight under it)."""
        async with self.engine.begin() as conn:
            await self._release_lease(conn, lease_id, table, holder)

    async def release_expired_leases(self) -> int:
        """Release the leases past their expiry (their holder died, or lost the database for longer than it)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(reservations.c.id, reservations.c.token_hash, reservations.c.level)
                .where(reservations.c.expires_at < now())
            )).all()  # fmt: skip
        released = 0
        for row in sorted(rows, key=lambda row: (row.level, row.token_hash, row.id)):
            async with self.engine.begin() as conn:  # one lease a transaction: its holder locked first, as everywhere
                released += await self._release_lease(conn, row.id, row.level, row.token_hash, expired=True)
        return released

    async def _release_lease(self, conn: Any, lease_id: str, table: str, holder: str, *, expired: bool = False) -> bool:
        """Give a lease's amount back to its key or budget; whether it was there to release."""
        await _lock(conn, table, holder)
        query = reservations.select().where(reservations.c.id == lease_id)
        if expired:  # renewed meanwhile: its holder is alive
            query = query.where(reservations.c.expires_at < now())
        row = (await conn.execute(query)).first()
        return row is not None and await self._settle(conn, Reservation(row.id, row.token_hash, row.amount), 0.0,
                                                      row.level)  # fmt: skip

    async def _settle(self, conn: Any, reservation: Reservation, actual: float, table: str = "key") -> bool:
        gone = await conn.execute(reservations.delete().where(reservations.c.id == reservation.id))
        if gone.rowcount:  # settled once, even if a stale sweep raced it
            target, column = _table(table)
            await conn.execute(
                target.update()
                .where(column == reservation.token_hash)
                .values(reserved=target.c.reserved - reservation.amount, spend=target.c.spend + actual)
            )
        return bool(gone.rowcount)

    # -- admin UI sessions --------------------------------------------------------------------------------

    async def sign_out(self, session_id: str, expires_at: datetime.datetime) -> None:
        """Remember that a UI session ended before ``expires_at`` (and forget those past their expiry)."""
        async with self.engine.begin() as conn:
            await conn.execute(signouts.delete().where(signouts.c.expires_at < now()))
            await conn.execute(
                _insert(self.sqlite, signouts)
                .values(session_id=session_id, expires_at=expires_at)
                .on_conflict_do_nothing(index_elements=[signouts.c.session_id])
            )

    async def signed_out(self, session_id: str) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.execute(sa.select(signouts.c.session_id).where(signouts.c.session_id == session_id))
            return found.first() is not None

    # -- spend logs ---------------------------------------------------------------------------------------

    async def finish(self, row: Mapping[str, Any], reservation: Held = None, *, wait: float | None = -1.0) -> bool:
        """Write one request's spend-log row and settle what it held with the row's cost (grouped with whatever
        other requests finished meanwhile). True once committed; False when ``wait`` seconds (default
        :data:`ROW_WAIT`; ``None``: no limit) passed first (the database is slow or away: the row stays queued
        and is written when it answers, never dropped). Raises when the database refuses this row itself."""
        wait = ROW_WAIT if wait == -1.0 else wait
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = {**_EMPTY_LOG, "created_at": now(), **row}  # every column, so a group inserts as one statement
        self._pending.append((entry, reservation, float(entry.get("cost") or 0.0), future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())
        try:
            await (asyncio.shield(future) if wait is None else within(asyncio.shield(future), wait))
        except (TimeoutError, asyncio.TimeoutError):
            return False
        return True

    @property
    def queued(self) -> int:
        """Spend rows waiting to be written."""
        return len(self._pending)

    async def _flush(self) -> None:
        delay = RETRY_FIRST
        while self._pending:
            await asyncio.sleep(GROUP_WAIT)  # the rows of requests ending meanwhile join the group: one transaction
            batch, self._pending = self._pending, []
            try:
                await self._write(batch)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled or exiting: every waiter hears of it
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(RuntimeError(str(exc) or type(exc).__name__))
                    raise
                if unavailable(exc):  # the database did not answer: the rows wait for it, first in line
                    self._pending[:0] = batch
                    if self.outage_since is None:
                        self.outage_since = time.monotonic()
                        what = type(exc).__name__
                        logger.warning("the database did not answer (%s): %d spend rows wait for it", what,
                                       len(self._pending))  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(RETRY_CAP, delay * 2)
                    continue
                # one row the database refuses must not cost the others theirs: each is written on its own
                for entry in batch if len(batch) > 1 else ():
                    try:
                        await self._write([entry])
                    except Exception as alone:
                        if unavailable(alone):
                            self._pending.append(entry)
                        else:
                            entry[3].set_exception(alone)
                    else:
                        self._settled([entry])
                for *_, future in batch:
                    if not future.done() and len(batch) == 1:
                        future.set_exception(exc)
                continue
            if self.outage_since is not None:
                logger.warning("the database answers again after %.1f s; queued spend rows written",
                               time.monotonic() - self.outage_since)  # fmt: skip
                self.outage_since = None
            delay = RETRY_FIRST
            self._settled(batch)

    def _settled(self, batch: list[_Entry]) -> None:
        for *_, future in batch:
            if not future.done():
                future.set_result(None)
        if self.on_settled is not None:
            self.on_settled([(reservation, cost) for _, reservation, cost, _ in batch])

    async def _write(self, batch: list[_Entry]) -> None:
        """Insert ``batch``'s rows and settle what they held in one transaction, retrying a transient abort:
        per-call reservations one by one; the costs of a lease's shares and of a budgetless holder's calls summed
        and moved in a few statements for the whole group (:meth:`_move`)."""
        calls: list[tuple[Reservation, float]] = []
        moved: dict[tuple[str, str, str], float] = {}  # (table, holder, lease id or "") -> cost
        for _, held, cost, _ in batch:
            for part in held if isinstance(held, tuple) else (held,):
                if isinstance(part, Reservation):
                    calls.append((part, cost))
                elif isinstance(part, LeaseShare) or (isinstance(part, Spend) and cost):
                    where = (part.table, part.holder, part.lease_id if isinstance(part, LeaseShare) else "")
                    moved[where] = moved.get(where, 0.0) + cost
        moved = {where: cost for where, cost in moved.items() if cost}
        # holders are locked in one order (by table and id) in every transaction: two replicas' groups touching the
        # same keys and budgets would otherwise lock them in opposite orders and deadlock (PostgreSQL aborts one)
        holders = sorted({(table, holder) for table, holder, _ in moved} | {("key", r.token_hash) for r, _ in calls})
        for attempt in range(1, FLUSH_ATTEMPTS + 1):
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(spend_logs.insert(), [entry for entry, _, _, _ in batch])
                    for table, holder in holders:
                        await _lock(conn, table, holder)
                    for reservation, cost in calls:
                        await self._settle(conn, reservation, cost)
                    await self._move(conn, moved)
                return
            except sa.exc.DBAPIError as exc:  # rolled back: a deadlock or serialization failure is retried
                if attempt == FLUSH_ATTEMPTS or not transient(exc):
                    raise
                await asyncio.sleep(0.01 * attempt)

    async def _move(self, conn: Any, moved: Mapping[tuple[str, str, str], float]) -> None:
        """Move each cost from its lease (if it has one) to its holder's spend, its holders locked already: the
        leases still there lose it, and their holders' ``reserved`` with them; a lease gone (released past its
        expiry) gave its budget back already, so only the spend is added. One statement for the leases and one
        for each table, whatever the group holds."""
        if not moved:
            return
        leases = [lease for _, _, lease in moved if lease]
        present: set[str] = set()
        if leases:
            present = set((await conn.execute(sa.select(reservations.c.id).where(reservations.c.id.in_(leases))))
                          .scalars())  # fmt: skip
        shrunk = [{"lid": lease, "cost": cost} for (_, _, lease), cost in moved.items() if lease in present]
        if shrunk:
            await conn.execute(
                reservations.update()
                .where(reservations.c.id == sa.bindparam("lid"))
                .values(amount=reservations.c.amount - sa.bindparam("cost")),
                shrunk,
            )
        for table in ("budget", "key"):
            target, column = _table(table)
            spent = [
                {"hid": holder, "cost": cost, "held": cost if lease in present else 0.0}
                for (kind, holder, lease), cost in sorted(moved.items())
                if kind == table
            ]
            if spent:
                await conn.execute(
                    target.update()
                    .where(column == sa.bindparam("hid"))
                    .values(
                        spend=target.c.spend + sa.bindparam("cost"), reserved=target.c.reserved - sa.bindparam("held")
                    ),
                    spent,
                )

    async def spend_logs(
        self,
        *,
        token_hash: str | None = None,
        model_name: str | None = None,
        team_id: str | None = None,
        user_id: str | None = None,
        end_user: str | None = None,
        start: datetime.datetime | None = None,
        end: datetime.datetime | None = None,
        limit: int = 1000,
        visible: Any = None,
        status: str | None = None,
        request_id: str | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """The newest spend rows (from the ``offset``-th), filtered (``visible``: a condition on the rows, what a
        caller may see)."""
        query = spend_logs.select().order_by(spend_logs.c.created_at.desc(), spend_logs.c.request_id)
        query = query.offset(offset).limit(limit)
        if visible is not None:
            query = query.where(visible)
        c = spend_logs.c
        for column, value in ((c.token_hash, token_hash), (c.model_name, model_name), (c.team_id, team_id),
                              (c.user_id, user_id), (c.user, end_user), (c.status, status),
                              (c.request_id, request_id)):  # fmt: skip
            if value is not None:
                if "\x00" in value:  # no row holds one (PostgreSQL text cannot)
                    return []
                query = query.where(column == value)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_between(query, start, end))).all()
        found = []
        for row in rows:
            data = dict(row._mapping)
            data["created_at"] = _iso(_aware(data["created_at"]))
            data["end_user"] = data["user"]  # litellm's name for the request's user
            found.append(data)
        return found

    async def spend_report(
        self,
        *,
        start: datetime.datetime | None = None,
        end: datetime.datetime | None = None,
        group_by: str | None = None,
        visible: Any = None,
    ) -> list[dict[str, Any]]:
        """Totals by day, and by key and model name, or by one of :data:`GROUPS` (``group_by``)."""
        created = spend_logs.c.created_at
        # UTC days (SQLite stores UTC; PostgreSQL would otherwise render in its session's time zone)
        day = sa.func.date(created) if self.sqlite else sa.func.to_char(sa.func.timezone("UTC", created), "YYYY-MM-DD")
        names = GROUPS[group_by] if group_by is not None else ("token", "key_alias", "model_name")
        columns = [getattr(spend_logs.c, _REPORT_COLUMNS.get(name, name)).label(name) for name in names]
        query = (
            sa.select(
                day.label("day"),
                *columns,
                sa.func.count().label("requests"),
                sa.func.sum(spend_logs.c.images).label("images"),
                sa.func.sum(spend_logs.c.cost).label("cost"),
            )
            .group_by(day, *columns)
            .order_by(day, *columns)
        )
        if visible is not None:
            query = query.where(visible)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_between(query, start, end))).all()
        return [
            {
                "day": str(r.day),
                **{name: getattr(r, name) for name in names},
                "requests": r.requests,
                "images": int(r.images or 0),
                "cost": round(float(r.cost or 0.0), 6),
            }
            for r in rows
        ]

    async def spend_series(
        self, *, start: datetime.datetime, step: int, visible: Any = None, sample: int = 5_000
    ) -> tuple[list[dict[str, Any]], dict[int, list[float]]]:
        """Spend rows since ``start`` in buckets of ``step`` seconds (each bucket named by the epoch second it
        begins): requests, images, cost and errors by bucket and model name, counted by the database; and the
        latencies (ms) of the newest ``sample`` rows by bucket, for percentiles."""
        created = spend_logs.c.created_at
        if self.sqlite:
            epoch: Any = sa.cast(sa.func.strftime("%s", created), sa.Integer)
        else:
            epoch = sa.cast(sa.func.floor(sa.extract("epoch", created)), sa.BigInteger)
        bucket = (epoch // step).label("bucket")
        failed = sa.case((spend_logs.c.status != "success", 1), else_=0)
        totals = (
            sa.func.count().label("requests"),
            sa.func.sum(spend_logs.c.images).label("images"),
            sa.func.sum(spend_logs.c.cost).label("cost"),
            sa.func.sum(failed).label("errors"),
        )
        counted = (
            sa.select(bucket, spend_logs.c.model_name, *totals)
            .where(created >= start)
            .group_by(bucket, spend_logs.c.model_name)
        )
        timed = (
            sa.select(bucket, spend_logs.c.latency_ms)
            .where(created >= start, spend_logs.c.status == "success")
            .order_by(created.desc())
            .limit(sample)
        )
        if visible is not None:
            counted, timed = counted.where(visible), timed.where(visible)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(counted)).all()
            latencies: dict[int, list[float]] = {}
            for row in (await conn.execute(timed)).all():
                latencies.setdefault(int(row.bucket) * step, []).append(float(row.latency_ms))
        return [
            {"t": int(r.bucket) * step, "model_name": r.model_name, "requests": r.requests,
             "images": int(r.images or 0), "cost": float(r.cost or 0.0), "errors": int(r.errors or 0)}
            for r in rows
        ], latencies  # fmt: skip


#: ``/spend/report?group_by=``: the fields of each grouping's rows
GROUPS = {
    "team": ("team_id",),
    "user": ("user_id",),
    "customer": ("end_user",),
    "model": ("model_name",),
    "key": ("token", "key_alias"),
}
_REPORT_COLUMNS = {"token": "token_hash", "end_user": "user"}


async def _lock(conn: Any, table: str, holder: str) -> None:
    """Lock a key's or a budget's row for the transaction (PostgreSQL; SQLite's one writer needs no row lock):
    every transaction that touches a lease locks its holder first, so two never wait for each other in a cycle."""
    if conn.dialect.name == "sqlite":  # (its one writer holds the whole database: no statement needed)
        return
    column = _table(table)[1]
    await conn.execute(sa.select(column).where(column == holder).with_for_update())


def _between(query: Any, start: datetime.datetime | None, end: datetime.datetime | None) -> Any:
    """``query`` limited to spend rows created in [start, end)."""
    if start is not None:
        query = query.where(spend_logs.c.created_at >= start)
    if end is not None:
        query = query.where(spend_logs.c.created_at < end)
    return query


def _insert(sqlite: bool, table: sa.Table) -> SQLiteInsert | PostgreSQLInsert:
    """An ``INSERT`` into ``table`` in the database's dialect (both have ``ON CONFLICT``)."""
    if sqlite:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert  # (imported only where it is used)

    return postgresql_insert(table)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # first: replicas and workers on one file wait their turn to write, and switching to WAL below takes a lock
    # too (a worker starting while another migrated got "database is locked" at once)
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL keeps committed rows across a process crash
    cursor.close()


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the schema migrations (Alembic) to the database at ``url``, up to ``revision`` (the newest schema
    by default); call it outside an event loop."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)


def schema_revision(url: str) -> str | None:
    """The schema revision the database at ``url`` has (Alembic's), or None before its first migration; call it
    outside an event loop."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    async def read() -> str | None:
        engine = create_async_engine(async_url(url))
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def redacted(url: str) -> str:
    """``url`` with any password replaced, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
