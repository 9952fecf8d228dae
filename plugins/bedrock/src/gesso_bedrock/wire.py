"""A lean HTTP/1.1 client for the one request shape the engine sends: a ``POST`` with a known body, whose
answer is read whole. Sync calls use pooled keep-alive sockets; async calls use pooled asyncio protocols
(no thread per call). One incremental response parser serves both. Direct connections, TLS (verification
as botocore resolved it), and proxies from the environment (absolute-form requests for ``http://``
endpoints, a ``CONNECT`` tunnel for ``https://`` ones) are supported.

Why not urllib3, aiohttp or httpx: measured on the benchmark's machine, each spends more client CPU per
call (urllib3 ~0.27 ms, aiohttp ~0.13 ms plus its session machinery, httpx ~4.5 ms under load) than the
whole of gesso's own work, and the issue asks for a call cheaper than raw boto3's. This client does only
what Bedrock's ``InvokeModel`` needs and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import select
import socket
import ssl
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

from gesso.aio import within

MAX_HEAD = 64 * 1024
_READ = 256 * 1024


class WireError(OSError):
    """The connection failed or the answer was not HTTP/1.1 (never a timeout: that is ``TimeoutError``)."""


class Reply:
    """A whole answer: its status, its headers (names lower-cased) and its body."""

    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        self.status, self.headers, self.body, self.keep_alive = status, headers, body, keep_alive


class Parser:
    """Reads one response as its bytes arrive; :meth:`feed` returns the :class:`Reply` once it is whole."""

    __slots__ = ("buf", "chunked", "length", "no_body", "parts", "received", "reply", "until_close")

    def __init__(self, *, no_body: bool = False) -> None:
        self.buf = bytearray()
        self.reply: Reply | None = None
        self.length = -1
        self.chunked = False
        self.until_close = False
        self.parts: list[bytes] = []
        self.received = False
        self.no_body = no_body  # the answer to CONNECT: a head, no body

    def feed(self, data: bytes) -> Reply | None:
        self.received = True
        self.buf += data
        if self.reply is None and not self._head():
            return None
        return self._body()

    def eof(self) -> Reply:
        """The peer closed: the reply, if its body was meant to run until the close."""
        if self.reply is not None and self.until_close:
            self.reply.body = bytes(self.buf)
            self.reply.keep_alive = False
            return self.reply
        raise WireError("the connection closed before the whole answer arrived")

    def _head(self) -> bool:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    raise WireError("the answer's headers are too large")
                return False
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[: end + 4]
            version, _, rest = lines[0].partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit():
                raise WireError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}")
            status = int(code)
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue): the real one follows
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if not colon:
                    raise WireError(f"a malformed header line: {line[:80]!r}")
                name, value = name.strip().lower(), value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            connection = headers.get("connection", "").lower()
            keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
            self.reply = Reply(status, headers, b"", keep_alive)
            if self.no_body or status in (204, 304):
                self.length = 0
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                self.chunked = True
            elif "content-length" in headers:
                try:
                    self.length = int(headers["content-length"])
                except ValueError:
                    raise WireError("a malformed Content-Length") from None
            else:
                self.until_close = True
            return True

    def _body(self) -> Reply | None:
        reply = self.reply
        assert reply is not None
        if self.length >= 0:
            if len(self.buf) < self.length:
                return None
            reply.body = bytes(self.buf[: self.length])
            return reply
        if self.chunked:
            return self._chunks()
        return None  # until the close

    def _chunks(self) -> Reply | None:
        buf = self.buf
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return None
            size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise WireError("a malformed chunk size") from None
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", end) if buf[end + 2 : end + 4] != b"\r\n" else end
                if trailer_end < 0:
                    return None
                assert self.reply is not None
                self.reply.body = b"".join(self.parts)
                return self.reply
            if len(buf) < end + 2 + size + 2:
                return None
            self.parts.append(bytes(buf[end + 2 : end + 2 + size]))
            del buf[: end + 2 + size + 2]


class Origin:
    """Where requests go and how: the endpoint's scheme, host and port, TLS, and the proxy (if any)."""

    def __init__(self, endpoint: str, *, verify: bool | str, proxy: str | None) -> None:
        parts = urlsplit(endpoint)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.endpoint = endpoint
        self.context: ssl.SSLContext | None = None
        if self.https:
            if verify is False:
                self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
            else:
                self.context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        self.proxy: tuple[str, int] | None = None
        self.proxy_auth: str | None = None
        if proxy:
            pp = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            self.proxy = (pp.hostname or "", pp.port or 80)
            if pp.username is not None:
                login = f"{unquote(pp.username)}:{unquote(pp.password or '')}"
                self.proxy_auth = "Basic " + base64.b64encode(login.encode()).decode()
        self.idle: list[Any] = []  # sync keep-alive sockets
        self.lock = threading.Lock()

    def head(self, path: str, headers: dict[str, str], length: int, host: str) -> bytes:
        """The request line and headers of a POST of ``length`` bytes to ``path``."""
        target = self.prefix + path
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
        if self.proxy and not self.https:  # absolute form, through the proxy
            lines[0] = f"POST {self.endpoint.rstrip('/')}{path} HTTP/1.1"
            if self.proxy_auth:
                lines.append(f"Proxy-Authorization: {self.proxy_auth}")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _connect_lines(self) -> bytes:
        lines = [f"CONNECT {self.host}:{self.port} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if self.proxy_auth:
            lines.append(f"Proxy-Authorization: {self.proxy_auth}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # -- sync ---------------------------------------------------------------------------------------------

    def post(self, head: bytes, body: bytes, *, connect_timeout: float, read_timeout: float, pool: int) -> Reply:
        """Send one request on an idle keep-alive socket (or a new one) and read the whole answer. A reused
        socket that turns out closed before any byte of the answer is replaced once."""
        while True:
            sock = self._idle_socket()
            reused = sock is not None
            if sock is None:
                sock = self._open(connect_timeout)
            sock.settimeout(read_timeout)
            parser = Parser()
            try:
                if len(body) < 65536:
                    sock.sendall(head + body)
                else:
                    sock.sendall(head)
                    sock.sendall(body)
                reply = None
                while reply is None:
                    data = sock.recv(_READ)
                    reply = parser.feed(data) if data else parser.eof()
            except BaseException as exc:
                sock.close()
                if reused and not parser.received and isinstance(exc, (WireError, ConnectionError)):
                    continue  # the server had closed this idle connection: one fresh try
                raise
            if reply.keep_alive and len(self.idle) < pool:
                self.idle.append(sock)
            else:
                sock.close()
            return reply

    def _idle_socket(self) -> Any:
        while True:
            try:
                sock = self.idle.pop()
            except IndexError:
                return None
            try:
                readable = select.select([sock], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [sock]
            if not readable:
                return sock
            sock.close()  # closed by the server (or unexpected bytes): not reusable

    def _open(self, timeout: float) -> Any:
        address = self.proxy or (self.host, self.port)
        sock = socket.create_connection(address, timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.proxy and self.https:
                sock.sendall(self._connect_lines())
                parser, reply = Parser(no_body=True), None
                while reply is None:
                    data = sock.recv(_READ)
                    reply = parser.feed(data) if data else parser.eof()
                if not 200 <= reply.status < 300:
                    raise WireError(f"the proxy refused the tunnel: {reply.status}")
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()

    # -- async --------------------------------------------------------------------------------------------

    async def apost(
        self, head: bytes, body: bytes, idle: list[Any], *, connect_timeout: float, read_timeout: float, pool: int
    ) -> Reply:
        """:meth:`post` on the running loop, on the keep-alive protocols in ``idle`` (one list per loop).
        Cancelling the awaiting task aborts the connection at once."""
        while True:
            protocol = None
            while idle:
                candidate = idle.pop()
                if not candidate.closed:
                    protocol = candidate
                    break
            reused = protocol is not None
            if protocol is None:
                protocol = await within(self._aopen(), connect_timeout)
            try:
                reply = await protocol.exchange(head + body, read_timeout)
            except (WireError, ConnectionError) as exc:
                protocol.abort()
                if reused and not protocol.parser.received:
                    continue
                raise exc
            except BaseException:
                protocol.abort()
                raise
            if reply.keep_alive and not protocol.closed and len(idle) < pool:
                idle.append(protocol)
            else:
                protocol.abort()
            return reply

    async def _aopen(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self.proxy is None:
            _, protocol = await loop.create_connection(
                _Protocol, self.host, self.port, ssl=self.context, server_hostname=self.host if self.https else None
            )
            return protocol
        _, protocol = await loop.create_connection(_Protocol, *self.proxy)
        if self.https:
            try:
                reply = await protocol.exchange(self._connect_lines(), None, no_body=True)
                if not 200 <= reply.status < 300:
                    raise WireError(f"the proxy refused the tunnel: {reply.status}")
                transport = await loop.start_tls(protocol.transport, protocol, self.context, server_hostname=self.host)
            except BaseException:
                protocol.abort()
                raise
            protocol.transport = transport
        return protocol


class _Protocol(asyncio.Protocol):
    """One keep-alive connection: one exchange at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.parser = Parser()
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self.timer: Any = None
        self.read_timeout: float | None = None
        self.last = 0.0
        self.loop: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def exchange(self, data: bytes, read_timeout: float | None, *, no_body: bool = False) -> Reply:
        loop = self.loop = asyncio.get_running_loop()
        self.parser = Parser(no_body=no_body)
        self.waiter = loop.create_future()
        self.transport.write(data)
        if read_timeout is not None:
            self.read_timeout = read_timeout
            self.last = loop.time()
            self.timer = loop.call_at(self.last + read_timeout, self._check_timeout)
        try:
            return await self.waiter
        finally:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.waiter = None

    def _check_timeout(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done() or self.read_timeout is None:
            return
        loop = self.loop
        due = self.last + self.read_timeout
        if loop.time() < due:  # bytes arrived since: wait out the rest
            self.timer = loop.call_at(due, self._check_timeout)
            return
        waiter.set_exception(TimeoutError(f"no answer within {self.read_timeout:g} s"))

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: the connection is not reusable
            return
        if self.timer is not None:
            self.last = self.loop.time()
        try:
            reply = self.parser.feed(data)
        except WireError as exc:
            waiter.set_exception(exc)
            return
        if reply is not None:
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            try:
                waiter.set_result(self.parser.eof())
            except WireError as error:
                if exc is not None:
                    error = WireError(f"{error}: {exc}")
                waiter.set_exception(error)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
