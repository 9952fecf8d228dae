"""Sending ``InvokeModel`` (and ``Converse``, signed and answered alike) without botocore's send path: botocore
resolves the credentials, region and endpoint (the region and endpoint through the boto3 client cached per
endpoint); gesso signs (SigV4, held equal to botocore's signer by a differential test) and
:mod:`gesso_bedrock.wire` sends over pooled keep-alive connections. The answer is read and mapped here, as
botocore's rest-json parser would: the error code from ``x-amzn-ErrorType`` (else the body's ``__type``/``code``),
the message from the body's ``message``.

The async path holds no thread per call: idle connections per (origin, event loop), closed when the
loop shuts down its async generators (as ``asyncio.run`` does), and a semaphore per loop bounding the calls
in flight to ``GESSO_MAX_CONCURRENCY``. Cancelling the awaiting task aborts the request.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote, urlsplit

import attrs

from gesso import errors
from gesso.types import Invocation, RawResponse
from gesso_bedrock import wire
from gesso_bedrock.errors import NO_CREDENTIALS, map_error


@attrs.frozen
class Route:
    """Where and how the calls of one identity go: the endpoint's part resolved once per client (and shared by
    every identity calling there, connections and all), the credentials or token once per identity."""

    endpoint: str
    region: str
    credentials: Any = attrs.field(repr=False)  # botocore credentials (refreshed by botocore), or None
    token: str | None = attrs.field(repr=False)  # a Bedrock API key (bearer auth), or None
    verify: bool | str
    connect_timeout: float
    read_timeout: float
    user_agent: str
    origin: wire.Origin = attrs.field(repr=False, eq=False)
    host: str  # the Host header, as SigV4 signs it
    pool: int  # keep-alive connections kept per origin (and per event loop)


class BedrockHTTPError(Exception):
    """What Bedrock answered with, kept as the cause of the gesso error it maps to."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def make_route(client: Any, max_connections: int) -> Route:
    """Where ``client``'s calls go, with no identity yet (``attrs.evolve`` it with the credentials or token)."""
    import botocore
    from botocore.utils import get_environ_proxies

    from gesso import __version__

    config = client.meta.config
    # botocore's own resolution of ssl_verify, AWS_CA_BUNDLE and the profile's ca_bundle: False, or a CA bundle
    # path (a private attribute, so the TLS tests pin it)
    verify = client._endpoint.http_session._verify
    endpoint = client.meta.endpoint_url.rstrip("/")
    # a proxy from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as botocore would use it
    proxy = get_environ_proxies(endpoint).get(urlsplit(endpoint).scheme)
    return Route(
        endpoint=endpoint,
        region=client.meta.region_name,
        credentials=None,
        token=None,
        verify=verify,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        user_agent=f"gesso/{__version__} Botocore/{botocore.__version__}",
        origin=wire.Origin(endpoint, verify=verify, proxy=proxy),
        host=_host(urlsplit(endpoint)),
        pool=max_connections,
    )


#: the Bedrock Runtime operations a call is sent to, by the last part of their path: ``InvokeModel``
#: (``POST /model/{modelId}/invoke``) and ``Converse`` (``POST /model/{modelId}/converse``), as botocore's
#: bedrock-runtime service model gives their request URIs
APIS = ("invoke", "converse")


def signed(route: Route, invocation: Invocation, *, model: str, api: str = "invoke") -> tuple[str, dict[str, str]]:
    """The URL and signed headers of one call (SigV4, or the bearer token) to ``api`` (one of :data:`APIS`)."""
    target = invocation.target
    if api not in APIS:
        raise ValueError(f"unknown Bedrock Runtime operation {api!r} (one of {', '.join(APIS)})")
    url = f"{route.endpoint}/model/{quote(target.model_id, safe='')}/{api}"
    headers = {"Content-Type": invocation.content_type, "Accept": invocation.accept, "User-Agent": route.user_agent}
    for name, value in target.headers:
        headers[name] = value
    if route.token:
        headers["Authorization"] = f"Bearer {route.token}"
        return url, headers
    credentials = route.credentials.get_frozen_credentials() if route.credentials is not None else None
    if credentials is None or not credentials.access_key:
        raise errors.AuthenticationError(NO_CREDENTIALS, model=model)
    return url, sign_v4(url, headers, invocation.body, credentials, route.region)


def sign_v4(
    url: str, headers: dict[str, str], body: bytes, credentials: Any, region: str, *, now: Any = None
) -> dict[str, str]:
    """``headers`` with AWS Signature Version 4 added, for a POST of ``body`` to ``url`` (no query), as
    botocore's ``SigV4Auth`` signs it (a differential test holds them equal) but without its request object
    and email-header machinery, and with the signing key derived once a day."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    signed = dict(headers)
    signed["X-Amz-Date"] = stamp
    if credentials.token:
        signed["X-Amz-Security-Token"] = credentials.token
    host, path = _canonical_target(url)
    canonical = {"host": host}
    for name, value in signed.items():
        lowered = name.lower()
        if lowered not in _UNSIGNED:
            canonical[lowered] = " ".join(value.split())
    names = sorted(canonical)
    signed_headers = ";".join(names)
    request = "\n".join((
        "POST", path, "",
        "".join(f"{name}:{canonical[name]}\n" for name in names), signed_headers, hashlib.sha256(body).hexdigest(),
    ))  # fmt: skip
    scope = f"{stamp[:8]}/{region}/bedrock/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
    key = _signing_key(credentials.secret_key, stamp[:8], region)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, SignedHeaders={signed_headers}, "
        f"Signature={signature}"
    )
    return signed


#: headers SigV4 leaves unsigned (botocore's list)
_UNSIGNED = frozenset(
    {"baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id"}
)  # fmt: skip
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host(parts: Any) -> str:
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


@functools.lru_cache(maxsize=256)
def _canonical_target(url: str) -> tuple[str, str]:
    """The host and the canonical path SigV4 signs for ``url`` (a call's URL: one per model and endpoint)."""
    parts = urlsplit(url)
    return _host(parts), quote(_normalize_path(parts.path), safe="/~")


def _normalize_path(path: str) -> str:
    from botocore.utils import normalize_url_path

    return normalize_url_path(path)


@functools.lru_cache(maxsize=64)
def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def send(route: Route, invocation: Invocation, *, model: str, api: str = "invoke") -> RawResponse:
    """One attempt, synchronously, on the route's keep-alive connections."""
    url, headers = signed(route, invocation, model=model, api=api)
    body = invocation.body
    head = route.origin.head(url[len(route.endpoint) :], headers, len(body), route.host)
    try:
        reply = route.origin.post(
            head, body, connect_timeout=route.connect_timeout, read_timeout=route.read_timeout, pool=route.pool
        )
    except TimeoutError as exc:
        raise errors.RequestTimeoutError(f"Bedrock did not answer in time: {_said(exc)}", model=model) from exc
    except OSError as exc:
        raise errors.ProviderError(f"Could not reach Bedrock: {_said(exc)}", model=model) from exc
    return answer(reply.status, reply.headers, reply.body, model=model)


def answer(status: int, headers: Any, body: bytes, *, model: str) -> RawResponse:
    """A success as a :class:`RawResponse`; anything else as the gesso error it means."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if 200 <= status < 300:
        return RawResponse(status=status, body=body, headers=lowered, request_id=lowered.get("x-amzn-requestid"))
    code, message = _error_of(lowered, body)
    raise map_error(code, message, status, model=model) from BedrockHTTPError(status, code, message)


async def asend(route: Route, invocation: Invocation, *, model: str, limit: int, api: str = "invoke") -> RawResponse:
    """One attempt, natively async, on the running loop's keep-alive connections to the route's origin."""
    url, headers = signed(route, invocation, model=model, api=api)
    body = invocation.body
    head = route.origin.head(url[len(route.endpoint) :], headers, len(body), route.host)
    state = _loop_state(limit)
    idle = state.idle.get(route.origin)
    if idle is None:
        idle = state.idle[route.origin] = []
    try:
        async with state.semaphore:
            reply = await route.origin.apost(
                head, body, idle, connect_timeout=route.connect_timeout, read_timeout=route.read_timeout,
                pool=route.pool,
            )  # fmt: skip
    except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError from Python 3.11
        raise errors.RequestTimeoutError(f"Bedrock did not answer in time: {_said(exc)}", model=model) from exc
    except asyncio.TimeoutError as exc:
        raise errors.RequestTimeoutError(f"Bedrock did not answer in time: {_said(exc)}", model=model) from exc
    except OSError as exc:
        raise errors.ProviderError(f"Could not reach Bedrock: {_said(exc)}", model=model) from exc
    return answer(reply.status, reply.headers, reply.body, model=model)


class _LoopState:
    """What one event loop holds: its idle keep-alive connections per origin, and the semaphore bounding its
    calls in flight."""

    def __init__(self, limit: int) -> None:
        self.idle: dict[wire.Origin, list[Any]] = {}
        self.semaphore = asyncio.Semaphore(limit)
        self.keeper = self._close_at_shutdown()
        self.started: Any = None

    async def _close_at_shutdown(self) -> Any:
        try:
            yield
        finally:  # the loop is shutting down its async generators: close what it opened
            for idle in self.idle.values():
                for protocol in idle:
                    protocol.abort()
            self.idle.clear()


def _loop_state(limit: int) -> _LoopState:
    loop = asyncio.get_running_loop()
    state = getattr(loop, "_gesso_bedrock", None)
    if state is None:
        # kept on the loop itself, so it lives and dies with it
        state = loop._gesso_bedrock = _LoopState(limit)  # type: ignore[attr-defined]
        state.started = loop.create_task(state.keeper.asend(None))  # started, so the loop closes it at shutdown
    return state


def _error_of(headers: dict[str, str], body: bytes) -> tuple[str, str]:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    code = headers.get("x-amzn-errortype", "").split(":", 1)[0]
    if not code:
        code = str(data.get("__type") or data.get("code") or data.get("Code") or "").rsplit("#", 1)[-1]
    message = str(data.get("message") or data.get("Message") or "").strip()
    return code, message


def _said(exc: BaseException) -> str:
    from gesso.redact import redact

    return redact(str(exc))
