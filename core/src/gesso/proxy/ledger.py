"""What a virtual key may do, answered without the database on almost every request, with every guarantee kept.

The store is the truth (``gesso.proxy.store``); this process keeps three things in front of it:

- **Keys**, cached for :data:`KEY_TTL` seconds: a key blocked, expired, changed or deleted on any replica is
  refused everywhere within that time (on the replica that changed it, at once).
- **Budget leases**: a replica reserves whole calls of a key's budget in one transaction (up to
  :data:`LEASE_CALLS` calls, leaving at least half of what remains to the other replicas) and holds each call's
  price against that lease locally. The budget is never exceeded: every call's price was reserved in the
  database before it was sent. A call's cost moves from the lease to the key's spend in the transaction that
  writes its spend row (summed per lease and group). A lease idle for :data:`LEASE_IDLE` seconds is given back;
  a held one is renewed; one whose replica died is released by any replica once :data:`LEASE_TTL` seconds past
  its last renewal. Near the end of a budget, another replica's lease may hold what is left for as long as that.
- **Rate-limit counts**: a replica counts a key's requests into the database's one-minute window in blocks
  (a twentieth of ``rpm_limit``, one for small limits) and spends them locally, so a limit holds across replicas
  (a replica's unspent counts are unavailable to the others until the minute ends: never more requests).

A database that does not answer within :data:`DB_WAIT` seconds during admission is a :class:`DatabaseUnavailable`
(the proxy answers 503 with ``Retry-After``, before anything is sent or paid).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import attrs

from gesso.proxy import store

logger = logging.getLogger("gesso.proxy")
T = TypeVar("T")

#: seconds a key read from the database is used before it is read again
KEY_TTL = 0.5
#: seconds a lease lives past its last renewal; a live replica renews its leases every third of that (and, every
#: third of it, releases the leases of replicas that stopped). ``GESSO_LEASE_TTL`` sets it (the tests shorten it).
LEASE_TTL = float(os.environ.get("GESSO_LEASE_TTL", "15"))
#: the most calls one lease reservation takes; and the seconds a lease may sit unused before it is given back
LEASE_CALLS = 16
LEASE_IDLE = 2.0
#: the share of what remains of a budget one reservation may take (the rest is left to other replicas)
LEASE_SHARE = 0.5
#: seconds admission waits for the database before the request is refused with a 503
DB_WAIT = 5.0
#: seconds between the ledger's upkeep (renewals, idle leases given back, expired ones released)
UPKEEP = 1.0


class DatabaseUnavailable(Exception):
    """The database did not answer in time; nothing was reserved or sent."""


@attrs.define(eq=False)
class Lease:
    """This replica's lease on a slice of one key's budget: ``amount`` reserved in the database (less what was
    settled into spend), ``held`` by calls in flight, ``spent`` by finished calls whose rows are not committed."""

    id: str
    token_hash: str
    amount: float
    held: float = 0.0
    spent: float = 0.0
    renewed: float = attrs.field(factory=time.monotonic)
    used: float = attrs.field(factory=time.monotonic)
    retired: bool = False

    @property
    def available(self) -> float:
        return self.amount - self.held - self.spent

    @property
    def busy(self) -> bool:
        return self.held > 1e-12 or self.spent > 1e-12

    def usable(self, moment: float) -> bool:
        """Not given back, and renewed recently enough that no other replica may have released it."""
        return not self.retired and moment - self.renewed < LEASE_TTL * 2 / 3


@attrs.define(eq=False)
class Counts:
    """Requests of one key this replica may still send in the minute ``window``."""

    window: int = -1
    left: int = 0


class Ledger:
    def __init__(self, database: store.Store) -> None:
        self.store = database
        self.keys: dict[str, tuple[float, store.Key | None]] = {}
        self.reading: dict[str, asyncio.Future[store.Key | None]] = {}
        self.leases: dict[str, Lease] = {}  # the current lease of each key (by hash)
        self.by_id: dict[str, Lease] = {}  # every lease with shares still unsettled
        self.counts: dict[str, Counts] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self._upkeep: asyncio.Task[None] | None = None
        database.on_settled = self.settled

    # -- keys -------------------------------------------------------------------------------------------------

    async def key(self, token_hash: str) -> store.Key | None:
        """The key with this hash (``None``: no such key), at most :data:`KEY_TTL` seconds old."""
        cached = self.keys.get(token_hash)
        moment = time.monotonic()
        if cached is not None and moment - cached[0] < KEY_TTL:
            return cached[1]
        reading = self.reading.get(token_hash)
        if reading is None:  # one read of a key at a time: the requests that want it meanwhile share it
            reading = self.reading[token_hash] = asyncio.ensure_future(self._read_key(token_hash, moment))
        return await self._database(asyncio.shield(reading))

    async def _read_key(self, token_hash: str, moment: float) -> store.Key | None:
        try:
            found = await self.store.get_key(token_hash)
            if len(self.keys) > 100_000:  # guessed keys must not grow it for ever
                self.keys.clear()
            self.keys[token_hash] = (moment, found)
            return found
        finally:
            if self.reading.get(token_hash) is asyncio.current_task():
                del self.reading[token_hash]

    def forget(self, token_hash: str | None = None) -> None:
        """Drop a cached key (every key: ``None``), after this replica changed it (a read in flight may predate
        the change: it is not shared from now on)."""
        if token_hash is None:
            self.keys.clear()
            self.reading.clear()
        else:
            self.keys.pop(token_hash, None)
            self.reading.pop(token_hash, None)

    # -- rate limits ------------------------------------------------------------------------------------------

    async def count(self, key: store.Key) -> float | None:
        """Count one request against ``rpm_limit``: ``None`` if it may go, else the seconds until the next minute."""
        if key.rpm_limit is None:
            return None
        counts = self.counts.setdefault(key.token_hash, Counts())
        window = int(store.now().timestamp() // 60)
        if counts.window == window and counts.left > 0:
            counts.left -= 1
            return None
        deadline = time.monotonic() + DB_WAIT
        async with self._within(f"rpm:{key.token_hash}", deadline):
            if counts.window == window and counts.left > 0:
                counts.left -= 1
                return None
            block = max(1, min(50, key.rpm_limit // 20))
            granted, wait = await self._database(self.store.take_requests(key, block), deadline)
            counts.window, counts.left = window, granted
            if granted < 1:
                return max(1.0, wait)
            counts.left -= 1
            return None

    # -- budgets ----------------------------------------------------------------------------------------------

    async def hold(self, key: store.Key, price: float) -> Any:
        """Hold ``price`` of the key's budget for one call (raises :class:`store.BudgetExceeded`); what is held
        goes to :meth:`finished` when the call ends and to the store with its spend row."""
        if key.max_budget is None:
            return store.KeySpend(key.token_hash)
        lease = self._lease_for(key.token_hash, price)
        if lease is None:
            deadline = time.monotonic() + DB_WAIT
            async with self._within(key.token_hash, deadline):
                lease = self._lease_for(key.token_hash, price)
                if lease is None:
                    lease = await self._grow(key, price, deadline)
        lease.held += price
        lease.used = time.monotonic()
        return store.LeaseShare(lease.id, key.token_hash, price)

    def _lease_for(self, token_hash: str, price: float) -> Lease | None:
        lease = self.leases.get(token_hash)
        if lease is not None and lease.usable(time.monotonic()) and lease.available >= price - 1e-9:
            return lease
        return None

    async def _grow(self, key: store.Key, price: float, deadline: float) -> Lease:
        current = self.leases.get(key.token_hash)
        reuse = current is not None and current.usable(time.monotonic())
        held_id = current.id if reuse and current is not None else None
        # what the lease has left counts towards the call: only the rest is reserved
        needed = price - max(0.0, current.available) if reuse and current is not None else price
        for attempt in range(1, 4):
            try:
                lease_id, granted, kept = await self._database(
                    self.store.grow_lease(key, held_id, max(needed, 0.0), price, LEASE_CALLS, LEASE_SHARE, LEASE_TTL),
                    deadline,
                )
                break
            except Exception as exc:  # PostgreSQL aborting a transaction (a serialization failure) is tried again
                if attempt == 3 or not store.transient(exc):
                    raise
                await asyncio.sleep(0.01 * attempt)
        moment = time.monotonic()
        if reuse and kept and current is not None:
            current.amount += granted
            current.renewed = moment
            return current
        if current is not None:  # given up (its shares settle into it as they finish, or as spend if it is gone)
            current.retired = True
        lease = Lease(lease_id, key.token_hash, granted, renewed=moment)
        self.leases[key.token_hash] = lease
        self.by_id[lease_id] = lease
        return lease

    def finished(self, held: Any, cost: float) -> None:
        """A call ended (cost 0 if nothing was paid): its price is no longer held; its cost waits for its row."""
        if isinstance(held, store.LeaseShare):
            lease = self.by_id.get(held.lease_id)
            if lease is not None:
                lease.held -= held.amount
                lease.spent += cost

    def settled(self, pairs: list[tuple[Any, float]]) -> None:
        """The store committed these calls' rows: their cost left the lease for the key's spend."""
        for held, cost in pairs:
            if isinstance(held, store.LeaseShare):
                lease = self.by_id.get(held.lease_id)
                if lease is not None:
                    lease.spent -= cost
                    lease.amount -= cost
                    if lease.retired and not lease.busy:
                        self.by_id.pop(lease.id, None)

    # -- upkeep -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._upkeep is None:
            self._upkeep = asyncio.ensure_future(self._run_upkeep())

    async def _run_upkeep(self) -> None:
        swept = 0.0
        while True:
            await asyncio.sleep(UPKEEP)
            try:
                due = time.monotonic() - swept >= LEASE_TTL / 3
                await self.upkeep(sweep_expired=due)
                if due:
                    swept = time.monotonic()
            except Exception as exc:  # the database may be away: the next round tries again
                logger.warning("budget lease upkeep failed (%s: %s); trying again", type(exc).__name__, exc)

    async def upkeep(self, *, sweep_expired: bool = True) -> None:
        """Give back idle leases, renew the others before a third of their life is left, and release the leases
        of replicas that died."""
        moment = time.monotonic()
        for lease in list(self.leases.values()):
            if not lease.busy and moment - lease.used >= LEASE_IDLE:
                await self._give_back(lease)
        due = [lease for lease in self.by_id.values() if not lease.retired and moment - lease.renewed >= LEASE_TTL / 3]
        if due:
            alive = await self.store.renew_leases([lease.id for lease in due], LEASE_TTL)
            for lease in due:
                if lease.id in alive:
                    lease.renewed = moment
                else:  # released by another replica (this one was away too long): its calls settle as spend
                    lease.retired = True
                    if self.leases.get(lease.token_hash) is lease:
                        del self.leases[lease.token_hash]
        if sweep_expired:
            released = await self.store.release_expired_leases()
            if released:
                logger.warning("released %d budget leases past their expiry (their replica stopped)", released)

    async def _give_back(self, lease: Lease) -> None:
        async with self._lock(lease.token_hash):
            if lease.busy or self.leases.get(lease.token_hash) is not lease:
                return
            lease.retired = True
            del self.leases[lease.token_hash]
            self.by_id.pop(lease.id, None)
            await self.store.return_lease(lease.id, lease.token_hash)

    async def close(self) -> None:
        """Stop the upkeep and give back every lease (after the spend rows are written)."""
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._upkeep
        for lease in list(self.leases.values()):
            if not lease.busy:
                with contextlib.suppress(Exception):
                    await self._give_back(lease)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self.locks.get(name)
        if lock is None:
            if len(self.locks) > 100_000:
                self.locks = {k: v for k, v in self.locks.items() if v.locked()}
            lock = self.locks[name] = asyncio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def _within(self, name: str, deadline: float) -> Any:
        """The lock ``name``, if it comes before ``deadline`` (a request waiting behind another that waits for
        the database is bounded too), else :class:`DatabaseUnavailable`."""
        lock = self._lock(name)
        try:
            await asyncio.wait_for(lock.acquire(), max(0.0, deadline - time.monotonic()))
        except (TimeoutError, asyncio.TimeoutError):
            raise DatabaseUnavailable(f"no answer within {DB_WAIT:g} s") from None
        try:
            yield
        finally:
            lock.release()

    async def _database(self, pending: Awaitable[T], deadline: float | None = None) -> T:
        """``pending`` (a database call made before a request is admitted), or :class:`DatabaseUnavailable` when
        the database does not answer by ``deadline`` (default: :data:`DB_WAIT` seconds from now). A call given up
        on is left to finish (not cancelled halfway through a driver's work): a key it reads is dropped, a lease
        it takes is released at its expiry, counts it takes are left unused."""
        task = asyncio.ensure_future(pending)
        limit = DB_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait({task}, timeout=limit)
        if not done:
            task.add_done_callback(_abandoned)
            raise DatabaseUnavailable(f"no answer within {DB_WAIT:g} s")
        try:
            return task.result()
        except Exception as exc:
            if store.unavailable(exc):
                raise DatabaseUnavailable(f"{type(exc).__name__}") from exc
            raise


def _abandoned(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("a database call given up on failed later: %r", task.exception())
