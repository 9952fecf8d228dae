"""Idempotency keys through real ``gesso serve`` replicas on the Bedrock emulator: on SQLite (one replica) and on
PostgreSQL (two replicas sharing the database and the result store), 50 concurrent requests with one key make
one provider call and get 50 identical answers; a client that gives up before the first answer and retries pays
for no second call; another body, a failed first attempt, another virtual key and a bad header each do what the
docs say."""

from __future__ import annotations

import base64
import collections
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_replicas import MASTER, PRICE, call, replicas  # noqa: F401  (replicas: the fixture)

BODY = {"model": "nova", "prompt": "a lighthouse", "size": "320x320"}


def post(url: str, key: str, idempotency_key: str | None, body=BODY, timeout: float = 60):
    """POST an image request; (status, headers, JSON)."""
    request = urllib.request.Request(url + "/v1/images/generations", data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    if idempotency_key is not None:
        request.add_header("Idempotency-Key", idempotency_key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.load(exc)


def new_key(url: str, alias: str) -> tuple[str, str]:
    status, _, made = call(url, "POST", "/key/generate", body={"key_alias": alias, "max_budget": 10})
    assert status == 200, made
    return made["key"], made["token"]


def rows(url: str, token: str) -> list[dict]:
    return call(url, "GET", f"/spend/logs?api_key={token}&limit=1000")[2]


@pytest.mark.slow  # starts subprocesses
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_fifty_concurrent_requests_with_one_key_make_one_provider_call(replicas, emulator, database_url):  # noqa: F811
    # on SQLite one replica takes them all (replicas share PostgreSQL); on PostgreSQL both, alternately
    urls = list(replicas) if database_url.startswith("postgresql") else [replicas[0]]
    key, token = new_key(urls[0], "idempotent")
    emulator.inject("latency", seconds=0.5)  # the repeats arrive while the first runs: they wait for it
    gate = threading.Barrier(50)

    def one(index: int):
        gate.wait()
        return post(urls[index % len(urls)], key, "order-1234")

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(one, range(50)))
    assert [status for status, _, _ in answers] == [200] * 50
    assert emulator.stats()["requests"] == 1
    images = {answer["data"][0]["b64_json"] for _, _, answer in answers}
    assert len(images) == 1 and base64.b64decode(images.pop()).startswith(b"\x89PNG")
    assert len({json.dumps(answer, sort_keys=True) for _, _, answer in answers}) == 1  # 50 identical answers
    first = [headers for _, headers, _ in answers if "idempotent-replayed" not in headers]
    replayed = [headers for _, headers, _ in answers if headers.get("idempotent-replayed") == "true"]
    assert len(first) == 1 and len(replayed) == 49
    original = first[0]["x-request-id"]
    for headers in replayed:  # the same headers, marked, each with its own request id naming the original
        assert headers["x-gesso-replay-of"] == original and headers["x-request-id"] != original
        assert headers["x-gesso-response-cost"] == first[0]["x-gesso-response-cost"] == f"{PRICE:.6f}"
        assert headers["x-gesso-deployment"] == first[0]["x-gesso-deployment"]
    logged = rows(urls[0], token)
    assert len(logged) == 50 and {row["request_id"] for row in logged} == {h["x-request-id"] for _, h, _ in answers}
    paid = [row for row in logged if row["served_from"] is None]
    assert [(row["request_id"], row["cost"], row["images"]) for row in paid] == [(original, PRICE, 1)]
    again = [row for row in logged if row["served_from"] == "idempotency"]
    assert len(again) == 49 and {(row["cost"], row["replay_of"], row["images"], row["status"]) for row in again} == {
        (0.0, original, 1, "success")
    }
    status, _, info = call(urls[-1], "GET", "/key/info?key=idempotent")
    assert status == 200 and info["info"]["spend"] == pytest.approx(PRICE)  # paid once


@pytest.mark.slow  # starts subprocesses
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_client_that_gives_up_and_retries_pays_for_one_call(replicas, emulator):  # noqa: F811
    url = replicas[0]
    key, token = new_key(url, "retrier")
    emulator.inject("latency", seconds=1.5, count=1)  # the first call takes longer than the client waits
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        post(url, key, "retry-me", timeout=0.5)
    status, headers, answer = post(url, key, "retry-me")  # the retry waits for the first call, then gets it
    assert status == 200 and headers["idempotent-replayed"] == "true" and len(answer["data"]) == 1
    assert emulator.stats()["requests"] == 1
    deadline = time.monotonic() + 5
    while len(logged := rows(url, token)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    by_source = collections.Counter((row["served_from"], row["status"], row["cost"]) for row in logged)
    assert by_source == {(None, "success", PRICE): 1, ("idempotency", "success", 0.0): 1}


@pytest.mark.slow  # starts subprocesses
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_another_body_a_failed_attempt_another_key_and_a_bad_header(replicas, emulator):  # noqa: F811
    url = replicas[0]
    key, _ = new_key(url, "first")
    other, _ = new_key(url, "second")
    assert post(url, key, "k-1")[0] == 200
    status, _, answer = post(url, key, "k-1", body={**BODY, "prompt": "a lighthouse at night"})
    assert status == 422 and answer["error"]["code"] == "idempotency_key_reused"
    assert "k-1" in answer["error"]["message"] and answer["error"]["param"] == "Idempotency-Key"
    assert post(url, other, "k-1")[1].get("idempotent-replayed") is None  # another virtual key: its own call
    assert emulator.stats()["requests"] == 2

    emulator.inject("throttle", count=1)  # the first attempt fails: nothing kept, the retry runs again
    status, _, answer = post(url, key, "k-2")
    assert status == 429, answer
    status, headers, _ = post(url, key, "k-2")
    assert status == 200 and "idempotent-replayed" not in headers
    assert emulator.stats()["requests"] == 4

    for bad in ("", "x" * 256, "caf\u00e9"):
        request = urllib.request.Request(url + "/v1/images/generations", data=json.dumps(BODY).encode())
        request.add_header("Authorization", f"Bearer {key}")
        request.add_header("Content-Type", "application/json")
        request.add_header("Idempotency-Key", bad)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        error = json.load(caught.value)["error"]
        assert caught.value.code == 400 and error["code"] == "invalid_idempotency_key", (bad, error)
    assert emulator.stats()["requests"] == 4


def test_the_sweep_removes_what_is_past_its_time(tmp_path):
    """Keys past their retention and claims a dead replica left (rows and bytes), and expired cache entries."""
    import asyncio
    import datetime

    import sqlalchemy as sa

    from gesso.cache import DiskCache
    from gesso.proxy import store
    from gesso.proxy.cached import ExactCache
    from gesso.proxy.idempotency import Idempotency

    url = f"sqlite:///{tmp_path / 'gesso.db'}"
    store.upgrade(url)
    results = DiskCache(tmp_path / "results")

    async def run():
        db = store.Store(url)
        try:
            keys = Idempotency(db.engine, results, retention=datetime.timedelta(seconds=-1))  # expired at once
            done = await keys.claim("key:a", "k-done", "f" * 64, "1" * 32, wait=1)
            await keys.complete(done, 200, {}, 1, b"{}")
            left = await keys.claim("key:a", "k-left", "f" * 64, "2" * 32, wait=1)
            keys._stop(left)  # its replica died: no more beats
            hour_ago = store.now() - datetime.timedelta(hours=2)
            live = await keys.claim("key:a", "k-live", "f" * 64, "3" * 32, wait=1)
            async with db.engine.begin() as conn:
                await conn.execute(store.idempotency.update().where(store.idempotency.c.request_id == "2" * 32)
                                   .values(beat_at=hour_ago))  # fmt: skip
            assert await keys.purge() == 2
            async with db.engine.connect() as conn:
                kept = (await conn.execute(sa.select(store.idempotency.c.idempotency_key))).scalars().all()
            assert kept == ["k-live"] and results.size() == 0
            await keys.abandon(live)
            entries = ExactCache(db.engine, results)
            await entries.keep("a" * 64, model_name="nova", deployment="d", request_id="4" * 32, ttl=-1, headers={},
                               images=1, body=b"{}")  # fmt: skip
            await entries.keep("b" * 64, model_name="nova", deployment="d", request_id="5" * 32, ttl=60, headers={},
                               images=1, body=b"{}")  # fmt: skip
            assert await entries.expire() == 1 and await entries.find(["a" * 64, "b" * 64]) is not None
            assert results.size() == len(b"{}")  # the live entry's bytes only (kept under its request's id)
        finally:
            await db.close()

    asyncio.run(run())


def test_claims_are_fenced_released_and_waited_for_by_reading(tmp_path):
    """A holder that stalled and lost its claim never replaces the answer of the request that took the key over;
    a claim won just as its client left is given back; a key past its retention is free for another body; a
    waiting repeat reads the row rather than trying to claim it every time; a store that cannot be read is a 503
    naming no store, never a second call."""
    import asyncio
    import datetime

    import sqlalchemy as sa

    from gesso.cache import DiskCache
    from gesso.proxy import store
    from gesso.proxy.http import ProxyError
    from gesso.proxy.idempotency import Claim, Idempotency, Replay

    url = f"sqlite:///{tmp_path / 'gesso.db'}"
    store.upgrade(url)
    results = DiskCache(tmp_path / "results", max_bytes=None)

    async def run():
        db = store.Store(url)
        inserts = []
        sa.event.listen(db.engine.sync_engine, "before_cursor_execute",
                        lambda *args: inserts.append(1) if args[2].lstrip().upper().startswith("INSERT") else None)  # fmt: skip
        try:
            keys = Idempotency(db.engine, results)
            stalled = await keys.claim("key:a", "k", "f" * 64, "1" * 32, wait=1)
            assert isinstance(stalled, Claim)
            keys._stop(stalled)  # its replica stalls: no more beats
            async with db.engine.begin() as conn:
                await conn.execute(
                    store.idempotency.update().values(beat_at=store.now() - datetime.timedelta(minutes=1))
                )
            taker = await keys.claim("key:a", "k", "f" * 64, "2" * 32, wait=1)
            assert isinstance(taker, Claim) and taker.request_id == "2" * 32
            await keys.complete(taker, 200, {}, 1, b'{"by": "taker"}')
            await keys.complete(stalled, 200, {}, 1, b'{"by": "stalled"}')  # too late: fenced out
            replay = await keys.claim("key:a", "k", "f" * 64, "3" * 32, wait=1)
            assert isinstance(replay, Replay) and replay.body == b'{"by": "taker"}' and replay.request_id == "2" * 32
            assert results.size() == len(b'{"by": "taker"}')  # the stalled holder's bytes went

            won = await keys.claim("key:a", "left", "f" * 64, "4" * 32, wait=1)
            await keys.release("4" * 32)  # its client left as it won: given back, no beat left running
            assert won.beating is None and keys.held == {}
            again = await keys.claim("key:a", "left", "e" * 64, "5" * 32, wait=1)
            assert isinstance(again, Claim)  # free, for any body
            await keys.abandon(again)

            short = Idempotency(db.engine, results, retention=datetime.timedelta(seconds=-1))
            await short.complete(await short.claim("key:a", "old", "f" * 64, "6" * 32, wait=1), 200, {}, 1, b"{}")
            fresh = await short.claim("key:a", "old", "d" * 64, "7" * 32, wait=1)  # over: another body, no 422
            assert isinstance(fresh, Claim)

            inserts.clear()
            with pytest.raises(ProxyError) as caught:  # "old" is held by request 7: a repeat waits, then a 409
                await keys.claim("key:a", "old", "d" * 64, "8" * 32, wait=0.6)
            assert caught.value.status_code == 409 and len(inserts) == 1  # one try to claim, then reads only
            await short.abandon(fresh)

            class Failing(DiskCache):
                def get(self, key):
                    raise OSError("s3://secret-bucket/answers: AccessDenied")

            broken = Idempotency(db.engine, Failing(tmp_path / "results", max_bytes=None))
            with pytest.raises(ProxyError) as caught:
                await broken.claim("key:a", "k", "f" * 64, "9" * 32, wait=1)
            assert caught.value.status_code == 503 and "secret-bucket" not in str(caught.value)
        finally:
            await db.close()

    asyncio.run(run())


def test_a_disk_cache_counts_and_removes_only_its_own_files(tmp_path):
    from gesso.cache import DiskCache

    folder = tmp_path / "shared"
    (folder / "ab").mkdir(parents=True)
    foreign = [folder / "notes.txt", folder / "ab" / "README", folder / ("a" * 64), folder / "ab" / ("c" * 64)]
    for path in foreign:
        path.write_bytes(b"x" * 1000)
    store = DiskCache(folder, max_bytes=3000)
    for index in range(5):
        store.put(f"{index:x}" * 64, b"y" * 1000)
    assert store.size() <= 3000 and all(path.read_bytes() == b"x" * 1000 for path in foreign)
    assert store.purge() > 0 and store.size() == 0
    assert all(path.exists() for path in foreign)
    unbounded = DiskCache(tmp_path / "keys", max_bytes=None)
    for index in range(5):
        unbounded.put(f"{index:x}" * 64, b"z" * 1000)
    assert unbounded.size() == 5000  # never evicted: its owner removes what is over


def test_a_takeover_never_takes_a_claim_that_finished_meanwhile(tmp_path):
    """A repeat that found a stale claim takes it only if it is still running and still stale when it writes:
    here the holder completes between the repeat's look and its takeover, and the repeat gets the answer."""
    import asyncio
    import datetime

    import sqlalchemy as sa

    from gesso.cache import DiskCache
    from gesso.proxy import store
    from gesso.proxy.idempotency import Claim, Idempotency, Replay
    from gesso.proxy.idempotency import _entry as idempotency_entry

    url = f"sqlite:///{tmp_path / 'gesso.db'}"
    store.upgrade(url)
    results = DiskCache(tmp_path / "results", max_bytes=None)

    async def run():
        db = store.Store(url)
        try:
            keys = Idempotency(db.engine, results)
            holder = await keys.claim("key:a", "k", "f" * 64, "a" * 32, wait=1)
            assert isinstance(holder, Claim)
            keys._stop(holder)
            long_ago = store.now() - datetime.timedelta(minutes=1)
            async with db.engine.begin() as conn:
                await conn.execute(store.idempotency.update().values(beat_at=long_ago))
            results.put(idempotency_entry("key:a", "k", "a" * 32), b'{"by": "holder"}')
            fired = []

            def holder_finishes(conn, cursor, statement, parameters, context, executemany):
                if statement.startswith("UPDATE gesso_idempotency SET request_id") and not fired:
                    fired.append(statement)  # the holder completes just before the takeover writes
                    cursor.execute("UPDATE gesso_idempotency SET state = 'done', answer = '{}', expires_at = "
                                   "'2999-01-01 00:00:00.000000' WHERE request_id = ?", ("a" * 32,))  # fmt: skip

            sa.event.listen(db.engine.sync_engine, "before_cursor_execute", holder_finishes)
            got = await keys.claim("key:a", "k", "f" * 64, "b" * 32, wait=2)
            assert fired and isinstance(got, Replay) and got.request_id == "a" * 32 and got.body == b'{"by": "holder"}'
            sa.event.remove(db.engine.sync_engine, "before_cursor_execute", holder_finishes)

            # an answer a sweep removed at the end of its retention, by a clock a little ahead: the key is free,
            # not lost (an answer gone well within its retention is: see the proxy tests)
            async with db.engine.begin() as conn:
                await conn.execute(store.idempotency.update().values(
                    expires_at=store.now() + datetime.timedelta(seconds=30)))  # fmt: skip
            results.delete(idempotency_entry("key:a", "k", "a" * 32))
            again = await keys.claim("key:a", "k", "f" * 64, "c" * 32, wait=2)
            assert isinstance(again, Claim) and again.request_id == "c" * 32
            await keys.abandon(again)
        finally:
            await db.close()

    asyncio.run(run())
