"""The proxy's exact cache: an answer kept by the hash of its request exactly as the provider was sent it
(:func:`gesso.api.cache_key`: the model as invoked, every body, what the images were made into, and the scope),
served again until its time to live ends. Only calls whose bodies fix their seed are kept (each family says
which do: ``PreparedRequest.seeded``), so a hit is the stored result of an identical earlier request, never a
claim that the provider would draw the same image again.

The entries are rows of ``gesso_cache`` (shared by replicas); their bytes are in the result store, under the key
and the id of the request that made them (two replicas that miss at once each keep their own, and the row says
whose are served). An entry whose bytes are gone (evicted by the store's bound, or on another host's disk) is a
miss, and its row goes; a store that fails is a miss too (logged), and the call is made as without a cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from typing import Any

import sqlalchemy as sa

from gesso.cache import ResultStore, digest
from gesso.proxy import store
from gesso.proxy.idempotency import Replay

logger = logging.getLogger("gesso.proxy")

#: the request header that steers the cache (``no-cache``: no lookup; ``no-store``: the answer is not kept)
CACHE_CONTROL = "cache-control"


def directives(headers: Any) -> set[str]:
    """The request's ``Cache-Control`` directives, lowercase (``no-cache``, ``no-store``...)."""
    value = headers.get(CACHE_CONTROL) or ""
    return {part.strip().split("=", 1)[0].lower() for part in value.split(",") if part.strip()}


class ExactCache:
    """The entries (in the database at ``engine``) and their answers (in ``results``)."""

    def __init__(self, engine: Any, results: ResultStore) -> None:
        self.engine, self.results = engine, results

    async def find(self, keys: list[str]) -> Replay | None:
        """The live entry of the first of ``keys`` that has one, as its stored answer."""
        table = store.cache_entries
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(table).where(table.c.cache_key.in_(keys),
                                                              table.c.expires_at > store.now()))).all()  # fmt: skip
        found = {row.cache_key: row for row in rows}
        for key in keys:
            row = found.get(key)
            if row is None:
                continue
            try:
                body = await asyncio.to_thread(self.results.get, _bytes(key, row.request_id))
            except Exception as exc:  # the store failed: a miss (the entry stays; it may be read next time)
                logger.warning("the cache's entry %s could not be read (%s)", key[:16], type(exc).__name__)
                continue
            if body is None:  # its bytes are gone: a miss, and the entry with them (that entry only: not a newer one)
                async with self.engine.begin() as conn:
                    await conn.execute(table.delete().where(table.c.cache_key == key,
                                                            table.c.request_id == row.request_id))  # fmt: skip
                continue
            return Replay.stored(row.request_id, row.answer, body)
        return None

    async def keep(self, key: str, *, model_name: str, deployment: str, request_id: str, ttl: float,
                   headers: dict[str, str], images: int, body: bytes) -> None:  # fmt: skip
        """Keep a successful answer under ``key`` for ``ttl`` seconds (replacing an entry that expired or whose
        bytes went)."""
        await asyncio.to_thread(self.results.put, _bytes(key, request_id), body)
        table = store.cache_entries
        now = store.now()
        row = {"cache_key": key, "model_name": model_name, "deployment": deployment, "request_id": request_id,
               "created_at": now, "expires_at": now + datetime.timedelta(seconds=ttl),
               "answer": {"status": 200, "headers": headers, "images": images}}  # fmt: skip
        try:
            async with self.engine.begin() as conn:
                old = (await conn.execute(sa.select(table.c.request_id).where(table.c.cache_key == key))).first()
                await conn.execute(table.delete().where(table.c.cache_key == key))
                await conn.execute(table.insert().values(**row))
        except sa.exc.IntegrityError:  # another replica kept the same request's answer first: it is served
            await self._forget(key, request_id)
            return
        if old is not None and old.request_id != request_id:
            await self._forget(key, old.request_id)

    async def expire(self) -> int:
        """Remove the entries whose time to live is over; how many."""
        return await self._remove(store.cache_entries.c.expires_at <= store.now())

    async def purge(self, model_name: str | None = None, older_than: float | None = None) -> int:
        """Remove the entries (of ``model_name``; made more than ``older_than`` seconds ago), and every expired one;
        how many were removed."""
        table = store.cache_entries
        now = store.now()
        chosen = []
        if model_name is not None:
            chosen.append(table.c.model_name == model_name)
        if older_than is not None:
            chosen.append(table.c.created_at < now - datetime.timedelta(seconds=older_than))
        return await self._remove(sa.or_(sa.and_(sa.true(), *chosen), table.c.expires_at <= now))

    async def _remove(self, where: Any) -> int:
        table = store.cache_entries
        async with self.engine.begin() as conn:
            rows = (await conn.execute(sa.select(table.c.cache_key, table.c.request_id).where(where))).all()
            for start in range(0, len(rows), 500):
                chosen = rows[start : start + 500]
                await conn.execute(table.delete().where(sa.tuple_(table.c.cache_key, table.c.request_id).in_(
                    [(row.cache_key, row.request_id) for row in chosen])))  # fmt: skip
        for row in rows:
            await self._forget(row.cache_key, row.request_id)
        return len(rows)

    async def _forget(self, key: str, request_id: str) -> None:
        with contextlib.suppress(Exception):  # (what is left is an orphan file: nothing reads it)
            await asyncio.to_thread(self.results.delete, _bytes(key, request_id))


def _bytes(key: str, request_id: str) -> str:
    """Where the answer of ``request_id`` kept under the entry ``key`` is in the result store."""
    return digest(f"cache\x00{key}\x00{request_id}")
