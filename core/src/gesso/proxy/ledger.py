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
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import attrs

from gesso.proxy import directory, store

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
#: seconds between looks at a budget whose rest calls in flight or other replicas' leases hold
PENDING_POLL = 0.1
#: calls' worth left in a lease under which it is topped up when another lease of the same call's path grows
LOW_WATER = LEASE_CALLS // 2
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
    """This replica's lease on a slice of one key's or budget row's budget (``table``, ``holder``): ``amount``
    reserved in the database (less what was settled into spend), ``held`` by calls in flight, ``spent`` by
    finished calls whose rows are not committed."""

    id: str
    table: str
    holder: str
    amount: float
    held: float = 0.0
    spent: float = 0.0
    renewed: float = attrs.field(factory=time.monotonic)
    used: float = attrs.field(factory=time.monotonic)
    retired: bool = False
    #: granted no more than its call needed (the end of a budget): given back as soon as it is idle
    tight: bool = False

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
    """Requests (or images) of one key or budget this replica may still send in the minute ``window``."""

    window: int = -1
    left: int = 0


class Ledger:
    def __init__(self, database: store.Store) -> None:
        self.store = database
        self.keys: dict[str, tuple[float, store.Key | None]] = {}
        self.reading: dict[str, asyncio.Future[store.Key | None]] = {}
        self.directory = directory.Directory(database)
        #: a key's team, membership and owner, and end customers, read as keys are (at most KEY_TTL seconds old)
        self.entities: dict[tuple[str | None, ...], tuple[float, Any]] = {}
        self.entity_reads: dict[tuple[str | None, ...], asyncio.Future[Any]] = {}
        self.leases: dict[str, Lease] = {}  # the current lease of each key or budget (by hash or budget id)
        self.by_id: dict[str, Lease] = {}  # every lease with shares still unsettled
        self.counts: dict[str, Counts] = {}
        #: budgets found held by calls in flight and other replicas' leases: until when a call waits, and why
        self.polls: dict[str, tuple[float, store.BudgetPending]] = {}
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

    async def owners(self, key: store.Key) -> directory.Owners:
        """The key's team, its owner's membership of it, and its owner, at most :data:`KEY_TTL` seconds old."""
        if key.team_id is None and key.user_id is None:
            return directory.NOBODY
        owners: directory.Owners = await self._entity(
            ("owners", key.team_id, key.user_id), lambda: self.directory.owners(key.team_id, key.user_id)
        )
        return owners

    async def customer(self, user_id: str, default_budget: float | None) -> directory.Customer | None:
        """The end customer ``user_id`` (at most :data:`KEY_TTL` seconds old); one a request names first is made
        with ``default_budget`` (``litellm_settings.max_end_user_budget``) when there is one."""
        found: directory.Customer | None = await self._entity(
            ("customer", user_id), lambda: self.directory.customer(user_id)
        )
        if found is None and default_budget is not None:
            found = await self._database(self.directory.implicit_customer(user_id, default_budget))
            self.entities[("customer", user_id)] = (time.monotonic(), found)
        return found

    async def _entity(self, name: tuple[str | None, ...], read: Any) -> Any:
        cached = self.entities.get(name)
        moment = time.monotonic()
        if cached is not None and moment - cached[0] < KEY_TTL:
            return cached[1]
        reading = self.entity_reads.get(name)
        if reading is None:  # one read at a time: the requests that want it meanwhile share it

            async def fresh() -> Any:
                try:
                    found = await read()
                    if len(self.entities) > 100_000:  # customers named by callers must not grow it for ever
                        self.entities.clear()
                    self.entities[name] = (moment, found)
                    return found
                finally:
                    if self.entity_reads.get(name) is reading:
                        del self.entity_reads[name]

            reading = self.entity_reads[name] = asyncio.ensure_future(fresh())
        return await self._database(asyncio.shield(reading))

    def forget(self, token_hash: str | None = None) -> None:
        """Drop a cached key (every key, team, user and customer: ``None``), after this replica changed it (a read
        in flight may predate the change: it is not shared from now on)."""
        self.entities.clear()
        self.entity_reads.clear()
        if token_hash is None:
            self.keys.clear()
            self.reading.clear()
        else:
            self.keys.pop(token_hash, None)
            self.reading.pop(token_hash, None)

    # -- rate limits ------------------------------------------------------------------------------------------

    async def limit(
        self, path: Sequence[store.Holder], images: int, requests: int = 1
    ) -> tuple[tuple[store.Holder, str, int, float] | None, list[tuple[str, int, int]]]:
        """Count ``requests`` requests (one; none for one counted before) of ``images`` images against every
        ``rpm_limit`` and ``ipm_limit`` on its path (its key, member, user, team, customer). Returns the first that
        refused it (the holder, which limit, its value, the seconds until the next minute), or ``None``; and what
        was counted, for :meth:`refund` (a request refused by one level, here or by a budget, gives back what the
        others counted: it was never admitted)."""
        taken: list[tuple[str, int, int]] = []
        for holder in path:
            for name, window_id, amount in (("rpm_limit", holder.holder, requests),
                                            ("ipm_limit", "i:" + holder.holder[:62], images)):  # fmt: skip
                limit = getattr(holder, name)
                if limit is not None and amount > 0:
                    wait = await self._spend_count(window_id, limit, amount)
                    if wait is not None:
                        self.refund(taken)
                        return (holder, name, limit, wait), []
                    taken.append((window_id, self.counts[window_id].window, amount))
        return None, taken

    def refund(self, taken: Sequence[tuple[str, int, int]]) -> None:
        """Give back counts :meth:`limit` took (to this replica's share of their minute, if it has not ended)."""
        for window_id, window, amount in taken:
            counts = self.counts.get(window_id)
            if counts is not None and counts.window == window:
                counts.left += amount

    async def _spend_count(self, window_id: str, limit: int, amount: int) -> float | None:
        counts = self.counts.setdefault(window_id, Counts())
        window = int(store.now().timestamp() // 60)
        if counts.window == window and counts.left >= amount:
            counts.left -= amount
            return None
        deadline = time.monotonic() + DB_WAIT
        async with self._within(f"rpm:{window_id}", deadline):
            if counts.window == window and counts.left >= amount:
                counts.left -= amount
                return None
            if counts.window != window:
                counts.window, counts.left = window, 0
            block = max(amount - counts.left, min(50, limit // 20), 1)
            granted, wait = await self._database(self.store.take_requests(window_id, block, limit), deadline)
            counts.left += granted
            if counts.left < amount:
                return max(1.0, wait)
            counts.left -= amount
            return None

    # -- budgets ----------------------------------------------------------------------------------------------

    async def hold(self, path: store.Holder | Sequence[store.Holder], price: float) -> Any:
        """Hold ``price`` of every budget on a call's path (a key, or the key and its team, member, user and
        customer) at once, or of none (raises :class:`store.BudgetExceeded`, naming the most restrictive that
        refused). A level without a budget holds nothing; its spend is added when the call's row is written. What
        is held goes to :meth:`finished` when the call ends and to the store with its spend row."""
        holders = [path] if isinstance(path, (store.Key, store.Budget)) else list(path)
        budgeted = [h for h in holders if h.max_budget is not None]
        deadline = time.monotonic() + DB_WAIT
        seen: store.BudgetPending | None = None  # the budget this call waited for
        while True:
            if all(self._lease_for(h.holder, price) is not None for h in budgeted):
                return self._held(holders, price)
            pending = self._pending([h for h in budgeted if self._lease_for(h.holder, price) is None])
            if pending is not None:  # what is held may come back: wait for it (holding nothing), then refuse
                until, seen = pending
                if until >= deadline:
                    raise store.BudgetExceeded(seen.key, seen.amount)
                await asyncio.sleep(until - time.monotonic())
                continue
            try:
                held = await self._grow_path(holders, budgeted, price, deadline)
            except DatabaseUnavailable:  # no lock in time: after waiting for a budget, that budget refuses
                if seen is None:
                    raise
                raise store.BudgetExceeded(seen.key, seen.amount) from None
            if held is not None:
                return held
            if time.monotonic() >= deadline:  # (its leases were retired meanwhile, again and again)
                raise DatabaseUnavailable(f"no lease within {DB_WAIT:g} s")

    async def _grow_path(
        self, holders: Sequence[store.Holder], budgeted: Sequence[store.Holder], price: float, deadline: float
    ) -> Any:
        """Under every level's lock, grow the path's short leases (and top up its low ones) and hold the call's
        price: what is held, or ``None`` to look again."""
        if budgeted:
            # every level's lock, not only the short ones': a call of this replica that finds one of them short
            # meanwhile waits for this grow rather than being refused while this call holds its price there
            async with contextlib.AsyncExitStack() as locked:
                for holder in sorted(budgeted, key=lambda h: (h.table, h.holder)):  # one order: no cycle of waits
                    await locked.enter_async_context(self._within(holder.holder, deadline))
                short = [h for h in budgeted if self._lease_for(h.holder, price) is None]
                if not short:
                    return self._held(holders, price)
                if self._pending(short) is not None:  # another call looked meanwhile: wait as it does
                    return None
                # the levels that have the price now hold it while the others' leases grow (else calls with
                # fewer levels would take it meanwhile, and calls with more would rarely find every level free)
                kept = [self.leases[h.holder] for h in budgeted if h not in short]
                for lease in kept:
                    lease.held += price
                # the path's other leases running low are topped up in the same transaction: a path's leases then
                # run out together, one transaction for all of them rather than one for each
                low = [h for h in budgeted if h not in short and self.leases[h.holder].available < LOW_WATER * price]
                try:
                    await self._grow(short, price, deadline, low)
                except store.BudgetPending as exc:  # looked at again in PENDING_POLL s, by one call for all
                    assert exc.key is not None
                    self.polls[exc.key.holder] = (time.monotonic() + PENDING_POLL, exc)
                finally:
                    for lease in kept:
                        lease.held -= price
                if all(self._lease_for(h.holder, price) is not None for h in budgeted):
                    return self._held(holders, price)
        return None

    def _pending(self, short: Sequence[store.Holder]) -> tuple[float, store.BudgetPending] | None:
        """The latest wait a call of this replica found on one of ``short``'s budgets: until when, and why."""
        moment = time.monotonic()
        found = [self.polls[h.holder] for h in short if h.holder in self.polls and self.polls[h.holder][0] > moment]
        return max(found, key=lambda entry: entry[0]) if found else None

    def _held(self, holders: Sequence[store.Holder], price: float) -> Any:
        parts: list[Any] = []
        moment = time.monotonic()
        for holder in holders:
            if holder.max_budget is None:
                parts.append(store.Spend(holder.table, holder.holder))
                continue
            lease = self.leases[holder.holder]
            lease.held += price
            lease.used = moment
            parts.append(store.LeaseShare(lease.id, holder.table, holder.holder, price))
        return parts[0] if len(parts) == 1 else tuple(parts)

    def _lease_for(self, holder: str, price: float) -> Lease | None:
        lease = self.leases.get(holder)
        if lease is not None and lease.usable(time.monotonic()) and lease.available >= price - 1e-9:
            return lease
        return None

    async def _grow(
        self, short: Sequence[store.Holder], price: float, deadline: float, low: Sequence[store.Holder] = ()
    ) -> None:
        """Grow (or make) this replica's lease on each of ``short``'s budgets by at least the rest of ``price``,
        and top up ``low``'s by what their budgets spare (nothing needed: they never refuse), in one
        transaction."""
        wanted = []
        for holder in [*short, *low]:
            current = self.leases.get(holder.holder)
            reuse = current is not None and current.usable(time.monotonic())
            held_id = current.id if reuse and current is not None else None
            # what the lease has left counts towards the call: only the rest is reserved
            needed = price - max(0.0, current.available) if reuse and current is not None else price
            wanted.append((holder, held_id, max(needed, 0.0) if holder in short else 0.0))
        for attempt in range(1, 4):
            try:
                grown = await self._database(
                    self.store.grow_leases(wanted, price, LEASE_CALLS, LEASE_SHARE, LEASE_TTL), deadline
                )
                break
            except Exception as exc:  # PostgreSQL aborting a transaction (a serialization failure) is tried again
                if attempt == 3 or not store.transient(exc):
                    raise
                await asyncio.sleep(0.01 * attempt)
        moment = time.monotonic()
        for (holder, held_id, needed), (lease_id, granted, kept) in zip(wanted, grown, strict=True):
            current = self.leases.get(holder.holder)
            tight = granted <= needed + 1e-12
            if held_id is not None and kept and current is not None and current.id == held_id:
                current.amount += granted
                current.renewed = moment
                current.tight = tight
                continue
            if current is not None:  # given up (its shares settle into it as they finish, or as spend if it is gone)
                current.retired = True
            lease = Lease(lease_id, holder.table, holder.holder, granted, renewed=moment, tight=tight)
            self.leases[holder.holder] = lease
            self.by_id[lease_id] = lease

    def finished(self, held: Any, cost: float) -> None:
        """A call ended (cost 0 if nothing was paid): its price is no longer held; its cost waits for its row."""
        for part in held if isinstance(held, tuple) else (held,):
            if isinstance(part, store.LeaseShare):
                lease = self.by_id.get(part.lease_id)
                if lease is not None:
                    lease.held -= part.amount
                    lease.spent += cost

    def settled(self, pairs: list[tuple[Any, float]]) -> None:
        """The store committed these calls' rows: their cost left the lease for the key's spend."""
        for held, cost in pairs:
            for part in held if isinstance(held, tuple) else (held,):
                if isinstance(part, store.LeaseShare):
                    lease = self.by_id.get(part.lease_id)
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
        self.polls = {holder: poll for holder, poll in self.polls.items() if poll[0] > moment}
        # renewals first: nothing this process does may hold them up past a lease's life
        due = [lease for lease in self.by_id.values() if not lease.retired and moment - lease.renewed >= LEASE_TTL / 3]
        if due:
            alive = await self.store.renew_leases([lease.id for lease in due], LEASE_TTL)
            for lease in due:
                if lease.id in alive:
                    lease.renewed = moment
                else:  # released by another replica (this one was away too long): its calls settle as spend
                    lease.retired = True
                    if self.leases.get(lease.holder) is lease:
                        del self.leases[lease.holder]
        if sweep_expired:
            released = await self.store.release_expired_leases()
            if released:
                logger.warning("released %d budget leases past their expiry (their replica stopped)", released)
        for lease in list(self.leases.values()):
            # (one whose lock a call holds is in use: the next round looks again, rather than wait here)
            idle = 0.0 if lease.tight else LEASE_IDLE  # (the end of a budget: another replica may be waiting)
            if not lease.busy and moment - lease.used >= idle and not self._lock(lease.holder).locked():
                await self._give_back(lease)

    async def _give_back(self, lease: Lease) -> None:
        async with self._lock(lease.holder):
            if lease.busy or self.leases.get(lease.holder) is not lease:
                return
            lease.retired = True
            del self.leases[lease.holder]
            self.by_id.pop(lease.id, None)
            await self.store.return_lease(lease.id, lease.holder, lease.table)

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
