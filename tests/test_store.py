"""The proxy's store (``gesso.proxy.store``) on SQLite and on PostgreSQL (the ``database_url`` fixture): keys
stored as hashes, atomic budget reservations under concurrency, budget resets, the rpm window, stale
reservations, spend logs and reports, and the migrations."""

from __future__ import annotations

import asyncio
import base64
import datetime
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from gesso.proxy import store

UTC = datetime.timezone.utc
NOVA_PRICE = 0.04  # Nova Canvas, one standard image up to 1024x1024


@pytest.fixture
def url(database_url: str) -> str:
    store.upgrade(database_url)
    return database_url


def run(url: str, scenario, replicas: int = 1):
    """``scenario(*stores)`` on ``replicas`` fresh stores of ``url`` (each its own engine, as replicas have),
    in one event loop; the stores are closed afterwards."""

    async def main():
        stores = [store.Store(url) for _ in range(replicas)]
        try:
            return await scenario(*stores)
        finally:
            for each in stores:
                await each.close()

    return asyncio.run(main())


def log_row(**fields) -> dict:
    return {
        "request_id": uuid.uuid4().hex, "route": "generations", "model_name": "nova", "deployment": "nova-a",
        "model_id": "bedrock/amazon.nova-canvas-v1:0", "images": 1, "cost": NOVA_PRICE, "latency_ms": 12.5,
        "status": "success", "status_code": 200, **fields,
    }  # fmt: skip


async def rows(s: store.Store, table: sa.Table) -> list[dict]:
    async with s.engine.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(table.select())).all()]


# -- keys -------------------------------------------------------------------------------------------------------


def test_keys_are_found_by_plaintext_hash_and_alias_and_only_the_hash_is_stored(url):
    async def scenario(s):
        plaintext, key = await s.create_key(key_alias="team-a", models=["nova"], max_budget=1.5)
        assert plaintext.startswith("sk-") and key.token_hash == store.hash_key(plaintext)
        for given in (plaintext, key.token_hash, "team-a"):
            found = await s.find_key(given)
            assert found is not None and found.token_hash == key.token_hash, given
            assert found.models == ("nova",) and found.max_budget == 1.5 and found.spend == 0.0
        assert await s.find_key("sk-not-a-key") is None and await s.find_key("team-b") is None
        with pytest.raises(sa.exc.IntegrityError):  # aliases are unique
            await s.create_key(key_alias="team-a")
        [stored] = await rows(s, store.keys)
        for column, value in stored.items():
            assert plaintext not in str(value) and plaintext[3:] not in str(value), column
        assert stored["token_hash"] == store.hash_key(plaintext) and stored["key_name"] == f"sk-...{plaintext[-4:]}"
        assert "key" not in key.info() and key.info()["token"] == key.token_hash
        return plaintext

    plaintext = run(url, scenario)
    if url.startswith("sqlite"):  # not in the database file, nor in its write-ahead log
        path = urlsplit(url).path
        for suffix in ("", "-wal"):
            try:
                data = open(path + suffix, "rb").read()
            except FileNotFoundError:
                continue
            assert plaintext[3:].encode() not in data


def test_keys_have_at_least_128_random_bits():
    made = [store.new_key() for _ in range(1000)]
    assert len(set(made)) == 1000
    for key in made:
        assert key.startswith("sk-")
        assert len(base64.urlsafe_b64decode(key[3:] + "=" * (-len(key[3:]) % 4))) * 8 >= 128


def test_update_changes_only_the_fields_given(url):
    async def scenario(s):
        _, key = await s.create_key(
            key_alias="team", models=["nova"], max_budget=1.0, rpm_limit=5, duration="1h", metadata={"team": "a"}
        )
        updated = await s.update_key(key.token_hash, {"max_budget": 2.0})
        assert updated.max_budget == 2.0 and updated.updated_at >= key.updated_at
        for name in ("key_alias", "models", "rpm_limit", "expires", "metadata", "created_at", "budget_duration"):
            assert getattr(updated, name) == getattr(key, name), name
        before = store.now()
        updated = await s.update_key(
            key.token_hash, {"models": None, "duration": None, "budget_duration": "1h", "metadata": {"b": 1}}
        )
        assert updated.models == () and updated.expires is None and updated.metadata == {"b": 1}
        assert updated.budget_duration == "1h"
        reset_in = (updated.budget_reset_at - before).total_seconds()
        assert 3590 < reset_in < 3610
        assert updated.max_budget == 2.0 and updated.rpm_limit == 5 and updated.key_alias == "team"
        assert await s.update_key("0" * 64, {"max_budget": 1.0}) is None

    run(url, scenario)


def test_blocked_is_stored_set_and_cleared(url):
    async def scenario(s):
        _, key = await s.create_key(key_alias="open")
        assert key.blocked is False and key.info()["blocked"] is False
        _, held = await s.create_key(key_alias="held", blocked=True)
        assert held.blocked is True and (await s.find_key("held")).info()["blocked"] is True
        assert (await s.update_key(key.token_hash, {"blocked": True})).blocked is True
        assert (await s.update_key(key.token_hash, {"max_budget": 1.0})).blocked is True  # kept when not given
        assert (await s.update_key(key.token_hash, {"blocked": None})).blocked is False  # null clears it
        assert [k.blocked for k in (await s.list_keys())[0]] == [False, True]

    run(url, scenario)


def test_durations_are_litellm_s_up_to_100_years():
    assert store.parse_duration("30d", "duration") == datetime.timedelta(days=30)
    assert store.parse_duration("monthly", "budget_duration") == datetime.timedelta(days=30)
    assert store.parse_duration("36500d", "duration") == store.MAX_DURATION
    assert store.parse_duration("5214w", "duration") == datetime.timedelta(weeks=5214)
    for text in ("36501d", "5215w", "1217mo", "876001h", "99999999999d", "999999999999s"):
        with pytest.raises(ValueError, match="duration: at most 100 years"):
            store.parse_duration(text, "duration")
    for text in ("0d", "30d\n", "\u0661d", "0000000000000001d", "1y", "", 30, None, "-1"):
        with pytest.raises(ValueError, match="budget_duration: must be a duration"):
            store.parse_duration(text, "budget_duration")


def test_nul_in_a_name_finds_nothing(url):  # PostgreSQL cannot hold a NUL in text, and would fail the query
    async def scenario(s):
        await s.create_key(key_alias="a")
        assert await s.find_key("a\x00") is None
        assert await s.list_keys(key_alias="\x00") == ([], 0)
        assert await s.spend_logs(model_name="\x00") == [] and await s.spend_logs(token_hash="\x00") == []

    run(url, scenario)


def test_delete_removes_keys_and_their_reservations(url):
    async def scenario(s):
        _, first = await s.create_key(max_budget=1.0)
        _, second = await s.create_key()
        _, kept = await s.create_key()
        await s.reserve(first, 0.5)
        assert await s.delete_keys([first.token_hash, second.token_hash, "0" * 64]) == 2
        assert await s.get_key(first.token_hash) is None and await s.get_key(second.token_hash) is None
        assert await s.get_key(kept.token_hash) is not None
        assert await rows(s, store.reservations) == []
        listed, total = await s.list_keys()
        assert total == 1 and [k.token_hash for k in listed] == [kept.token_hash]

    run(url, scenario)


# -- budgets ----------------------------------------------------------------------------------------------------


def test_100_concurrent_reservations_on_two_replicas_hold_exactly_the_budget(url):
    async def scenario(a, b):
        _, key = await a.create_key(key_alias="ten", max_budget=10 * NOVA_PRICE)

        async def attempt(s):
            try:
                return await s.reserve(key, NOVA_PRICE)
            except store.BudgetExceeded as exc:
                return exc

        outcomes = await asyncio.gather(*(attempt(a if i % 2 else b) for i in range(100)))
        held = [o for o in outcomes if isinstance(o, store.Reservation)]
        refused = [o for o in outcomes if isinstance(o, store.BudgetExceeded)]
        assert len(held) == 10 and len(refused) == 90
        assert all(r.key is not None and r.amount == NOVA_PRICE for r in refused)
        during = await a.get_key(key.token_hash)
        assert during.spend == 0.0 and during.reserved == pytest.approx(10 * NOVA_PRICE)
        await asyncio.gather(
            *(s.finish(log_row(token_hash=key.token_hash), r) for s, r in zip((a, b) * 5, held, strict=True))
        )
        after = await b.get_key(key.token_hash)
        assert after.spend <= after.max_budget + 1e-9 and after.spend == pytest.approx(10 * NOVA_PRICE)
        assert after.reserved == pytest.approx(0.0, abs=1e-9)
        assert await rows(a, store.reservations) == [] and len(await a.spend_logs()) == 10
        with pytest.raises(store.BudgetExceeded):
            await a.reserve(after, NOVA_PRICE)

    run(url, scenario, replicas=2)


def test_settling_charges_the_actual_cost_and_refunds_the_rest(url):
    async def scenario(s):
        _, key = await s.create_key(max_budget=1.0)
        reservation = await s.reserve(key, 2 * NOVA_PRICE)  # n=2 quoted...
        assert (await s.get_key(key.token_hash)).reserved == pytest.approx(0.08)
        await s.finish(log_row(token_hash=key.token_hash, images=1, cost=NOVA_PRICE), reservation)  # ...one filtered
        after = await s.get_key(key.token_hash)
        assert after.spend == pytest.approx(NOVA_PRICE) and after.reserved == pytest.approx(0.0, abs=1e-9)
        failed = await s.reserve(after, NOVA_PRICE)
        await s.finish(log_row(token_hash=key.token_hash, images=0, cost=0.0, status="failure"), failed)
        assert (await s.get_key(key.token_hash)).spend == pytest.approx(NOVA_PRICE)
        await s.finish(log_row(token_hash=key.token_hash, images=1, cost=NOVA_PRICE), failed)  # settled once
        assert (await s.get_key(key.token_hash)).spend == pytest.approx(NOVA_PRICE)

    run(url, scenario)


def test_budget_duration_resets_spend_once_per_period(url):
    async def scenario(s):
        _, key = await s.create_key(max_budget=NOVA_PRICE, budget_duration="1d")
        await s.finish(log_row(token_hash=key.token_hash), await s.reserve(key, NOVA_PRICE))
        with pytest.raises(store.BudgetExceeded) as refused:
            await s.reserve(await s.get_key(key.token_hash), NOVA_PRICE)
        assert refused.value.key.spend == pytest.approx(NOVA_PRICE)
        assert refused.value.key.budget_reset_at > store.now() + datetime.timedelta(hours=23)
        await s.update_key(key.token_hash, {"budget_reset_at": store.now() - datetime.timedelta(seconds=1)})
        due = await s.get_key(key.token_hash)  # what two replicas both read
        first = await s.reserve(due, NOVA_PRICE)  # resets spend, then holds the call
        reset = await s.get_key(key.token_hash)
        assert reset.spend == 0.0 and reset.reserved == pytest.approx(NOVA_PRICE)
        assert reset.budget_reset_at > store.now() + datetime.timedelta(hours=23)
        await s.finish(log_row(token_hash=key.token_hash), first)
        with pytest.raises(store.BudgetExceeded):  # the second replica's stale read resets nothing again
            await s.reserve(due, NOVA_PRICE)
        assert (await s.get_key(key.token_hash)).spend == pytest.approx(NOVA_PRICE)

    run(url, scenario)


def test_rpm_is_a_fixed_one_minute_window_shared_by_replicas(url, monkeypatch):
    moment = [datetime.datetime(2030, 1, 1, 10, 0, 30, tzinfo=UTC)]
    monkeypatch.setattr(store, "now", lambda: moment[0])

    async def scenario(a, b):
        _, key = await a.create_key(rpm_limit=3)
        assert [await s.count_request(key) for s in (a, b, a)] == [None, None, None]
        assert await b.count_request(key) == pytest.approx(30.0)  # the fourth: wait for 10:01:00
        moment[0] = datetime.datetime(2030, 1, 1, 10, 0, 59, 500_000, tzinfo=UTC)
        assert await a.count_request(key) == 1.0  # at least a second
        moment[0] = datetime.datetime(2030, 1, 1, 10, 1, 5, tzinfo=UTC)
        assert await a.count_request(key) is None  # a new minute
        windows = await rows(a, store.rate_windows)
        assert [(w["window"], w["count"]) for w in windows] == [(int(moment[0].timestamp() // 60), 1)]
        _, free = await a.create_key()
        assert all([await a.count_request(free) is None for _ in range(10)])

    run(url, scenario, replicas=2)


def test_a_stale_reservation_is_released_exactly_once(url):
    async def scenario(a, b):
        _, key = await a.create_key(max_budget=1.0)
        old = await a.reserve(key, 0.3)
        new = await a.reserve(key, 0.2)
        async with a.engine.begin() as conn:
            two_hours_ago = store.now() - datetime.timedelta(hours=2)
            await conn.execute(store.reservations.update().where(store.reservations.c.id == old.id)
                               .values(created_at=two_hours_ago))  # fmt: skip
        released = await asyncio.gather(a.release_stale(), b.release_stale())  # two replicas start together
        assert sorted(released) == [0, 1]
        assert await a.release_stale() == 0
        after = await a.get_key(key.token_hash)
        assert after.reserved == pytest.approx(0.2) and after.spend == 0.0
        await a.finish(log_row(token_hash=key.token_hash, cost=0.3), old)  # its replica was alive after all
        after = await a.get_key(key.token_hash)
        assert after.reserved == pytest.approx(0.2) and after.spend == 0.0
        await b.finish(log_row(token_hash=key.token_hash, cost=0.2), new)
        after = await a.get_key(key.token_hash)
        assert after.reserved == pytest.approx(0.0, abs=1e-9) and after.spend == pytest.approx(0.2)

    run(url, scenario, replicas=2)


# -- spend logs -------------------------------------------------------------------------------------------------


async def set_timezone(url: str, zone: str) -> None:
    """The PostgreSQL database's sessions in ``zone`` (a server far from UTC)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"ALTER DATABASE \"{urlsplit(url).path.lstrip('/')}\" SET timezone TO '{zone}'")
    finally:
        await conn.close()


def test_spend_logs_filter_by_key_model_and_dates_and_the_report_totals_by_utc_day(url):
    if url.startswith("postgresql"):
        asyncio.run(set_timezone(url, "Asia/Tokyo"))  # days are UTC days, whatever the server's zone
    late = datetime.datetime(2030, 3, 1, 23, 30, tzinfo=UTC)
    early = datetime.datetime(2030, 3, 2, 0, 30, tzinfo=UTC)

    async def scenario(s):
        _, a = await s.create_key(key_alias="a")
        _, b = await s.create_key(key_alias="b")
        entries = [
            log_row(token_hash=a.token_hash, key_alias="a", created_at=late),
            log_row(token_hash=a.token_hash, key_alias="a", created_at=early, model_name="titan", cost=0.01),
            log_row(token_hash=b.token_hash, key_alias="b", created_at=early, images=2, cost=0.08),
            log_row(
                token_hash=b.token_hash,
                key_alias="b",
                created_at=early,
                images=0,
                cost=0.0,
                status="failure",
                status_code=502,
                error_type="api_error",
            ),
            log_row(created_at=late, images=0, cost=0.0, status="failure", status_code=401, error_type="auth_error"),
        ]
        await asyncio.gather(*(s.finish(e) for e in entries))
        ids = {e["request_id"]: i for i, e in enumerate(entries)}

        async def found(**filters):
            return sorted(ids[r["request_id"]] for r in await s.spend_logs(**filters))

        midnight = datetime.datetime(2030, 3, 2, tzinfo=UTC)
        assert await found() == [0, 1, 2, 3, 4]
        assert await found(token_hash=a.token_hash) == [0, 1]
        assert await found(model_name="nova") == [0, 2, 3, 4]
        assert await found(model_name="titan") == [1]
        assert await found(start=midnight) == [1, 2, 3]
        assert await found(end=midnight) == [0, 4]
        assert await found(token_hash=b.token_hash, start=midnight, end=midnight + datetime.timedelta(days=1)) == [2, 3]
        assert await found(start=midnight + datetime.timedelta(days=1)) == []
        newest = await s.spend_logs(limit=2)
        assert len(newest) == 2 and all(r["created_at"].startswith("2030-03-02T00:30:00") for r in newest)
        row = (await s.spend_logs(token_hash=a.token_hash, model_name="titan"))[0]
        assert row["key_alias"] == "a" and row["cost"] == 0.01 and row["status"] == "success"

        report = await s.spend_report()
        got = {(r["day"], r["key_alias"], r["model_name"]): (r["requests"], r["images"], r["cost"]) for r in report}
        assert got == {
            ("2030-03-01", "a", "nova"): (1, 1, 0.04),
            ("2030-03-01", None, "nova"): (1, 0, 0.0),
            ("2030-03-02", "a", "titan"): (1, 1, 0.01),
            ("2030-03-02", "b", "nova"): (2, 2, 0.08),
        }
        assert {r["token"] for r in report} == {a.token_hash, b.token_hash, None}
        assert [r["day"] for r in await s.spend_report(start=midnight)] == ["2030-03-02"] * 2
        assert sum(r["cost"] for r in await s.spend_report(end=midnight)) == pytest.approx(0.04)

    run(url, scenario)


#: the columns of gesso_keys that migrations after 0001 add
LATER_KEY_COLUMNS = {"blocked", "team_id", "user_id", "ipm_limit"}


def test_migration_0002_adds_blocked_false_to_the_keys_already_there(database_url):
    from alembic import command
    from alembic.config import Config

    store.upgrade(database_url, "0001")
    # the columns of 0001 (the table as it was): a row written before the migration
    before = sa.Table("gesso_keys", sa.MetaData(), *(sa.Column(c.name, c.type, primary_key=c.primary_key)
                                                     for c in store.keys.columns if c.name not in LATER_KEY_COLUMNS))  # fmt: skip
    moment = store.now()
    old = {"token_hash": "a" * 64, "key_name": "sk-...aaaa", "key_alias": "old", "models": [], "spend": 0.0,
           "reserved": 0.0, "metadata": {}, "created_at": moment, "updated_at": moment}  # fmt: skip

    async def write(s):
        async with s.engine.begin() as conn:
            await conn.execute(before.insert().values(**old))

    run(database_url, write)
    store.upgrade(database_url)

    async def scenario(s):
        key = await s.find_key("old")
        assert key is not None and key.blocked is False and key.info()["blocked"] is False
        _, new = await s.create_key(key_alias="new")
        assert new.blocked is False
        async with s.engine.begin() as conn:  # NOT NULL, with false as the server's default
            await conn.execute(before.insert().values(**{**old, "token_hash": "b" * 64, "key_alias": "older"}))
        assert (await s.find_key("older")).blocked is False
        await s.update_key(key.token_hash, {"blocked": True})

    run(database_url, scenario)
    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).with_name("migrations")))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.downgrade(config, "0001")  # and back: the rows stay, without the column

    async def downgraded(s):
        async with s.engine.connect() as conn:
            rows = (await conn.execute(before.select().order_by(before.c.key_alias))).all()
        return [r.key_alias for r in rows]

    assert run(database_url, downgraded) == ["new", "old", "older"]
    store.upgrade(database_url)
    assert run(database_url, lambda s: s.find_key("old")).blocked is False


def head() -> str:
    """The newest migration's revision (the one a database ends at)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).with_name("migrations")))
    return ScriptDirectory.from_config(config).get_current_head()


def test_migrations_are_idempotent(url):
    run(url, lambda s: s.create_key(key_alias="survivor"))
    store.upgrade(url)  # the fixture applied them once already

    async def scenario(s):
        async with s.engine.connect() as conn:
            versions = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert versions == [head()]
        assert await s.find_key("survivor") is not None

    run(url, scenario)


def test_migration_0004_keeps_the_keys_and_leases_already_there(database_url):
    """A database at 0003 with a key and a replica's lease on its budget: after 0004 the key has no team, owner
    or images-per-minute limit, and the lease is a key's (so it settles and is released as before)."""
    store.upgrade(database_url, "0003")
    before = sa.Table("gesso_keys", sa.MetaData(), *(sa.Column(c.name, c.type, primary_key=c.primary_key)
                                                     for c in store.keys.columns if c.name not in LATER_KEY_COLUMNS
                                                     or c.name == "blocked"))  # fmt: skip
    leases = sa.Table("gesso_reservations", sa.MetaData(), *(sa.Column(c.name, c.type, primary_key=c.primary_key)
                                                             for c in store.reservations.columns if c.name != "level"))  # fmt: skip
    moment = store.now()
    key = {"token_hash": "c" * 64, "key_name": "sk-...cccc", "key_alias": "kept", "models": [], "spend": 0.1,
           "reserved": 0.08, "max_budget": 1.0, "metadata": {}, "created_at": moment, "updated_at": moment,
           "blocked": False}  # fmt: skip
    lease = {"id": "d" * 32, "token_hash": "c" * 64, "amount": 0.08, "created_at": moment,
             "expires_at": moment - datetime.timedelta(seconds=1)}  # fmt: skip

    async def write(s):
        async with s.engine.begin() as conn:
            await conn.execute(before.insert().values(**key))
            await conn.execute(leases.insert().values(**lease))

    run(database_url, write)
    store.upgrade(database_url)

    async def scenario(s):
        found = await s.find_key("kept")
        assert (found.team_id, found.user_id, found.ipm_limit, found.reserved) == (None, None, None, 0.08)
        async with s.engine.connect() as conn:
            assert (await conn.execute(sa.select(store.reservations.c.level))).scalars().all() == ["key"]
        assert await s.release_expired_leases() == 1  # released to the key's budget, as a key's lease
        after = await s.find_key("kept")
        assert after.reserved == pytest.approx(0.0) and after.spend == pytest.approx(0.1)

    run(database_url, scenario)


def test_a_teams_budget_resets_as_a_keys_does_and_a_lease_holds_every_level_or_none(url):
    from gesso.proxy.directory import Directory

    async def scenario(s):
        directory = Directory(s)
        team = await directory.create_team({"team_id": "t", "max_budget": 0.08, "budget_duration": "1d"})
        customer = await directory.create_customer({"user_id": "c", "max_budget": 0.04})
        budget, held = team.budget, customer.budget
        # both levels at once, or neither: the customer covers one call, so a second takes nothing of the team's
        (lease_t, amount_t, _), (lease_c, _, _) = await s.grow_leases([(budget, None, 0.04), (held, None, 0.04)],
                                                                      0.04, 1, 0.5, 60)  # fmt: skip
        with pytest.raises(store.BudgetExceeded) as refused:
            await s.grow_leases([(budget, None, 0.04), (held, None, 0.04)], 0.04, 1, 0.5, 60)
        assert refused.value.key.level == "customer" and refused.value.key.label == "c"
        assert (await directory.team("t")).budget.reserved == pytest.approx(amount_t)  # nothing more held
        await s.return_lease(lease_t, budget.budget_id, "budget")
        await s.return_lease(lease_c, held.budget_id, "budget")
        async with s.engine.begin() as conn:  # spent, and its day is over
            await conn.execute(store.budgets.update().where(store.budgets.c.budget_id == budget.budget_id).values(
                spend=0.08, budget_reset_at=store.now() - datetime.timedelta(seconds=1)))  # fmt: skip
        due = (await directory.team("t")).budget
        [(_, granted, _)] = await s.grow_leases([(due, None, 0.04)], 0.04, 1, 0.5, 60)  # resets, then holds it
        after = (await directory.team("t")).budget
        assert granted == pytest.approx(0.04) and after.spend == 0 and after.reserved == pytest.approx(0.04)
        assert after.budget_reset_at > store.now() + datetime.timedelta(hours=23)

    run(url, scenario)
