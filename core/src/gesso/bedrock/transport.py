"""The Bedrock transport: boto3 ``bedrock-runtime`` ``invoke_model``.

One client per (region, credentials, endpoint, timeout), cached and shared across threads (boto3
clients are thread-safe; sessions are only touched under a lock). The connection pool is sized for
concurrency, and the read timeout suits image generation, which can take minutes.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from gesso.api import MAX_CONCURRENCY
from gesso.bedrock.errors import map_botocore_error, map_client_error
from gesso.types import Invocation, RawResponse, Target

#: Image models often take tens of seconds; AWS recommends at least 300 s for Nova Canvas.
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0
_CLIENT_CACHE_SIZE = 64

_clients: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def _fingerprint(secret: str | None) -> str | None:
    # the cache key must tell credentials apart without keeping secrets in it
    return hashlib.sha256(secret.encode()).hexdigest() if secret else None


def _client_key(target: Target) -> tuple[Any, ...]:
    creds = target.credentials
    return (
        target.region,
        target.endpoint_url,
        target.timeout,
        creds.access_key_id,
        _fingerprint(creds.secret_access_key),
        _fingerprint(creds.session_token),
        creds.profile_name,
    )


def get_client(target: Target) -> Any:
    """The cached ``bedrock-runtime`` client for this target's region, credentials and endpoint."""
    key = _client_key(target)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(key)
        if client is None:
            if len(_clients) >= _CLIENT_CACHE_SIZE:
                _clients.pop(next(iter(_clients)))
            client = _clients[key] = _make_client(target)
    return client


def _make_client(target: Target) -> Any:
    import boto3
    from botocore.config import Config

    from gesso import __version__

    creds = target.credentials
    session = boto3.session.Session(
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token,
        profile_name=creds.profile_name,
    )
    config = Config(
        max_pool_connections=MAX_CONCURRENCY,
        read_timeout=target.timeout or DEFAULT_READ_TIMEOUT,
        connect_timeout=min(target.timeout or DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT),
        retries={"total_max_attempts": 1, "mode": "standard"},
        user_agent_extra=f"gesso/{__version__}",
    )
    return session.client("bedrock-runtime", region_name=target.region, endpoint_url=target.endpoint_url, config=config)


def clear_clients() -> None:
    """Drop every cached client (tests, credential rotation)."""
    with _lock:
        _clients.clear()


def invoke(invocation: Invocation, *, model: str) -> RawResponse:
    """Send one ``InvokeModel`` call; raise a :class:`gesso.errors.GessoError` on any failure."""
    from botocore.exceptions import BotoCoreError, ClientError

    target = invocation.target
    try:
        client = get_client(target)
        response = client.invoke_model(
            modelId=target.model_id,
            body=invocation.body,
            contentType=invocation.content_type,
            accept=invocation.accept,
        )
        body = response["body"].read()
    except ClientError as exc:
        raise map_client_error(exc, model=model) from exc
    except BotoCoreError as exc:
        raise map_botocore_error(exc, model=model) from exc
    meta = response.get("ResponseMetadata", {})
    return RawResponse(
        status=meta.get("HTTPStatusCode", 200),
        body=body,
        headers=dict(meta.get("HTTPHeaders", {})),
        request_id=meta.get("RequestId"),
    )
