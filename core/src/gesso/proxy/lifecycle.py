"""How a proxy process stops and reloads, on signals (in the process that answers requests: ``gesso serve``'s
own with one worker, each worker's with several; ``gesso serve``'s parent passes the signals on).

- **Stop** (SIGTERM or SIGINT): uvicorn stops accepting connections and waits for the requests being answered;
  the proxy's readiness says it is stopping. Calls in flight finish (their spend rows written) for up to
  ``general_settings.graceful_timeout`` seconds; then, or at a second SIGTERM or SIGINT, the rest are cancelled:
  each answered 503 ``server_shutdown`` and recorded as cancelled (priced as sent when the provider had it).
  The process then exits 0.
- **Reload** (SIGHUP): the config file is read and checked again, as at start, off the event loop; a valid one is
  served to the requests that arrive from then on (:meth:`gesso.proxy.app.Proxy.reload`), while calls in flight
  finish on the deployments they were routed to; an invalid one is refused with the same errors as at start, and
  the config being served stays.

Signal handlers are Python's (``signal.signal``, as uvicorn's are): each one only marks what it asks and hands the
work to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gesso.proxy.config import ProxyConfig

logger = logging.getLogger("gesso.proxy")

#: what a reload reads: the config checked as at start, and each deployment's locked options (the emulators')
Reloader = Callable[[], "tuple[ProxyConfig, Mapping[str, Mapping[str, Any]]]"]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Proxy(Protocol):
    """What a lifecycle needs of the proxy it stops and reloads (:class:`gesso.proxy.app.Proxy`)."""

    config: ProxyConfig
    stopping: bool
    answering: set[asyncio.Task[Any]]

    def hurry(self, why: str) -> None: ...

    def reload(self, config: ProxyConfig, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None: ...


class ReloadRefused(Exception):
    """A new config that cannot replace the one being served (the errors say why)."""


class Lifecycle:
    """The stop and reload signals of one serving process, for ``proxy``."""

    def __init__(self, proxy: Proxy, reloader: Reloader | None = None) -> None:
        self.proxy = proxy
        self.reloader = reloader
        self.previous: dict[int, Any] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.reloading: asyncio.Task[bool] | None = None
        #: the stop signals received
        self.seen: set[int] = set()

    def install(self) -> None:
        """In the serving process's event loop, at start-up (after uvicorn set its own handlers, which the stop
        handler calls). Signals can only be handled in the main thread: elsewhere (an app run in a thread, as
        tests do) nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            return
        self.loop = asyncio.get_running_loop()
        for number in STOP_SIGNALS:
            self.previous[number] = signal.signal(number, self._on_stop)
        if self.reloader is not None:
            self.previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload)

    def uninstall(self) -> None:
        """Put back the handlers found (uvicorn's, which it then restores itself)."""
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous.clear()
        if self.timer is not None:
            self.timer.cancel()

    def _on_stop(self, number: int, frame: Any) -> None:
        """The first stop signal stops gracefully; the same signal again stops waiting. (Ctrl-C reaches a worker
        both from the terminal, SIGINT, and from its parent, SIGTERM: one stop, not two.)"""
        assert self.loop is not None
        again = number in self.seen
        self.seen.add(number)
        if not self.proxy.stopping:
            self.proxy.stopping = True
            previous = self.previous.get(number)
            if callable(previous):
                previous(number, frame)  # uvicorn's: stop accepting, wait for the requests being answered
            self.loop.call_soon_threadsafe(self._arm)
        elif again:  # asked again: stop waiting (uvicorn is not told: it would skip writing what is left)
            self.loop.call_soon_threadsafe(self.proxy.hurry, f"a second {signal.Signals(number).name}")

    def _arm(self) -> None:
        assert self.loop is not None
        timeout = self.proxy.config.graceful_timeout
        logger.info("stopping: waiting up to %gs for %d calls in flight", timeout, len(self.proxy.answering))
        self.timer = self.loop.call_later(timeout, self.proxy.hurry, "general_settings.graceful_timeout reached")

    def _on_reload(self, number: int, frame: Any) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._start_reload)

    def _start_reload(self) -> None:
        if self.reloading is not None and not self.reloading.done():
            logger.warning("reload: one is already under way; this SIGHUP is folded into it")
            return
        self.reloading = asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> bool:
        """Read and check the config again; serve it if it is valid. Whether it was."""
        assert self.reloader is not None
        found = await asyncio.to_thread(replacement, self.reloader, self.proxy.config)
        if found is None:
            return False
        config, overrides = found
        self.proxy.reload(config, overrides)
        logger.info("reloaded: serving %d model names, %d deployments", len(config.model_names),
                    len(config.deployments))  # fmt: skip
        return True


def replacement(reloader: Reloader, serving: ProxyConfig) -> tuple[ProxyConfig, Mapping[str, Mapping[str, Any]]] | None:
    """What ``reloader`` reads, when it may replace ``serving``; None when not, the refusal logged with the
    errors a start would give (the config being served stays)."""
    try:
        config, overrides = reloader()
        check_replaceable(serving, config)
    except Exception as exc:  # a config error, as at start (anything else too: the old config keeps serving)
        logger.error("reload refused, still serving the config loaded before: %s", exc)
        return None
    return config, overrides


def check_replaceable(serving: ProxyConfig, new: ProxyConfig) -> None:
    """What a reload cannot change (the process holds it from start): a :class:`ReloadRefused` naming it."""
    if new.database_url != serving.database_url:
        raise ReloadRefused("general_settings.database_url: changed; the database is kept until a restart")
    for name in ("max_concurrency", "graceful_timeout"):
        if getattr(new, name) != getattr(serving, name):
            raise ReloadRefused(f"general_settings.{name}: changed; the process keeps its own until a restart")
