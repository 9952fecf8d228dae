"""Sending ``InvokeModel`` without botocore's send path: botocore resolves the credentials, region and
endpoint (through the cached boto3 client) and signs (``SigV4Auth``); urllib3 sends over pooled keep-alive
connections. The answer is read and mapped here, as botocore's rest-json parser would: the error code from
``x-amzn-ErrorType`` (else the body's ``__type``/``code``), the message from the body's ``message``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import attrs

from gesso import errors
from gesso.types import Invocation, RawResponse
from gesso_bedrock.errors import map_error

NO_CREDENTIALS = (
    "No AWS credentials found. Pass aws_access_key_id and aws_secret_access_key, or aws_profile_name, "
    "or configure the default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role)"
)


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


class BedrockHTTPError(Exception):
    """What Bedrock answered with, kept as the cause of the gesso error it maps to."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def make_route(client: Any, session: Any, token: str | None, max_connections: int) -> Route:
    import urllib3

    config = client.meta.config
    verify = client._endpoint.http_session._verify  # botocore's own resolution: False, or a CA bundle path
    tls = {"cert_reqs": "CERT_NONE"} if verify is False else {"ca_certs": verify} if isinstance(verify, str) else {}
    if verify is False:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return Route(
        endpoint=client.meta.endpoint_url.rstrip("/"),
        region=client.meta.region_name,
        credentials=None if token else session.get_credentials(),
        token=token,
        verify=verify,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        user_agent=client._client_config.user_agent or "gesso",
        pool=urllib3.PoolManager(num_pools=4, maxsize=max_connections, block=False, retries=False, **tls),
    )


def signed(route: Route, invocation: Invocation) -> tuple[str, dict[str, str]]:
    """The URL and signed headers of one call (SigV4, or the bearer token)."""
    target = invocation.target
    url = f"{route.endpoint}/model/{quote(target.model_id, safe='')}/invoke"
    headers = {"Content-Type": invocation.content_type, "Accept": invocation.accept, "User-Agent": route.user_agent}
    for name, value in target.headers:
        headers[name] = value
    if route.token:
        headers["Authorization"] = f"Bearer {route.token}"
        return url, headers
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = route.credentials.get_frozen_credentials() if route.credentials is not None else None
    if credentials is None or not credentials.access_key:
        raise errors.AuthenticationError(NO_CREDENTIALS)
    request = AWSRequest(method="POST", url=url, data=invocation.body, headers=headers)
    SigV4Auth(credentials, "bedrock", route.region).add_auth(request)
    return url, dict(request.headers.items())


def send(route: Route, invocation: Invocation, *, model: str) -> RawResponse:
    """One attempt, synchronously, on the route's connection pool."""
    import urllib3
    from urllib3 import exceptions as ux

    try:
        url, headers = signed(route, invocation)
    except errors.AuthenticationError as exc:
        raise errors.AuthenticationError(exc.message, model=model) from exc
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
