"""Deployments and routing: the deployments of one ``model_name`` share its calls, least in-flight first (those
whose model is past its end of life after the rest); a call that fails in a way another deployment may not
(throttling, a 5xx, a timeout, a retired model) moves on to the next, and the failing deployment rests for
``cooldown_time`` seconds.

When a ``model_name`` has several deployments, every attempt but the last is made without the SDK's own
retries (unless the deployment sets ``max_retries``), so a throttled deployment hands the call on at once
instead of backing off first; the last one retries as a single deployment would.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from gesso import errors
from gesso.proxy.config import Deployment

T = TypeVar("T")


def fails_over(error: errors.GessoError) -> bool:
    """Whether another deployment may succeed where this one failed."""
    if isinstance(error, (errors.RateLimitError, errors.RequestTimeoutError, errors.ModelRetiredError)):
        return True
    if isinstance(error, errors.ProviderError):
        return error.provider_status is None or error.provider_status >= 500
    return False


class Router:
    def __init__(self, deployments: Sequence[Deployment], cooldown: float, last: Iterable[str] = ()) -> None:
        #: the deployments tried after every other ready one: their model is past its end of life
        self.last = frozenset(last)
        self.groups: dict[str, list[Deployment]] = {}
        for deployment in deployments:
            self.groups.setdefault(deployment.model_name, []).append(deployment)
        self.cooldown = cooldown
        self.in_flight: dict[str, int] = {d.id: 0 for d in deployments}
        self.resting_until: dict[str, float] = {d.id: 0.0 for d in deployments}
        #: the error type that last sent each deployment to rest
        self.failures: dict[str, str] = {}

    def order(self, model_name: str) -> list[Deployment]:
        """The deployments to try, in order: those not resting, least in flight first (ties in config
        order) and those whose model is past its end of life after the others, then the resting ones (soonest
        back first) as a last resort."""
        now = time.monotonic()
        group = self.groups[model_name]
        ready = [d for d in group if self.resting_until[d.id] <= now]
        resting = sorted((d for d in group if self.resting_until[d.id] > now), key=lambda d: self.resting_until[d.id])
        return sorted(ready, key=lambda d: (d.id in self.last, self.in_flight[d.id])) + resting

    async def call(
        self, model_name: str, send: Callable[[Deployment, dict[str, Any]], Awaitable[T]]
    ) -> tuple[T, Deployment]:
        """``send(deployment, overrides)`` on each deployment in turn until one succeeds or fails for good."""
        order = self.order(model_name)
        last_error: errors.GessoError | None = None
        for position, deployment in enumerate(order):
            overrides: dict[str, Any] = {}
            if position < len(order) - 1 and "max_retries" not in deployment.params:
                overrides["max_retries"] = 0
            self.in_flight[deployment.id] += 1
            try:
                return await send(deployment, overrides), deployment
            except errors.GessoError as error:
                if not fails_over(error):
                    raise
                self.resting_until[deployment.id] = time.monotonic() + self.cooldown
                self.failures[deployment.id] = error.type
                last_error = error
            finally:
                self.in_flight[deployment.id] -= 1
        assert last_error is not None
        raise last_error
