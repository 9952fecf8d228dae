"""Idempotency keys (the convention Stripe made common): a request with an ``Idempotency-Key`` header is run once
for that key and the virtual key that sent it; a repeat gets the stored answer.

- The first request **claims** the key in the database (``gesso_idempotency``: one row a key, so one claim wins
  across replicas) with its body's fingerprint, and renews the claim every :data:`BEAT` seconds while its call
  runs. A claim not renewed for :data:`STALE` seconds was held by a replica that died: a repeat takes it over.
- A repeat **with the same body** while the first runs waits for it (looking every :data:`POLL` seconds at first,
  every :data:`MAX_POLL` at most, within its deadline: a 409 after it); once the first has answered, it is
  **replayed** from the store until the key's retention ends. A repeat **with a different body** is refused (422).
- The answer is kept only when the call succeeded: a failed first attempt (the provider's error, a budget's
  refusal) gives the claim back, so a retry runs again.
- The answer's bytes are in the result store (:class:`gesso.cache.ResultStore`: a directory by default, never
  bounded by size: the retention bounds it), under the key and the id of the request that ran it, so a holder
  that stalled and lost its claim never overwrites the answer of the request that took it over; the row holds
  its status and headers. A repeat whose answer cannot be read (another host's directory, a store that fails)
  is refused with an error rather than run again: it was paid for once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import time
from typing import Any

import attrs
import sqlalchemy as sa

from gesso.cache import ResultStore, digest
from gesso.proxy import store
from gesso.proxy.http import ProxyError
from gesso.proxy.store import _aware

logger = logging.getLogger("gesso.proxy")

#: the request header, as sent (headers are matched without regard to case)
HEADER = "Idempotency-Key"
#: at most this many characters, each printable ASCII
MAX_LENGTH = 255
#: seconds between renewals of a running claim; an unrenewed claim is taken over after STALE seconds
BEAT = 5.0
STALE = 20.0
#: seconds between looks at a claim another request holds: at first, and at most
POLL = 0.05
MAX_POLL = 0.5
#: the most seconds a repeat waits for the request that runs its key (a client that leaves stops waiting)
WAIT = 600.0
#: how far replicas' clocks may differ: an answer gone this close to the end of its retention was swept
SKEW = datetime.timedelta(seconds=60)
#: how long an answer is replayed by default (general_settings.idempotency_retention)
DEFAULT_RETENTION = datetime.timedelta(hours=24)


def read_key(headers: Any) -> str | None:
    """The request's idempotency key, checked: None when it sends none; a 400 naming the header otherwise."""
    value: str | None = headers.get(HEADER.lower())
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_LENGTH or not all(" " <= ch <= "~" for ch in value):
        raise ProxyError(400, f"{HEADER}: 1 to {MAX_LENGTH} printable ASCII characters", type="invalid_request_error",
                         param=HEADER, code="invalid_idempotency_key")  # fmt: skip
    return value


def fingerprint(operation: str, model: Any, prompt: Any, fields: dict[str, Any], images: list[Any], mask: Any) -> str:
    """A hash of what a request asks for, as parsed (a multipart body's boundary differs from one send to the
    next; its fields and files do not)."""

    asked = {"operation": operation, "model": model, "prompt": prompt, "fields": fields,
             "images": [digest(image) for image in images], "mask": None if mask is None else digest(mask)}  # fmt: skip
    try:
        text = json.dumps(asked, sort_keys=True, ensure_ascii=True, default=repr)
    except (ValueError, RecursionError):  # an integer too long to write, or a body nested too deeply
        raise ProxyError(400, f"{HEADER}: this request body cannot be compared with a repeat's (a number too long, "
                         "or values nested too deeply); send it without the header, or a smaller body",
                         type="invalid_request_error", param=HEADER,
                         code="idempotency_body_unhashable") from None  # fmt: skip
    return digest(text)


@attrs.define
class Claim:
    """This request holds the key: it runs the call, then :meth:`Idempotency.complete` or ``abandon``."""

    token_hash: str
    key: str
    request_id: str
    beating: asyncio.Task[None] | None = None


@attrs.frozen
class Replay:
    """The stored answer of the request that ran the key first."""

    request_id: str
    status: int
    headers: dict[str, str]
    images: int
    body: bytes

    @classmethod
    def stored(cls, request_id: str, answer: dict[str, Any] | None, body: bytes) -> Replay:
        """The replay of a stored answer: its row's ``answer`` (status, headers, images) and its bytes."""
        answer = answer or {}
        return cls(request_id, int(answer.get("status", 200)), dict(answer.get("headers", {})),
                   int(answer.get("images", 0)), body)  # fmt: skip


def _entry(token_hash: str, key: str, request_id: str) -> str:
    """The result store's key of the answer the request ``request_id`` gave for an idempotency key."""
    return digest(f"idempotency\x00{token_hash}\x00{key}\x00{request_id}")


class Idempotency:
    """The claims (in the database at ``engine``) and the answers (in ``results``)."""

    def __init__(self, engine: Any, results: ResultStore, retention: datetime.timedelta = DEFAULT_RETENTION) -> None:
        self.engine, self.results, self.retention = engine, results, retention
        #: the claims this process holds, by request id (:meth:`release`)
        self.held: dict[str, Claim] = {}

    async def claim(self, token_hash: str, key: str, print_: str, request_id: str, wait: float) -> Claim | Replay:
        """Claim ``key`` for this request, or the stored answer of the request that ran it; waits (at most
        ``wait`` seconds) while another request runs it. A 422 when the key came with another body."""
        table = store.idempotency
        where = sa.and_(table.c.token_hash == token_hash, table.c.idempotency_key == key)
        deadline = time.monotonic() + wait
        pause = POLL
        free = True  # no row was seen: try to claim (a waiting repeat only reads until the row goes)
        while True:
            now = store.now()
            if free:
                try:
                    async with self.engine.begin() as conn:
                        await conn.execute(table.insert().values(
                            token_hash=token_hash, idempotency_key=key, fingerprint=print_, request_id=request_id,
                            state="running", created_at=now, beat_at=now))  # fmt: skip
                    return self._claimed(Claim(token_hash, key, request_id))
                except sa.exc.IntegrityError:
                    pass  # claimed before: see by whom
            async with self.engine.connect() as conn:
                row = (await conn.execute(sa.select(table).where(where))).first()
            free = row is None
            if row is None:
                continue  # given back meanwhile: claim it again
            mine = sa.and_(where, table.c.request_id == row.request_id)
            if row.state == "done" and _aware(row.expires_at) <= now:  # its retention is over: a new request
                async with self.engine.begin() as conn:
                    await conn.execute(table.delete().where(mine))
                await self._forget(token_hash, key, row.request_id)
                free = True
                continue
            if row.fingerprint != print_:
                raise ProxyError(422, f"{HEADER} {key!r} was used with another request body; a retry must send the "
                                 "same body, or a new key", type="invalid_request_error", param=HEADER,
                                 code="idempotency_key_reused")  # fmt: skip
            if row.state == "done":
                body = await self._answer(token_hash, key, row.request_id, row.expires_at)
                if body is None:  # its bytes went with its retention, on a replica whose clock is ahead: over
                    async with self.engine.begin() as conn:
                        await conn.execute(table.delete().where(mine))
                    free = True
                    continue
                return Replay.stored(row.request_id, row.answer, body)
            if _aware(row.beat_at) < now - datetime.timedelta(seconds=STALE):  # its replica died: take it over
                stale = sa.and_(mine, table.c.state == "running",  # still running and still stale when taken
                                table.c.beat_at < now - datetime.timedelta(seconds=STALE))  # fmt: skip
                async with self.engine.begin() as conn:
                    taken = await conn.execute(table.update().where(stale).values(request_id=request_id, beat_at=now))
                if taken.rowcount == 1:
                    return self._claimed(Claim(token_hash, key, request_id))
                continue
            if time.monotonic() >= deadline:
                raise ProxyError(409, f"A request with {HEADER} {key!r} is still running; retry later",
                                 type="invalid_request_error", param=HEADER, code="idempotency_key_in_use",
                                 headers={"retry-after": "1"})  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, MAX_POLL)  # a long call is looked at less often: the database is shared

    async def _answer(self, token_hash: str, key: str, request_id: str, expires_at: Any = None) -> bytes | None:
        """The stored answer of a key's request; an error when it cannot be read: the key was paid for once, so
        it is never run again within its retention. None when it is gone because the retention ends within
        :data:`SKEW` (another replica's sweep, by its clock, removed it): the key is free again."""
        try:
            body = await asyncio.to_thread(self.results.get, _entry(token_hash, key, request_id))
        except Exception as exc:
            logger.warning("the stored answer of request %s could not be read (%s)", request_id, type(exc).__name__)
            raise ProxyError(503, f"The stored answer of {HEADER} {key!r} could not be read from the proxy's result "
                             "store; it is not run again, so as not to pay twice. Try again shortly",
                             type="api_error", param=HEADER, code="idempotency_answer_unavailable",
                             headers={"retry-after": "1"}) from None  # fmt: skip
        if body is None and expires_at is not None and _aware(expires_at) <= store.now() + SKEW:
            return None
        if body is None:
            raise ProxyError(409, f"{HEADER} {key!r} was answered (request {request_id}), but its stored answer is "
                             "not in this proxy's result store (a directory on another host?); it is not run again, "
                             "so as not to pay twice. Send a new key to run it again", type="invalid_request_error",
                             param=HEADER, code="idempotency_answer_lost",
                             headers={"x-should-retry": "false"})  # fmt: skip
        return body

    async def _forget(self, token_hash: str, key: str, request_id: str) -> None:
        with contextlib.suppress(Exception):  # (what is left is an orphan file: nothing reads it)
            await asyncio.to_thread(self.results.delete, _entry(token_hash, key, request_id))

    def _claimed(self, claim: Claim) -> Claim:
        claim.beating = asyncio.ensure_future(self._beat(claim))
        self.held[claim.request_id] = claim
        return claim

    async def release(self, request_id: str) -> None:
        """Give back the claim of ``request_id`` if it still holds one (one won just as its client left)."""
        claim = self.held.get(request_id)
        if claim is not None:
            await self.abandon(claim)

    async def _beat(self, claim: Claim) -> None:
        table = store.idempotency
        while True:
            await asyncio.sleep(BEAT)
            with contextlib.suppress(Exception):  # a missed beat is retried; STALE allows several
                async with self.engine.begin() as conn:
                    await conn.execute(table.update().where(self._held(claim)).values(beat_at=store.now()))

    @staticmethod
    def _held(claim: Claim) -> Any:
        table = store.idempotency
        return sa.and_(table.c.token_hash == claim.token_hash, table.c.idempotency_key == claim.key,
                       table.c.request_id == claim.request_id)  # fmt: skip

    async def complete(self, claim: Claim, status: int, headers: dict[str, str], images: int, body: bytes) -> None:
        """The call succeeded: its answer stored (the claim still renewed while it is written), then the claim
        marked done, so a repeat finds the bytes. A store that fails to write is logged, and the key is marked
        done all the same: its repeats get an error (``idempotency_answer_lost``), never a second paid call."""
        entry = _entry(claim.token_hash, claim.key, claim.request_id)
        try:
            await asyncio.to_thread(self.results.put, entry, body)
        except Exception as exc:
            logger.warning("the answer of request %s could not be stored for its idempotency key (%s); its repeats "
                           "will be refused", claim.request_id, type(exc).__name__)  # fmt: skip
        self._stop(claim)
        answer = {"status": status, "headers": headers, "images": images}
        try:
            async with self.engine.begin() as conn:
                done = await conn.execute(store.idempotency.update().where(self._held(claim)).values(
                    state="done", answer=answer, expires_at=store.now() + self.retention))  # fmt: skip
        except BaseException:
            await self._forget(claim.token_hash, claim.key, claim.request_id)
            raise
        if done.rowcount != 1:  # the claim was taken over (this replica stalled): the other request's answer stands
            await self._forget(claim.token_hash, claim.key, claim.request_id)

    async def abandon(self, claim: Claim) -> None:
        """The call failed or never ran: the claim given back, so a retry runs again."""
        self._stop(claim)
        async with self.engine.begin() as conn:
            await conn.execute(store.idempotency.delete().where(self._held(claim)))

    def _stop(self, claim: Claim) -> None:
        self.held.pop(claim.request_id, None)
        if claim.beating is not None:
            claim.beating.cancel()
            claim.beating = None

    async def purge(self) -> int:
        """Keys whose retention ended removed (their answers with them), and claims left by a replica that died
        (not renewed for an hour: a repeat would have taken them over); how many."""
        table = store.idempotency
        now = store.now()
        left = sa.and_(table.c.state == "running", table.c.beat_at < now - datetime.timedelta(hours=1))
        over = sa.or_(table.c.expires_at < now, left)
        async with self.engine.begin() as conn:
            rows = (await conn.execute(sa.select(table.c.token_hash, table.c.idempotency_key,
                                                 table.c.request_id).where(over))).all()  # fmt: skip
            for row in rows:  # (the row of that request only: a new one for the key keeps its answer)
                await conn.execute(table.delete().where(sa.and_(table.c.token_hash == row.token_hash,
                                   table.c.idempotency_key == row.idempotency_key,
                                   table.c.request_id == row.request_id)))  # fmt: skip
        for row in rows:
            await self._forget(row.token_hash, row.idempotency_key, row.request_id)
        return len(rows)
