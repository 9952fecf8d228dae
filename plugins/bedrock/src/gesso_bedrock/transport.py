"""The Bedrock transport: ``InvokeModel`` (and ``Converse``, for the models Bedrock serves through it) with gesso's
own retries.

botocore resolves the credentials (and refreshes them), the region and the endpoint; the calls themselves skip
botocore's send path: :mod:`gesso_bedrock.engine` signs each (SigV4) and sends it on a pooled keep-alive
connection of :mod:`gesso_bedrock.wire`, sized for concurrency. The read timeout suits image generation, which
can take minutes.

Identities are cheap. One botocore ``bedrock-runtime`` client per endpoint configuration (region, endpoint,
timeouts, TLS, the profile that configures it, SigV4 or bearer) resolves where calls go, and every identity
calling there shares it, with its connections: a new identity is its credentials (about 1 KB with its route),
resolved by :mod:`gesso_bedrock.auth`, whose botocore sessions share their loaded data. Routes are cached per
identity, least recently used first out, within ``IDENTITY_CACHE_BYTES`` of their estimated size and
``IDENTITY_CACHE_SIZE`` of them. Concurrent first calls of one identity resolve it once, and an async call
resolves a new identity (and builds a new endpoint's client) on a worker thread, so the event loop never waits
for it (an STS call, a profile's credential process, botocore building a client).

Retries: throttling, ``ModelNotReadyException``, 5xx answers and connection failures are retried with
exponential backoff and full jitter, up to ``max_retries`` times and within ``retry_budget`` seconds.
Validation, access, content-filter and timeout errors are never retried. botocore's own retries are
off, so attempts are counted in one place.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextvars
import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from gesso import errors
from gesso.types import Invocation, RawResponse
from gesso_bedrock import auth, engine, wire
from gesso_bedrock.auth import bearer_token
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
#: botocore clients kept, one per endpoint configuration (about 0.13 MB each, measured with tracemalloc)
_CLIENT_CACHE_SIZE = 64
#: Identities kept: at most this many, and at most this many bytes of their estimated size.
IDENTITY_CACHE_SIZE = 100_000
IDENTITY_CACHE_BYTES = 64 * 2**20
#: An identity's estimated size, by kind, as measured (tracemalloc; bench/identities.py's RSS growth agrees):
#: static keys or a Bedrock API key (0.6 KB: its route, key and credentials); credentials botocore refreshes (an
#: assumed role, 3.3 KB with the STS answer it keeps; a profile's or the default chain's). Measuring each entry
#: as it is made would cost more than making it, and would count botocore's shared objects as its own.
STATIC_IDENTITY_BYTES = 1_000
REFRESHED_IDENTITY_BYTES = 4_000
#: Threads resolving new identities for async calls (they mostly wait on STS or a credential provider).
_BUILDERS = 16
#: Connections per client: as many as calls in flight (GESSO_MAX_CONCURRENCY, as gesso's thread pools).
MAX_CONCURRENCY = int(os.environ.get("GESSO_MAX_CONCURRENCY", "256"))

_Key = tuple[Any, ...]
_clients: dict[_Key, Any] = {}  # per endpoint configuration
_endpoints: dict[_Key, Route] = {}  # the route of each of those clients, with no identity
_routes: collections.OrderedDict[_Key, Route] = collections.OrderedDict()  # per identity, oldest first
_routes_bytes = 0
_pending: dict[_Key, concurrent.futures.Future[Route | None]] = {}  # identities being resolved
_builders: concurrent.futures.ThreadPoolExecutor | None = None
_lock = threading.Lock()
_endpoint_lock = threading.Lock()
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


def _where(target: Target, region: str | None) -> _Key:
    return region, target.endpoint_url, target.timeout, target.connect_timeout, target.ssl_verify


def _client_key(target: Target, region: str | None) -> _Key:
    creds = target.credentials
    return (
        *_where(target, region),
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


def _config_profile(target: Target) -> str | None:
    """The profile whose configuration (region, CA bundle, endpoint settings) the target's client reads: the
    one named, for keys, a profile or the default chain; the default's for a role or a Bedrock API key."""
    creds = target.credentials
    return None if creds.role_name or bearer_token(creds) else creds.profile_name


def _endpoint_key(target: Target, region: str | None) -> _Key:
    return (*_where(target, region), _config_profile(target), bearer_token(target.credentials) is not None)


def get_route(target: Target, *, model: str) -> Route:
    """Where and how this target's calls go (endpoint, region, credentials, pool), cached per identity."""
    region = resolve_region(target)
    key = _client_key(target, region)
    route = _hit(key)
    while route is None:  # None again: the caller resolving it was interrupted
        with _aws_errors(model):
            future, mine = _claim(key)
            if mine:
                _resolve(future, key, target, region, model)
            route = future.result()
    return route


async def aget_route(target: Target, *, model: str) -> Route:
    """:func:`get_route` for async calls: a new identity is resolved on a worker thread, so the event loop
    goes on with other calls meanwhile."""
    import asyncio

    region = resolve_region(target)
    key = _client_key(target, region)
    route = _hit(key)
    while route is None:
        with _aws_errors(model):
            future, mine = _claim(key)
            if mine:
                _builder().submit(contextvars.copy_context().run, _resolve, future, key, target, region, model)
            route = await asyncio.wrap_future(future)
    return route


def get_client(target: Target, *, model: str) -> Any:
    """A ``bedrock-runtime`` client that signs as this target's identity, made on each call: gesso's own calls
    use :func:`get_route`, whose clients are shared per endpoint configuration."""
    route = get_route(target, model=model)
    with _aws_errors(model):
        session = auth.new_session(_config_profile(target), credentials=route.credentials, token=route.token)
        return _make_client(session, target, resolve_region(target), model=model)


def _hit(key: _Key) -> Route | None:
    """The cached route of this identity, now the most recently used (``None`` if there is none)."""
    try:
        _routes.move_to_end(key)
    except KeyError:
        return None
    return _routes.get(key)  # None if evicted meanwhile


def _claim(key: _Key) -> tuple[concurrent.futures.Future[Route | None], bool]:
    """The future of this identity's route, and whether the caller must resolve it (no one else is)."""
    with _lock:
        future = _pending.get(key)
        if future is not None:
            return future, False
        future = concurrent.futures.Future()
        route = _routes.get(key)
        if route is not None:  # resolved since the caller looked
            future.set_result(route)
            return future, False
        future.set_running_or_notify_cancel()  # a waiter that is cancelled cannot cancel it for the others
        _pending[key] = future
        return future, True


def _resolve(
    future: concurrent.futures.Future[Route | None], key: _Key, target: Target, region: str | None, model: str
) -> None:
    """Resolve this identity into ``future``, and cache it. Its failure is every waiter's; an interruption (the
    resolving caller's ``KeyboardInterrupt``) is the resolving caller's alone: the others try again."""
    try:
        endpoint = _endpoint(target, region, model=model)
        credentials = auth.credentials(
            target.credentials, region=region, client_region=endpoint.region, ssl_verify=target.ssl_verify, model=model
        )
        route = attrs.evolve(endpoint, credentials=credentials, token=bearer_token(target.credentials))
    except Exception as exc:
        _settle(key)
        future.set_exception(exc)
        return
    except BaseException:
        _settle(key)
        future.set_result(None)
        raise
    _settle(key, route)
    future.set_result(route)


def _settle(key: _Key, route: Route | None = None) -> None:
    with _lock:
        del _pending[key]
        if route is not None:
            _keep(key, route)


def _keep(key: _Key, route: Route) -> None:
    """Cache ``route``, dropping the least recently used identities beyond the count and byte bounds."""
    global _routes_bytes
    _routes[key] = route
    _routes_bytes += _estimated_bytes(route)
    while len(_routes) > 1 and (len(_routes) > IDENTITY_CACHE_SIZE or _routes_bytes > IDENTITY_CACHE_BYTES):
        _routes_bytes -= _estimated_bytes(_routes.popitem(last=False)[1])


def _estimated_bytes(route: Route) -> int:
    from botocore.credentials import Credentials

    static = route.credentials is None or type(route.credentials) is Credentials
    return STATIC_IDENTITY_BYTES if static else REFRESHED_IDENTITY_BYTES


def _endpoint(target: Target, region: str | None, *, model: str) -> Route:
    """The route of the client for this target's endpoint configuration, with no identity; made once."""
    key = _endpoint_key(target, region)
    found = _endpoints.get(key)
    if found is None:
        with _endpoint_lock:
            found = _endpoints.get(key)
            if found is None:
                with auth.session(_config_profile(target)) as session:
                    client = _make_client(session, target, region, model=model)
                try:
                    found = make_route(client, MAX_CONCURRENCY)
                except wire.WireError as exc:  # the environment's proxy cannot be spoken to (socks5://...)
                    raise errors.ProviderError(
                        f"Cannot reach Bedrock through the proxy configured in the environment (HTTPS_PROXY or "
                        f"HTTP_PROXY): {exc}",
                        model=model,
                    ) from None
                with _lock:
                    if len(_clients) >= _CLIENT_CACHE_SIZE:
                        oldest = next(iter(_clients))
                        del _clients[oldest], _endpoints[oldest]
                    _clients[key] = client
                    _endpoints[key] = found
    return found


def _make_client(session: Any, target: Target, region: str | None, *, model: str) -> Any:
    from botocore.config import Config

    from gesso import __version__

    region = region or session.get_config_variable("region")
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
    return session.create_client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=target.endpoint_url,
        config=config,
        verify=target.ssl_verify,
    )


def _builder() -> concurrent.futures.ThreadPoolExecutor:
    global _builders
    with _lock:
        if _builders is None:
            _builders = concurrent.futures.ThreadPoolExecutor(_BUILDERS, thread_name_prefix="gesso-bedrock-identity")
        return _builders


@contextmanager
def _aws_errors(model: str) -> Iterator[None]:
    """botocore's errors (resolving an identity, e.g. AssumeRole, can answer with an AWS error) as gesso's."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        raise map_client_error(exc, model=model) from exc
    except BotoCoreError as exc:
        raise map_botocore_error(exc, model=model) from exc


def clear_clients() -> None:
    """Drop every cached client and identity, and the shared sessions (tests, credential rotation)."""
    global _routes_bytes
    with _lock:
        _clients.clear()
        _endpoints.clear()
        _routes.clear()
        _routes_bytes = 0
    auth.clear_sessions()


def _forget_threads() -> None:
    """In a forked child: the parent's builder threads, the resolutions they ran and the locks they held are not
    there."""
    global _builders, _lock, _endpoint_lock
    _builders, _lock, _endpoint_lock = None, threading.Lock(), threading.Lock()
    _pending.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


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
    waits = sum(min(BACKOFF_CAP, BACKOFF_BASE * (1 << min(n, 32))) for n in range(retries))
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


def invoke(invocation: Invocation, *, model: str, api: str = "invoke") -> RawResponse:
    """Send one ``InvokeModel`` call (``api="converse"``: one ``Converse`` call), retrying what may succeed later;
    raise a GessoError otherwise."""
    retries = _Retries(invocation.target, model)
    while True:
        try:
            return engine.send(get_route(invocation.target, model=model), invocation, model=model, api=api)
        except errors.GessoError as error:
            time.sleep(retries.wait_after(error))


async def ainvoke(invocation: Invocation, *, model: str, api: str = "invoke") -> RawResponse:
    """:func:`invoke`, natively async: the same retries, waiting with ``asyncio.sleep`` (so cancelling the
    task stops the retries too)."""
    import asyncio

    retries = _Retries(invocation.target, model)
    while True:
        try:
            route = await aget_route(invocation.target, model=model)  # a new identity's off the event loop
            return await engine.asend(route, invocation, model=model, limit=MAX_CONCURRENCY, api=api)
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
