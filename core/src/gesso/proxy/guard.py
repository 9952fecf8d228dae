"""The proxy's HTTP protocol: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds neither the size of a request's head nor the time it takes to arrive: a client could send
headers of any size (held in memory until they end), or open connections and send nothing, or half a request
line, and hold them for ever; and it answers HTTP/0.9 (a request line with no version) as if it were HTTP/1.1.
Here a head (request line and headers) over ``head_limit`` bytes is answered 431, and a head that has not
arrived ``head_timeout`` seconds after its first byte is answered 408; a connection that sends nothing for
``head_timeout`` seconds after it opens is closed (between requests uvicorn's own keep-alive timeout closes
it); HTTP/0.9 is answered 400. Each answer closes the connection. A body's deadline is the app's
(``Proxy.body_timeout``), which answers 408 in OpenAI's error shape.

``guarded(head_limit=..., head_timeout=...)`` makes the protocol with other limits (tests use short ones);
``gesso serve`` runs :class:`GuardedHttpToolsProtocol`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: the most bytes a request line and its headers may take
HEAD_LIMIT = 64 * 1024
#: seconds a request line and its headers may take to arrive (from the connection, or the request's first byte)
HEAD_TIMEOUT = 10.0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    head_limit = HEAD_LIMIT
    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._in_head = False
        self._begun = 0  # the requests this connection began
        self._head_bytes = 0  # the parsed request line and headers of the request coming in
        self._unparsed = 0  # the bytes received since it began, while its head is unfinished
        self._refusal: tuple[int, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun += 1
        self._in_head = True
        self._head_bytes = self._unparsed = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        if self._head_bytes > self.head_limit:
            self._refusal = (431, self._too_large(), "request_header_too_large")
        elif self.parser.get_http_version() not in ("1.0", "1.1"):  # HTTP/0.9: a request line with no version
            self._refusal = (400, "Only HTTP/1.0 and HTTP/1.1 are served", "unsupported_http_version")
        if self._refusal is not None:
            raise _Refused  # stops the parser; uvicorn then answers through send_400_response (below), and closes
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # a head still unfinished after this chunk holds all of it (bar, when requests are pipelined, the end of
        # the one before): so headers are held in memory up to the limit and one chunk, never more
        if self._in_head and not self.transport.is_closing():
            self._unparsed += len(data)
            if self._unparsed > self.head_limit:
                self._refuse(431, self._too_large(), "request_header_too_large")

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(*self._refusal)
        else:
            super().send_400_response(msg)

    def _too_large(self) -> str:
        return f"The request line and headers are larger than {self.head_limit} bytes"

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(408, f"The request line and headers did not arrive within {self.head_timeout:g} s",
                         "request_timeout")  # fmt: skip
        elif not self._begun:  # a connection that never sent a request
            self.transport.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer ``status`` in OpenAI's error shape and close (the app never sees the request)."""
        self._in_head = False
        self._stop_head_timer()
        reason = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
        body = json.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        ).encode()
        head = [f"HTTP/1.1 {status} {reason}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()
        self.logger.info("refused a request: %s %s", status, message)


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that is refused."""


def guarded(**limits: Any) -> type[GuardedHttpToolsProtocol]:
    """The protocol with other ``head_limit`` and ``head_timeout``."""
    unknown = set(limits) - {"head_limit", "head_timeout"}
    if unknown:
        raise TypeError(f"unknown limits: {', '.join(sorted(unknown))}")
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), limits)
