"""The Bedrock transport: ``InvokeModel`` with gesso's own retries.

One boto3 ``bedrock-runtime`` client per (region, identity, endpoint, timeouts), cached and shared across
threads: botocore resolves the credentials (and refreshes them), the region and the endpoint. The calls
themselves skip botocore's send path: :mod:`gesso_bedrock.engine` signs each (SigV4) and sends it on a
pooled keep-alive connection of :mod:`gesso_bedrock.wire`, sized for concurrency. The read timeout suits image
generation, which can take minutes.

Retries: throttling, ``ModelNotReadyException``, 5xx answers and connection failures are retried with
exponential backoff and full jitter, up to ``max_retries`` times and within ``retry_budget`` seconds.
Validation, access, content-filter and timeout errors are never retried. botocore's own retries are
off, so attempts are counted in one place.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from typing import Any

from gesso import errors
from gesso.types import Invocation, RawResponse
from gesso_bedrock import engine
from gesso_bedrock.auth import bearer_token, make_session
from gesso_bedrock.engine import Route, make_route
from gesso_bedrock.errors import map_botocore_error, map_client_error
from gesso_bedrock.target import Target

#: Image models often take tens of seconds; AWS recommends at least 300 s for Nova Canvas.
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 4
#: Total seconds gesso may spend waiting between attempts of one call.
DEFAULT_RETRY_BUDGET = 60.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 20.0
_CLIENT_CACHE_SIZE = 64
#: Connections per client: as many as calls in flight (GESSO_MAX_CONCURRENCY, as gesso's thread pools).
MAX_CONCURRENCY = int(os.environ.get("GESSO_MAX_CONCURRENCY", "256"))

_clients: dict[tuple[Any, ...], Any] = {}
_routes: dict[tuple[Any, ...], tuple[Any, Route]] = {}
_lock = threading.Lock()
_random = random.Random()


def _fingerprint(secret: str | None) -> str | None:
    # the cache key must tell identities apart without keeping secrets in it
    return hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else None


def resolve_region(target: Target) -> str | None:
    """``aws_region_name``, else the region inside a ``model_id`` ARN, else ``AWS_REGION``, else
    ``AWS_DEFAULT_REGION``; ``None`` leaves it to the profile (checked when the client is made)."""
    if target.region:
        return target.region
    if target.model_id.startswith("arn:"):
        parts = target.model_id.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def _client_key(target: Target, region: str | None) -> tuple[Any, ...]:
    creds = target.credentials
    return (
        region,
        target.endpoint_url,
        target.timeout,
        target.connect_timeout,
        target.ssl_verify,
        creds.access_key_id,
        _fingerprint(creds.secret_access_key),
        _fingerprint(creds.session_token),
        creds.profile_name,
        creds.role_name,
        creds.session_name,
        _fingerprint(creds.external_id),
        _fingerprint(creds.web_identity_token),
        creds.sts_endpoint,
        _fingerprint(bearer_token(creds)),
    )


def get_client(target: Target, *, model: str) -> Any:
    """The cached ``bedrock-runtime`` client for this target's region, identity and endpoint."""
    return _cached(target, model=model)[0]


def get_route(target: Target, *, model: str) -> Route:
    """Where and how this target's calls go (endpoint, region, credentials, pool), cached with its client."""
    return _cached(target, model=model)[1]


def _cached(target: Target, *, model: str) -> tuple[Any, Route]:
    region = resolve_region(target)
    key = _client_key(target, region)
    found = _routes.get(key)
    if found is not None:
        return found
    with _lock:
        found = _routes.get(key)
        if found is None:
            if len(_clients) >= _CLIENT_CACHE_SIZE:
                oldest = next(iter(_clients))
                _clients.pop(oldest)
                _routes.pop(oldest, None)
            client, session = _make_client(target, region, model=model)
            found = (client, make_route(client, session, bearer_token(target.credentials), MAX_CONCURRENCY))
            _clients[key] = client
            _routes[key] = found
    return found


def _make_client(target: Target, region: str | None, *, model: str) -> tuple[Any, Any]:
    from botocore.config import Config

    from gesso import __version__

    session = make_session(target.credentials, region=region, ssl_verify=target.ssl_verify, model=model)
    region = region or session.region_name
    if not region:
        raise errors.InvalidRequestError(
            "no AWS region given: pass aws_region_name (--region on the command line), use a model_id ARN that "
            "names its region, set AWS_REGION or AWS_DEFAULT_REGION, or set a region in your AWS profile",
            model=model,
            param="aws_region_name",
        )
    read_timeout = target.timeout or DEFAULT_READ_TIMEOUT
    config = Config(
        max_pool_connections=MAX_CONCURRENCY,
        read_timeout=read_timeout,
        connect_timeout=target.connect_timeout or min(read_timeout, DEFAULT_CONNECT_TIMEOUT),
        retries={"total_max_attempts": 1, "mode": "standard"},
        user_agent_extra=f"gesso/{__version__}",
        # pinned either way: botocore would otherwise prefer AWS_BEARER_TOKEN_BEDROCK over explicit keys
        signature_version="bearer" if bearer_token(target.credentials) else "v4",
    )
    client = session.client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=target.endpoint_url,
        config=config,
        verify=target.ssl_verify,
    )
    return client, session


def clear_clients() -> None:
    """Drop every cached client (tests, credential rotation)."""
    with _lock:
        _clients.clear()
        _routes.clear()


def _retryable(error: errors.GessoError) -> bool:
    if isinstance(error, errors.RateLimitError):
        return error.code != "quota_exceeded"
    if isinstance(error, errors.ProviderError):
        return error.provider_status is None or error.provider_status >= 500
    return False


def deadline(target: Target) -> float:
    """The most seconds one call of ``target`` takes when nothing hangs: each attempt's connect and read timeouts
    and the longest waits between them (within the retry budget), and one attempt more for resolving credentials
    and waiting for a connection slot. gesso's core abandons an invoke hook still running after it."""
    read = target.timeout or DEFAULT_READ_TIMEOUT
    attempt = read + (target.connect_timeout or min(read, DEFAULT_CONNECT_TIMEOUT))
    retries = DEFAULT_MAX_RETRIES if target.max_retries is None else target.max_retries
    budget = DEFAULT_RETRY_BUDGET if target.retry_budget is None else target.retry_budget
    waits = sum(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(n, 32)) for n in range(retries))
    return (retries + 2) * attempt + min(waits, budget)


def backoff(attempt: int) -> float:
    """Full jitter: a uniform wait in [0, min(cap, base * 2**(attempt-1))] seconds."""
    return _random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt - 1, 32)))


class _Retries:
    """The retry policy of one call: which errors are retried, how long to wait, and when to give up."""

    def __init__(self, target: Target, model: str) -> None:
        self.max_retries = DEFAULT_MAX_RETRIES if target.max_retries is None else target.max_retries
        self.budget = DEFAULT_RETRY_BUDGET if target.retry_budget is None else target.retry_budget
        self.model = model
        self.waited = 0.0
        self.attempt = 0

    def wait_after(self, error: errors.GessoError) -> float:
        """The seconds to wait before the next attempt after ``error``; raises when there is none."""
        self.attempt += 1
        if not _retryable(error):
            raise error
        delay = backoff(self.attempt)
        if self.attempt > self.max_retries or self.waited + delay > self.budget:
            if self.attempt > 1:
                raise _exhausted(error, self.attempt, self.model) from error
            raise error
        self.waited += delay
        return delay


def invoke(invocation: Invocation, *, model: str) -> RawResponse:
    """Send one ``InvokeModel`` call, retrying what may succeed later; raise a GessoError otherwise."""
    retries = _Retries(invocation.target, model)
    while True:
        try:
            return engine.send(_route(invocation, model=model), invocation, model=model)
        except errors.GessoError as error:
            time.sleep(retries.wait_after(error))


async def ainvoke(invocation: Invocation, *, model: str) -> RawResponse:
    """:func:`invoke`, natively async: the same retries, waiting with ``asyncio.sleep`` (so cancelling the
    task stops the retries too)."""
    import asyncio

    retries = _Retries(invocation.target, model)
    while True:
        try:
            route = _route(invocation, model=model)  # cached; the first call of an identity may call STS
            return await engine.asend(route, invocation, model=model, limit=MAX_CONCURRENCY)
        except errors.GessoError as error:
            await asyncio.sleep(retries.wait_after(error))


def _exhausted(error: errors.GessoError, attempts: int, model: str) -> errors.GessoError:
    suffix = f" (gave up after {attempts} attempts)"
    if isinstance(error, errors.RateLimitError):
        return errors.RateLimitError(error.message + suffix, model=model, attempts=attempts, code=error.code)
    assert isinstance(error, errors.ProviderError)
    return errors.ProviderError(
        error.message + suffix, model=model, provider_status=error.provider_status, provider_code=error.provider_code
    )


def _route(invocation: Invocation, *, model: str) -> Route:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return get_route(invocation.target, model=model)
    except ClientError as exc:  # resolving an identity (e.g. AssumeRole) can answer with an AWS error
        raise map_client_error(exc, model=model) from exc
    except BotoCoreError as exc:
        raise map_botocore_error(exc, model=model) from exc
