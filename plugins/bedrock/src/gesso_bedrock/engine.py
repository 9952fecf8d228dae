"""Sending ``InvokeModel`` without botocore's send path: botocore resolves the credentials, region and
endpoint (through the cached boto3 client) and signs (``SigV4Auth``); urllib3 (sync) or aiohttp (async) sends
over pooled keep-alive connections. The answer is read and mapped here, as botocore's rest-json parser
would: the error code from ``x-amzn-ErrorType`` (else the body's ``__type``/``code``), the message from the
body's ``message``.

The async path holds no thread per call: an ``aiohttp`` session per (client, event loop), closed when the
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
from gesso_bedrock.errors import NO_CREDENTIALS, map_error


@attrs.frozen
class Route:
    """Where and how the calls of one client go: resolved once per client, reused by every call."""

    endpoint: str
    region: str
    credentials: Any = attrs.field(repr=False)  # botocore credentials (refreshed by botocore), or None
    token: str | None = attrs.field(repr=False)  # a Bedrock API key (bearer auth), or None
    verify: bool | str
    connect_timeout: float
    read_timeout: float
    user_agent: str
    pool: Any = attrs.field(repr=False, eq=False)
    proxy: str | None = None


class BedrockHTTPError(Exception):
    """What Bedrock answered with, kept as the cause of the gesso error it maps to."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def make_route(client: Any, session: Any, token: str | None, max_connections: int) -> Route:
    import botocore
    import urllib3
    from botocore.utils import get_environ_proxies

    from gesso import __version__

    config = client.meta.config
    # botocore's own resolution of ssl_verify, AWS_CA_BUNDLE and the profile's ca_bundle: False, or a CA bundle
    # path (a private attribute, so the TLS tests pin it)
    verify = client._endpoint.http_session._verify
    tls = {"cert_reqs": "CERT_NONE"} if verify is False else {"ca_certs": verify} if isinstance(verify, str) else {}
    if verify is False:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    endpoint = client.meta.endpoint_url.rstrip("/")
    # a proxy from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as botocore would use it
    proxy = get_environ_proxies(endpoint).get(urlsplit(endpoint).scheme)
    pool_options = {"num_pools": 4, "maxsize": max_connections, "block": False, "retries": False, **tls}
    pool = urllib3.ProxyManager(proxy, **pool_options) if proxy else urllib3.PoolManager(**pool_options)
    return Route(
        endpoint=endpoint,
        region=client.meta.region_name,
        credentials=None if token else session.get_credentials(),
        token=token,
        verify=verify,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        user_agent=f"gesso/{__version__} Botocore/{botocore.__version__}",
        pool=pool,
        proxy=proxy,
    )


def signed(route: Route, invocation: Invocation, *, model: str) -> tuple[str, dict[str, str]]:
    """The URL and signed headers of one call (SigV4, or the bearer token)."""
    target = invocation.target
    url = f"{route.endpoint}/model/{quote(target.model_id, safe='')}/invoke"
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
    parts = urlsplit(url)
    canonical = {"host": _host(parts)}
    for name, value in signed.items():
        lowered = name.lower()
        if lowered not in _UNSIGNED:
            canonical[lowered] = " ".join(value.split())
    names = sorted(canonical)
    signed_headers = ";".join(names)
    request = "\n".join((
        "POST", quote(_normalize_path(parts.path), safe="/~"), "",
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


def _normalize_path(path: str) -> str:
    from botocore.utils import normalize_url_path

    return normalize_url_path(path)


@functools.lru_cache(maxsize=64)
def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def send(route: Route, invocation: Invocation, *, model: str) -> RawResponse:
    """One attempt, synchronously, on the route's connection pool."""
    import urllib3
    from urllib3 import exceptions as ux

    url, headers = signed(route, invocation, model=model)
    timeout = urllib3.Timeout(connect=route.connect_timeout, read=route.read_timeout)
    try:
        response = route.pool.request("POST", url, body=invocation.body, headers=headers, timeout=timeout)
    except ux.NewConnectionError as exc:  # a subclass of ConnectTimeoutError, but nothing timed out
        raise errors.ProviderError(f"Could not reach Bedrock: {_said(exc)}", model=model) from exc
    except (ux.ConnectTimeoutError, ux.ReadTimeoutError, TimeoutError) as exc:
        raise errors.RequestTimeoutError(f"Bedrock did not answer in time: {_said(exc)}", model=model) from exc
    except (ux.HTTPError, OSError) as exc:
        raise errors.ProviderError(f"Could not reach Bedrock: {_said(exc)}", model=model) from exc
    return answer(response.status, response.headers, response.data, model=model)


def answer(status: int, headers: Any, body: bytes, *, model: str) -> RawResponse:
    """A success as a :class:`RawResponse`; anything else as the gesso error it means."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if 200 <= status < 300:
        return RawResponse(status=status, body=body, headers=lowered, request_id=lowered.get("x-amzn-requestid"))
    code, message = _error_of(lowered, body)
    raise map_error(code, message, status, model=model) from BedrockHTTPError(status, code, message)


async def asend(route: Route, invocation: Invocation, *, model: str, limit: int) -> RawResponse:
    """One attempt, natively async, on the route's aiohttp session for the running loop."""
    import aiohttp
    from yarl import URL

    url, headers = signed(route, invocation, model=model)
    state = _loop_state(limit)
    key = (route.verify, route.connect_timeout, route.read_timeout)  # what a session fixes; endpoints may vary
    session = state.sessions.get(key)
    if session is None:
        session = state.sessions[key] = _session(route, limit)
    try:
        # encoded=True: the path is sent exactly as signed (yarl would otherwise decode %3A in model ids)
        async with (
            state.semaphore,
            session.post(URL(url, encoded=True), data=invocation.body, headers=headers, proxy=route.proxy) as response,
        ):
            body = await response.read()
            return answer(response.status, response.headers, body, model=model)
    except (aiohttp.ServerTimeoutError, asyncio.TimeoutError) as exc:
        raise errors.RequestTimeoutError(f"Bedrock did not answer in time: {_said(exc)}", model=model) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise errors.ProviderError(f"Could not reach Bedrock: {_said(exc)}", model=model) from exc


class _LoopState:
    """What one event loop holds: its sessions and the semaphore bounding its calls in flight."""

    def __init__(self, limit: int) -> None:
        self.sessions: dict[tuple[Any, ...], Any] = {}
        self.semaphore = asyncio.Semaphore(limit)
        self.keeper = self._close_at_shutdown()
        self.started: Any = None

    async def _close_at_shutdown(self) -> Any:
        try:
            yield
        finally:  # the loop is shutting down its async generators: close what it opened
            for session in self.sessions.values():
                await session.close()


def _loop_state(limit: int) -> _LoopState:
    loop = asyncio.get_running_loop()
    state = getattr(loop, "_gesso_bedrock", None)
    if state is None:
        # kept on the loop itself, so it lives and dies with it
        state = loop._gesso_bedrock = _LoopState(limit)  # type: ignore[attr-defined]
        state.started = loop.create_task(state.keeper.asend(None))  # started, so the loop closes it at shutdown
    return state


def _session(route: Route, limit: int) -> Any:
    import ssl

    import aiohttp

    if route.verify is False:
        tls: Any = False
    else:
        tls = ssl.create_default_context(cafile=route.verify if isinstance(route.verify, str) else None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=route.connect_timeout, sock_read=route.read_timeout)
    connector = aiohttp.TCPConnector(limit=limit, ssl=tls, enable_cleanup_closed=False)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
    )


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
