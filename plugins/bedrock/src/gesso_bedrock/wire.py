"""A lean HTTP/1.1 client for the one request shape the engine sends: a ``POST`` with a known body, whose
answer is read whole. Sync calls use pooled keep-alive sockets; async calls use pooled asyncio protocols
(no thread per call). Answers are parsed by llhttp (Node.js's HTTP parser, through ``httptools``), for both.
Direct connections, TLS (verification as botocore resolved it), and proxies from the environment are supported:
``http://`` and ``https://`` proxies (the latter spoken to over TLS), absolute-form requests for ``http://``
endpoints, a ``CONNECT`` tunnel for ``https://`` ones, and credentials in the proxy URL sent as
``Proxy-Authorization: Basic``.

The framing is llhttp's, strict: a ``Content-Length`` that is not digits, repeated, or sent with
``Transfer-Encoding``; a ``Transfer-Encoding`` other than ``chunked``; a chunk size that is not hex digits or a
chunk not ended by CRLF; a folded header line or a bare LF; each is a :class:`WireError` (a ``ProviderError``
to the caller) and the connection is closed, never reused. A differential test holds the verdicts equal to
h11's (as a client receiving the answer), split at every byte, with those stricter refusals named.

Why this client and not urllib3, aiohttp or httpx: measured on the benchmark's machine, each spends more
client CPU per call (urllib3 ~0.27 ms, aiohttp ~0.13 ms plus its session machinery, httpx ~4.5 ms under load)
than the whole of gesso's own work, and a call must cost less than raw boto3's.
"""

from __future__ import annotations

import asyncio
import base64
import re
import selectors
import socket
import ssl
import sys
import threading
import time
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import httptools

from gesso.aio import within

MAX_HEAD = 64 * 1024
_READ = 256 * 1024
#: Seconds an idle pooled connection is kept: under the 60 s idle timeout AWS load balancers default to, so a
#: connection is dropped here before the server drops it (a reused connection the server closed before any byte
#: of the answer is still replaced once).
IDLE_TIMEOUT = 50.0
#: the answers whose head is the whole message: interim ones, 204 and 304
_BODILESS = frozenset((*range(100, 200), 204, 304))
#: control characters (all but HTAB): llhttp refuses them in header lines, and gesso in the reason phrase too
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_Selector: type[selectors.BaseSelector] = getattr(selectors, "PollSelector", selectors.DefaultSelector)


class WireError(OSError):
    """The connection failed or the answer was not HTTP/1.1 (never a timeout: that is ``TimeoutError``)."""


class Reply:
    """A whole answer: its status, its headers (names lower-cased) and its body."""

    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        self.status, self.headers, self.body, self.keep_alive = status, headers, body, keep_alive


class Parser:
    """Reads one response as its bytes arrive; :meth:`feed` returns the :class:`Reply` once it is whole.
    Interim answers (``100 Continue``) are skipped; trailers are read and dropped."""

    __slots__ = (
        "chunks", "done", "error", "extra", "fed", "headers", "interims", "length", "llhttp", "no_body", "parts",
        "received", "reply", "run", "start", "until_close",
    )  # fmt: skip

    def __init__(self, *, no_body: bool = False) -> None:
        # it holds this parser's callbacks: dropped once the answer is whole or refused, so that no reference
        # cycle keeps the answer's bytes alive until the garbage collector runs
        self.llhttp: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.reply: Reply | None = None  # the final answer, once its head is read
        self.parts: list[bytes] = []
        self.done = False  # the final answer is whole
        self.extra = False  # bytes followed it: the connection is not reusable
        self.error: WireError | None = None  # raised by a callback
        self.until_close = False
        self.received = False
        self.chunks: list[bytes] = []  # the bytes fed until the final answer's head was whole (by reference)
        self.interims = 0  # interim answers read
        self.fed = 0  # bytes fed in all
        self.run = 0  # how many of them, at the end, are CR or LF
        self.length = -1  # the final answer's body length; -1: chunked, or until the close
        self.start = b""
        self.no_body = no_body  # the answer to CONNECT: a head, and nothing after it

    def feed(self, data: bytes) -> Reply | None:
        if not self.received:
            self.received, self.start = True, data[:80]
            if data[:1] in (b"\r", b"\n"):  # llhttp would skip them
                raise WireError(f"not an HTTP/1.1 answer (a blank line first): {self.start!r}")
        head = self.reply is None
        if head:
            self.chunks.append(data)
        self.fed += len(data)
        end = len(data)
        while end and data[end - 1] in b"\r\n":
            end -= 1
        self.run = self.run + len(data) if end == 0 else len(data) - end
        llhttp = self.llhttp
        if llhttp is None:  # fed after the answer was whole, or refused
            raise self.error or WireError("bytes after the whole answer")
        try:
            llhttp.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = self.error or WireError("the server switched protocols (101), which gesso never asks")
        except httptools.HttpParserError as exc:
            if self.error is None and not self.done:
                self.error = self._malformed(str(exc))
        if head and self.interims and self._blank_after_interim():
            self.error = WireError("a blank line after an interim answer")
        reply = self.reply
        if self.done:
            assert reply is not None
            self.llhttp = None
            if self.extra or self._after() > 0:  # bytes after the answer: never reuse the connection
                self.extra, reply.keep_alive = True, False
            return reply
        if self.error is not None:
            self.llhttp = None
            raise self.error
        if reply is None:
            if self.fed > MAX_HEAD:
                raise WireError("the answer's headers are too large")
            return None
        return reply if self.no_body else None

    def eof(self) -> Reply:
        """The peer closed: the reply, if its body was meant to run until the close."""
        reply = self.reply
        if reply is not None and (self.done or self.until_close):
            if not self.done:
                reply.body, reply.keep_alive = b"".join(self.parts), False
            return reply
        raise WireError("the connection closed before the whole answer arrived")

    def _after(self) -> int:
        """How many bytes followed the whole answer. llhttp skips CR and LF between messages without a word (any
        other byte begins a message, and sets ``extra``), so they are counted here: after a chunked body, the CR
        and LF past its final blank line; otherwise, the bytes past the head and the ``Content-Length``."""
        if self.length < 0:
            return self.run - 4
        data, at = b"".join(self.chunks), 0
        for _ in range(self.interims + 1):
            at = data.find(b"\r\n\r\n", at) + 4
        return self.fed - at - self.length

    def _blank_after_interim(self) -> bool:
        """Whether an interim answer is followed by CR or LF, which llhttp skips (llhttp has checked that each
        head is CRLF-terminated lines, so each interim one ends at the next blank line)."""
        data, at = b"".join(self.chunks), 0
        for _ in range(self.interims):
            at = data.find(b"\r\n\r\n", at) + 4
            if data[at : at + 1] in (b"\r", b"\n"):
                return True
        return False

    def _malformed(self, reason: str) -> WireError:
        if self.reply is not None:
            return WireError(f"a malformed body ({reason})")
        if self.llhttp is None or self.llhttp.get_status_code() == 0:
            return WireError(f"not an HTTP/1.1 answer ({reason}): {self.start!r}")
        return WireError(f"a malformed header ({reason})")

    # -- llhttp's callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True

    def on_status(self, reason: bytes) -> None:
        if _CONTROL.search(reason) is not None:
            self.error = WireError(f"a control character in the reason phrase: {reason[:80]!r}")
            raise self.error

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.reply is not None:
            return  # a trailer (or the next message's header)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip(" \t")
        headers = self.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        llhttp = self.llhttp
        if self.reply is not None or llhttp is None:
            return
        status = llhttp.get_status_code()
        headers = self.headers
        if 100 <= status < 200:
            headers.clear()  # an interim answer: the real one follows
            return
        coding = headers.get("transfer-encoding")
        version = llhttp.get_http_version()
        if not version.startswith("1."):
            self.error = WireError(f"not an HTTP/1.1 answer: {self.start!r}")
        elif status < 100:
            self.error = WireError(f"a status code below 100: {status}")
        elif coding is not None and coding.lower() != "chunked":
            self.error = WireError(f"a Transfer-Encoding other than chunked: {coding[:80]!r}")
        if self.error is not None:
            raise self.error
        # read here, not when the message ends: a Connection field among the trailers changes nothing
        # HTTP/1.0's keep-alive is not honoured (as h11 does not): Bedrock speaks HTTP/1.1
        keep_alive = version != "1.0" and llhttp.should_keep_alive()
        self.reply = Reply(status, headers, b"", keep_alive)
        if status in _BODILESS:
            self.length = 0
        elif coding is None:
            length = headers.get("content-length")
            self.length = -1 if length is None else int(length)
            self.until_close = length is None

    def on_body(self, body: bytes) -> None:
        if self.done:
            return
        if self.no_body and self.reply is not None and 200 <= self.reply.status < 300:
            self.error = WireError("the proxy sent bytes after opening the tunnel, before TLS began")
            raise self.error
        self.parts.append(body)

    def on_message_complete(self) -> None:
        reply = self.reply
        if reply is None:
            self.interims += 1
            return
        if self.done:
            return  # one after the answer
        reply.body = b"".join(self.parts)
        self.done = True


class _Stream(Protocol):
    """What a pooled sync connection is: a socket, a TLS socket, or TLS inside a proxy's TLS."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, timeout: float | None, /) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class _TLSInTLS:
    """A TLS session inside an ``https://`` proxy's TLS connection: ``ssl`` cannot wrap an ``SSLSocket`` in
    another, so the inner session is an ``SSLObject`` fed through memory buffers over the outer socket."""

    def __init__(self, outer: ssl.SSLSocket, context: ssl.SSLContext, server_hostname: str) -> None:
        self.outer = outer
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self._run(self.tls.do_handshake)

    def _run(self, operation: Any, *args: Any) -> Any:
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self.outer.recv(_READ)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.outer.sendall(data)

    def sendall(self, data: bytes, /) -> None:
        view = memoryview(data)
        while view:
            view = view[self._run(self.tls.write, view) :]

    def recv(self, size: int, /) -> bytes:
        try:
            data: bytes = self._run(self.tls.read, size)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""
        return data

    def pending(self) -> int:
        return self.tls.pending() + self.outer.pending() + self.incoming.pending

    def settimeout(self, timeout: float | None, /) -> None:
        self.outer.settimeout(timeout)

    def fileno(self) -> int:
        return self.outer.fileno()

    def close(self) -> None:
        self.outer.close()


def _context(verify: bool | str) -> ssl.SSLContext:
    """A TLS client context verifying as botocore resolved it: ``False`` (no verification), a CA bundle's path,
    or the system's CAs."""
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


def _reusable(stream: _Stream) -> bool:
    """Whether an idle connection can carry another request: nothing to read on it (neither the server's close
    nor stray bytes). ``selectors`` (poll where there is poll) takes any file descriptor, however high."""
    if isinstance(stream, (ssl.SSLSocket, _TLSInTLS)) and stream.pending():
        return False
    try:
        with _Selector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            return not selector.select(0)
    except (OSError, ValueError):  # closed meanwhile
        return False


class Origin:
    """Where requests go and how: the endpoint's scheme, host and port, TLS, and the proxy (if any)."""

    def __init__(self, endpoint: str, *, verify: bool | str, proxy: str | None) -> None:
        parts = urlsplit(endpoint)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.endpoint = endpoint
        self.context: ssl.SSLContext | None = _context(verify) if self.https else None
        self.proxy: tuple[str, int] | None = None
        self.proxy_context: ssl.SSLContext | None = None  # an https:// proxy's TLS
        self.proxy_auth: str | None = None
        if proxy:
            self._proxy(proxy, verify)
        self.idle: list[tuple[_Stream, float]] = []  # sync keep-alive connections, with when each went idle
        self.lock = threading.Lock()

    def _proxy(self, url: str, verify: bool | str) -> None:
        """Where the proxy is, whether it speaks TLS (verified as the endpoint is), and its credentials."""
        pp = urlsplit(url if "://" in url else f"http://{url}")
        scheme = pp.scheme.lower()
        if scheme not in ("http", "https"):
            raise WireError(f"unsupported proxy scheme {scheme}:// (gesso speaks to http:// and https:// proxies)")
        if not pp.hostname:
            raise WireError("the proxy URL names no host")
        tls = scheme == "https"
        try:
            port = pp.port
        except ValueError:
            raise WireError("the proxy URL's port is not a number from 0 to 65535") from None
        self.proxy = (pp.hostname, port or (443 if tls else 80))
        self.proxy_context = _context(verify) if tls else None
        if pp.username is not None:  # kept only as the header's value, never logged
            login = f"{unquote(pp.username)}:{unquote(pp.password or '')}"
            self.proxy_auth = "Basic " + base64.b64encode(login.encode()).decode()

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
        authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"  # IPv6 in []
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if self.proxy_auth:
            lines.append(f"Proxy-Authorization: {self.proxy_auth}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @staticmethod
    def _tunnel(reply: Reply) -> None:
        if not 200 <= reply.status < 300:
            raise WireError(f"the proxy refused the tunnel: {reply.status}")

    # -- sync ---------------------------------------------------------------------------------------------

    def post(self, head: bytes, body: bytes, *, connect_timeout: float, read_timeout: float, pool: int) -> Reply:
        """Send one request on an idle keep-alive connection (or a new one) and read the whole answer. A reused
        connection that turns out closed before any byte of the answer is replaced once."""
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
                with self.lock:
                    self.idle.append((sock, time.monotonic()))
            else:
                sock.close()
            return reply

    def _idle_socket(self) -> _Stream | None:
        """The most recently used idle connection that is still good; expired and closed ones are closed."""
        while True:
            expired: list[_Stream] = []
            found: _Stream | None = None
            with self.lock:
                idle, oldest = self.idle, time.monotonic() - IDLE_TIMEOUT
                while idle and idle[0][1] < oldest:
                    expired.append(idle.pop(0)[0])
                if idle:
                    found = idle.pop()[0]
            for sock in expired:
                sock.close()
            if found is None or _reusable(found):
                return found
            found.close()  # closed by the server (or unexpected bytes): not reusable

    def _open(self, timeout: float) -> _Stream:
        sock = socket.create_connection(self.proxy or (self.host, self.port), timeout=timeout)
        stream: _Stream = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.proxy is not None and self.proxy_context is not None:
                stream = self.proxy_context.wrap_socket(sock, server_hostname=self.proxy[0])
            if self.proxy is not None and self.https:
                stream.sendall(self._connect_lines())
                parser, reply = Parser(no_body=True), None
                while reply is None:
                    data = stream.recv(_READ)
                    reply = parser.feed(data) if data else parser.eof()
                self._tunnel(reply)
            if self.context is not None:
                if isinstance(stream, ssl.SSLSocket):
                    stream = _TLSInTLS(stream, self.context, self.host)
                else:
                    stream = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            stream.close()
            sock.close()
            raise
        return stream

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for sock, _ in idle:
            sock.close()

    # -- async --------------------------------------------------------------------------------------------

    async def apost(
        self, head: bytes, body: bytes, idle: list[Any], *, connect_timeout: float, read_timeout: float, pool: int
    ) -> Reply:
        """:meth:`post` on the running loop, on the keep-alive protocols in ``idle`` (one list per loop).
        Cancelling the awaiting task aborts the connection at once."""
        while True:
            protocol = _idle_protocol(idle)
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
                protocol.idle_since = time.monotonic()
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
        host, port = self.proxy
        _, protocol = await loop.create_connection(
            _Protocol, host, port, ssl=self.proxy_context, server_hostname=host if self.proxy_context else None
        )
        if self.context is not None:  # https: a tunnel, then TLS with the endpoint through it
            try:
                self._tunnel(await protocol.exchange(self._connect_lines(), None, no_body=True))
                if self.proxy_context is not None and sys.version_info < (3, 11):  # pragma: no cover
                    raise WireError("TLS through an https:// proxy's TLS needs Python 3.11 or later for async calls")
                transport = await loop.start_tls(protocol.transport, protocol, self.context, server_hostname=self.host)
            except BaseException:
                protocol.abort()
                raise
            protocol.transport = transport
        return protocol


def _idle_protocol(idle: list[Any]) -> _Protocol | None:
    """The most recently used idle protocol still open; expired and closed ones are aborted."""
    oldest = time.monotonic() - IDLE_TIMEOUT
    while idle and idle[0].idle_since < oldest:
        idle.pop(0).abort()
    while idle:
        candidate: _Protocol = idle.pop()
        if not candidate.closed:
            return candidate
    return None


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
        self.idle_since = 0.0
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
