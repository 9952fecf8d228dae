"""The proxy's schema has one truth: migrating an empty database with the Alembic migrations
(gesso.proxy.migrations) gives exactly the tables the store's SQLAlchemy metadata declares, so Alembic's own
comparison (``compare_metadata``, types and server defaults included) finds nothing to change. On SQLite, and on
PostgreSQL when $GESSO_TEST_POSTGRES_URL names a server (see conftest's ``database_url``)."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from gesso.proxy import store


def schema_diff(url: str, metadata: sa.MetaData) -> list[Any]:
    """What Alembic would change in the database at ``url`` to make it ``metadata``'s schema."""

    def compare(connection: sa.Connection) -> list[Any]:
        options = {"compare_type": True, "compare_server_default": True}
        return list(compare_metadata(MigrationContext.configure(connection, opts=options), metadata))

    async def main() -> list[Any]:
        engine = create_async_engine(store.async_url(url))
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def kinds(diff: list[Any]) -> set[tuple[str, str]]:
    """Each change of a diff as (what, table): a column's changes come as a list of them."""
    found = set()
    for change in diff:
        for step in change if isinstance(change, list) else [change]:
            what = step[0]
            table = step[2] if what.startswith("modify_") or what == "add_column" else step[1].table.name
            found.add((what, table))
    return found


def test_migrating_an_empty_database_gives_exactly_the_stores_tables(database_url):
    store.upgrade(database_url)
    assert schema_diff(database_url, store.metadata) == []


def test_the_comparison_sees_each_kind_of_drift(database_url):
    store.upgrade(database_url)
    drifted = sa.MetaData()
    for table in store.metadata.tables.values():
        table.to_metadata(drifted)
    keys, logs, reservations = (drifted.tables[n] for n in ("gesso_keys", "gesso_spend_logs", "gesso_reservations"))
    keys.append_column(sa.Column("team", sa.String(64)))  # a column the migrations never add
    logs.c.route.type = sa.String(64)  # a length that differs
    keys.c.blocked.server_default = None  # a server default the metadata lost
    reservations.indexes.discard(next(i for i in reservations.indexes if i.name.endswith("expires_at")))
    assert kinds(schema_diff(database_url, drifted)) == {
        ("add_column", "gesso_keys"),
        ("modify_type", "gesso_spend_logs"),
        ("modify_default", "gesso_keys"),
        ("remove_index", "gesso_reservations"),
    }
