"""What every route of the proxy shares: who is calling, its errors in OpenAI's ``{"error": {...}}`` shape, the
JSON answers, and a request's body, read within a size limit and a deadline.

The image routes (:mod:`gesso.proxy.app`) and the key API (:mod:`gesso.proxy.keys`) both build on this module;
neither imports the other's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gesso import errors, params, redact
from gesso.aio import within
from gesso.boundary import printable
from gesso.proxy import store

#: the most digits a ``Content-Length`` header may have to be read as a number (more is always too large)
CONTENT_LENGTH_DIGITS = 18


class ProxyError(errors.GessoError):
    """An error of the proxy's own (a bad body, a missing key), in the same OpenAI shape."""

    def __init__(
        self, status: int, message: str, *, type: str, param: str | None = None, code: str | None = None,
        headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message, param=param, code=code)
        self.status_code = status
        self.type = type
        self.headers = dict(headers or {})
        #: more fields of the error object (a budget's refusal names its ``level``)
        self.extra = dict(extra or {})

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["error"].update(self.extra)
        return body


def model_not_found(given: str, usable: Sequence[str]) -> ProxyError:
    """The 404 for a model name not served here, listing those the caller may use."""
    return ProxyError(404, f"Model '{printable(given)}' is not served here; configured models: "
                      f"{', '.join(usable) or 'none for this key'}", type="invalid_request_error", param="model",
                      code="model_not_found")  # fmt: skip


class ClientGone(Exception):
    """The client disconnected before its answer: its call was cancelled, and nothing is sent."""


@attrs.frozen
class Caller:
    """Who sent a request: the admin (master key, or anyone when there is none) or a virtual key."""

    admin: bool = False
    key: store.Key | None = None


def json_response(content: Any, status: int, headers: Mapping[str, str]) -> Response:
    """``content`` as compact JSON."""
    body = json.dumps(content, separators=(",", ":")).encode()
    return Response(body, status_code=status, headers=dict(headers), media_type="application/json")


def error_response(error: errors.GessoError, request_id: str) -> Response:
    """``error`` as OpenAI's error body, with the headers the ``openai`` client acts on (``retry-after``,
    ``x-should-retry``) and the request's id."""
    headers = {"x-request-id": request_id, **getattr(error, "headers", {})}
    if isinstance(error, errors.RateLimitError):
        if error.code == "quota_exceeded":
            headers["x-should-retry"] = "false"
        else:
            headers["retry-after"] = "1"
    body = error.to_dict()
    # never a secret in an answer: a value the proxy read from its environment or config is named, not shown
    body["error"]["message"] = redact.redact(body["error"]["message"])
    return json_response(body, error.status_code, headers)


async def read_body(request: Request, *, limit: int, timeout: float, limit_note: str) -> bytes:
    """The request's body: at most ``limit`` bytes (else a 413, "The request body is larger than <limit_note>",
    where ``limit_note`` is e.g. ``"the key API takes (1048576 bytes)"``), arrived within ``timeout`` seconds
    (else a 408, and the connection is closed: the rest of the body is never read). A ``Content-Length`` that is
    not a number is a 400; one over ``limit`` is a 413 before any of the body is read. A client that leaves
    before its body has arrived raises :class:`ClientGone`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise ProxyError(400, "Content-Length must be a number", type="invalid_request_error")
        if len(declared.lstrip("0")) > CONTENT_LENGTH_DIGITS or int(declared) > limit:
            raise _too_large(limit_note)

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit_note)
            chunks.append(chunk)
        return b"".join(chunks)

    try:  # a stalled or trickling client is not waited for
        return await within(read(), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        raise ProxyError(408, f"The request body did not arrive within {timeout:g} s", type="invalid_request_error",
                         code="request_timeout", headers={"connection": "close"}) from None  # fmt: skip
    except ClientDisconnect:  # gone before its body arrived: nothing to answer, and not the proxy's fault
        raise ClientGone from None


def json_object(body: bytes, **loads: Any) -> dict[str, Any]:
    """``body`` read as a JSON object (a 400, ``invalid_json``, when it is not one); ``loads`` are
    :func:`gesso.params.json_loads`'s options."""
    try:
        data = params.json_loads(body, **loads)
    except (ValueError, RecursionError) as exc:  # (RecursionError: nested too deep; UnicodeDecodeError is a ValueError)
        raise ProxyError(400, f"The body is not valid JSON: {exc}", type="invalid_request_error",
                         code="invalid_json") from None  # fmt: skip
    if not isinstance(data, dict):
        raise ProxyError(400, "The body must be a JSON object", type="invalid_request_error", code="invalid_json")
    return data


def _too_large(limit_note: str) -> ProxyError:
    return ProxyError(413, f"The request body is larger than {limit_note}",
                      type="invalid_request_error", code="request_too_large")  # fmt: skip
