"""The proxy's health routes, for load balancers, orchestrators and operators.

- ``GET /health/liveliness`` (and ``/health/liveness``): the process answers; it checks nothing else, and keeps
  answering 200 while the proxy stops (an orchestrator that saw it fail would kill a process finishing its calls).
- ``GET /health/readiness``: whether to send it requests: its database answers a query (within
  :data:`DB_TIMEOUT`), and it is not stopping; 503 otherwise.
- ``GET /health`` (litellm's route; a key): each deployment the caller may use, healthy or not, as the proxy sees
  it: without a call, a deployment is unhealthy while its router rests it after a failure. A real call is made
  only when the config allows it (``general_settings.health_check_paid: true``), the master key asks, and
  ``?model=`` names the one model name to check (or ``?model_id=`` one deployment): one small generation per
  deployment, paid and recorded as a spend row of the route ``health``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gesso import errors
from gesso.boundary import printable
from gesso.proxy.http import ProxyError, error_response, model_not_found
from gesso.proxy.store import redacted

if TYPE_CHECKING:
    from gesso.proxy.config import Deployment, ProxyConfig
    from gesso.proxy.http import Caller
    from gesso.proxy.router import Router
    from gesso.proxy.store import Store
    from gesso.types import ImageResponse


class Proxy(Protocol):
    """What the health routes need of the proxy (:class:`gesso.proxy.app.Proxy`)."""

    config: ProxyConfig
    router: Router
    store: Store | None
    stopping: bool

    async def authenticate(self, request: Request) -> Caller: ...

    def _usable(self, caller: Caller) -> list[str]: ...

    async def probe(
        self, deployment: Deployment, prompt: str
    ) -> tuple[ImageResponse | None, errors.GessoError | None, float]: ...


#: seconds the readiness check waits for the database
DB_TIMEOUT = 2.0
#: the prompt of a paid check's call
PROMPT = "a plain white square (health check)"

logger = logging.getLogger("gesso.proxy")


class _Seen:
    """What the last readiness check found of the database: its failure is logged when it changes, not at
    every probe."""

    failure: str | None = None


async def readiness(proxy: Proxy, request: Request) -> Response:
    """``{"status": "healthy", "models": N, "deployments": M}``, with ``"db": "connected"`` when the proxy has a
    database; 503 with ``"status": "unhealthy"`` (and why) when the database does not answer, or
    ``"shutting_down"`` while the proxy stops."""
    answer: dict[str, Any] = {"status": "healthy", "models": len(proxy.config.model_names),
                              "deployments": len(proxy.config.deployments)}  # fmt: skip
    status = 200
    if proxy.store is not None:
        try:
            await asyncio.wait_for(proxy.store.ping(), DB_TIMEOUT)
        except Exception as exc:  # any failure to answer: not ready; the answer (no key) names only its kind
            timeout = isinstance(exc, TimeoutError)
            answer.update(status="unhealthy", db="disconnected",
                          error=f"no answer within {DB_TIMEOUT:g}s" if timeout else type(exc).__name__)  # fmt: skip
            status = 503
            failure = answer["error"] if timeout else printable(f"{type(exc).__name__}: {exc}", 300)
            if failure != _Seen.failure:  # the whole reason (a host, a user name) only in the log
                logger.warning("readiness: the database at %s does not answer (%s); answering 503",
                               redacted(proxy.store.url), failure)  # fmt: skip
            _Seen.failure = failure
        else:
            answer["db"] = "connected"
            if _Seen.failure is not None:
                logger.warning("readiness: the database at %s answers again", redacted(proxy.store.url))
            _Seen.failure = None
    if proxy.stopping:
        answer["status"], status = "shutting_down", 503
    return JSONResponse(answer, status_code=status)


async def health(proxy: Proxy, request: Request) -> Response:
    """litellm's ``{"healthy_endpoints", "unhealthy_endpoints", "healthy_count", "unhealthy_count"}``."""
    try:
        caller = await proxy.authenticate(request)
        usable = proxy._usable(caller)
        asked, asked_id = request.query_params.get("model"), request.query_params.get("model_id")
        if asked is not None and asked not in usable:
            raise model_not_found(asked, usable)
        deployments = [d for name in ([asked] if asked is not None else usable) for d in proxy.router.groups[name]]
        if asked_id is not None:  # litellm's ?model_id=: one deployment, by the id its entry shows
            known = [d.id for d in deployments]
            deployments = [d for d in deployments if d.id == asked_id]
            if not deployments:
                raise ProxyError(404, f"No deployment {printable(asked_id)!r} here; deployments: "
                                 f"{', '.join(known) or 'none for this key'}", type="invalid_request_error",
                                 param="model_id", code="model_not_found")  # fmt: skip
    except errors.GessoError as error:
        return error_response(error, uuid.uuid4().hex)
    narrowed = asked is not None or asked_id is not None
    paid = narrowed and caller.admin and proxy.config.health_check_paid
    if paid:
        found = await asyncio.gather(*(_checked(proxy, d) for d in deployments))
    else:
        found = [_seen(proxy, d) for d in deployments]
    healthy = [entry for entry, ok in found if ok]
    unhealthy = [entry for entry, ok in found if not ok]
    answer = {"healthy_endpoints": healthy, "unhealthy_endpoints": unhealthy, "healthy_count": len(healthy),
              "unhealthy_count": len(unhealthy)}  # fmt: skip
    return JSONResponse(answer, status_code=503 if narrowed and not healthy else 200)


def _entry(deployment: Deployment) -> dict[str, Any]:
    """A deployment as ``/health`` shows it: never its options (credentials, endpoints)."""
    return {"model": deployment.model, "model_name": deployment.model_name, "model_id": deployment.id}


def _seen(proxy: Proxy, deployment: Deployment) -> tuple[dict[str, Any], bool]:
    """Its health as the router sees it, without a call."""
    entry = _entry(deployment)
    resting = proxy.router.resting_until.get(deployment.id, 0.0) - time.monotonic()
    if resting > 0:
        failure = proxy.router.failures.get(deployment.id, "an error")
        entry["error"] = f"resting for {resting:.1f}s more after {failure} (router_settings.cooldown_time)"
        return entry, False
    return entry, True


async def _checked(proxy: Proxy, deployment: Deployment) -> tuple[dict[str, Any], bool]:
    """Its health by a real call (:meth:`gesso.proxy.app.Proxy.probe`)."""
    entry = _entry(deployment)
    response, error, seconds = await proxy.probe(deployment, PROMPT)
    if error is not None:
        entry["error"] = f"{error.type}: {printable(error.message, 300)}"
    else:
        entry["cost"] = response.cost if response is not None else None
    entry["latency_ms"] = round(seconds * 1000, 3)
    return entry, error is None
