"""The keyed path's guarantees with the ledger in front of the database (``gesso.proxy.ledger``): a replica killed
while it holds a budget lease never lets the budget be exceeded, and its share comes back after the lease's
expiry; a database that stops answering gives 503s with ``Retry-After`` before anything is sent or paid, and the
rows of the requests it answered meanwhile are written when it is back. Run with ``-s`` to see the figures."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvicorn
from test_replicas import MASTER, NOVA, call, replicas  # noqa: F401 (replicas: the fixture)

from gesso.proxy import config as proxy_config
from gesso.proxy import ledger, store
from gesso.proxy.app import build_app
from helpers import uvicorn_running

PRICE = 0.04
BODY = {"model": "nova", "prompt": "a lighthouse", "size": "320x320"}


@pytest.fixture
def short_leases(monkeypatch):
    monkeypatch.setenv("GESSO_LEASE_TTL", "3")  # read by each replica at start


def spend(url: str, token: str) -> float:
    return call(url, "GET", f"/key/info?key={token}")[2]["info"]["spend"]


@pytest.mark.slow  # starts subprocesses
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_replica_killed_holding_a_lease_never_lets_the_budget_be_exceeded(short_leases, replicas, emulator):  # noqa: F811
    a, b = replicas
    calls = 40  # A's first call leases 16 of them (a lease takes whole calls, at most half of what remains)
    budget = calls * PRICE
    made = call(a, "POST", "/key/generate", body={"key_alias": "leased", "max_budget": budget})[2]
    key, token = made["key"], made["token"]
    assert call(a, "POST", "/v1/images/generations", key=key, body=BODY)[0] == 200  # A now holds a lease
    replicas.processes[0].kill()  # SIGKILL: its lease is neither used nor given back
    replicas.processes[0].wait()
    killed = time.monotonic()

    served, refused_at, slowest = 1, [], (0.0, 0.0)
    while time.monotonic() - killed < 30 and served < calls:
        started = time.monotonic()
        status, _, answer = call(b, "POST", "/v1/images/generations", key=key, body=BODY)
        took = time.monotonic() - started
        if status == 200:
            served += 1
            slowest = max(slowest, (took, started - killed))
        else:  # (a call that waited 5 s for the lease, in vain)
            assert status == 429 and answer["error"]["code"] == "budget_exceeded", answer
            refused_at.append(time.monotonic() - killed)
        assert spend(b, token) <= budget + 1e-9
    print(
        f"\nA's lease held 15 calls after the kill; B served the other 24, then its call at {slowest[1]:.1f} s "
        f"waited {slowest[0]:.1f} s for A's lease to be released (GESSO_LEASE_TTL=3); {len(refused_at)} refused"
    )
    assert served == calls  # every call the budget covers, once A's lease was released
    assert slowest[0] <= 3 * 2 + 2  # a call waits at most the lease's life plus a sweep
    assert spend(b, token) == pytest.approx(budget)
    status, _, answer = call(b, "POST", "/v1/images/generations", key=key, body=BODY)
    assert status == 429 and answer["error"]["code"] == "budget_exceeded"
    assert len(emulator.requests) == calls


@contextlib.contextmanager
def serving(database_url: str, aws: dict):
    config = proxy_config.parse({
        "model_list": [{"model_name": "nova", "litellm_params": {"model": NOVA, **aws, "max_retries": 0}}],
        "general_settings": {"master_key": MASTER, "database_url": database_url},
    })  # fmt: skip
    store.upgrade(database_url)
    app = build_app(config)
    served = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    for port in uvicorn_running(served):
        yield f"http://127.0.0.1:{port}", app.state.proxy


@contextlib.contextmanager
def database_held(database_url: str, seconds: float):
    """Hold the database from another connection for ``seconds``, as a migration, a backup or an overloaded
    server would: PostgreSQL's key and spend tables locked exclusively; SQLite's write lock taken."""
    ready, done = threading.Event(), threading.Event()

    def hold() -> None:
        if database_url.startswith("sqlite"):  # its one writer's lock (WAL still lets readers read)
            conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            ready.set()
            done.wait(seconds)
            conn.execute("ROLLBACK")
            conn.close()
            return
        import asyncpg

        async def lock() -> None:
            conn = await asyncpg.connect(database_url)
            async with conn.transaction():
                await conn.execute(
                    "LOCK TABLE gesso_keys, gesso_spend_logs, gesso_reservations IN ACCESS EXCLUSIVE MODE"
                )
                ready.set()
                await asyncio.sleep(seconds)
            await conn.close()

        asyncio.run(lock())

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        thread.join(seconds + 10)


def test_a_database_that_stops_answering_gives_503s_before_anything_is_paid(database_url, aws, emulator, monkeypatch):
    monkeypatch.setattr(ledger, "DB_WAIT", 1.0)
    monkeypatch.setattr(store, "ROW_WAIT", 30.0)
    with serving(database_url, aws) as (url, proxy):
        used = call(url, "POST", "/key/generate", body={"key_alias": "used", "max_budget": 10.0})[2]
        fresh = call(url, "POST", "/key/generate", body={"key_alias": "fresh", "max_budget": 10.0})[2]
        assert call(url, "POST", "/v1/images/generations", key=used["key"], body=BODY)[0] == 200  # it holds a lease
        emulator.inject("latency", seconds=1.0, count=1)
        with ThreadPoolExecutor(8) as pool:
            in_flight = pool.submit(call, url, "POST", "/v1/images/generations", used["key"], BODY)
            time.sleep(0.3)  # sent before the database stops answering; it ends while it does not
            sent = len(emulator.requests)  # (the emulator records a request once answered)
            with database_held(database_url, 4.0):
                started = time.monotonic()
                # a key this replica holds nothing for: admission needs the database (its lease, on SQLite;
                # the key itself too, on PostgreSQL)
                during = [
                    pool.submit(call, url, "POST", "/v1/images/generations", fresh["key"], BODY) for _ in range(5)
                ]
                answers = [f.result() for f in during]
                waited = time.monotonic() - started
            status, _, answer = in_flight.result()
        assert len(emulator.requests) == sent + 1  # the call in flight; none of the 5
        assert status == 200 and answer["data"]  # answered: paid, its row queued until the database was back
        for status, headers, answer in answers:
            assert status == 503 and answer["error"]["code"] == "database_unavailable", answer
            assert int(headers["retry-after"]) >= 1 and "nothing was sent" in answer["error"]["message"]
        assert waited < 1.0 + 3.0  # each waited about DB_WAIT
        for key in (used, fresh):  # the database is back
            assert call(url, "POST", "/v1/images/generations", key=key["key"], body=BODY)[0] == 200

        async def rows():
            s = store.Store(database_url)
            try:
                return await s.spend_logs(limit=1000), [await s.get_key(k["token"]) for k in (used, fresh)]
            finally:
                await s.close()

        deadline = time.monotonic() + 10
        while True:
            written, keys = asyncio.run(rows())
            if proxy.store.queued == 0 and len(written) == 9:
                break
            assert time.monotonic() < deadline, (len(written), proxy.store.queued)
            time.sleep(0.1)
        print(
            f"\n{database_url.split(':')[0]}: 5 requests refused in {waited:.2f} s; the in-flight call answered "
            "once the database was back; every row written"
        )
        assert sorted(r["status_code"] for r in written) == [200, 200, 200, 200, 503, 503, 503, 503, 503]
        assert keys[0].spend == pytest.approx(3 * PRICE) and keys[1].spend == pytest.approx(PRICE)
