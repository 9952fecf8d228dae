"""gesso_bedrock.wire, the lean HTTP/1.1 client: its response parser fed byte by byte, and its keep-alive
pools against a real loopback server that answers in ways the emulator never does (chunked bodies, a body
that runs until the close, an idle connection closed by the server, a server that hangs)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time

import pytest

from gesso_bedrock import wire

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Amzn-RequestId: r1\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: t\r\n\r\n"  # fmt: skip
SIZED = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\nContent-Length: 5\r\nA: 1\r\na: 2\r\n\r\nhello"


def feed_bytewise(data: bytes, **kwargs) -> wire.Reply | None:
    parser = wire.Parser(**kwargs)
    for index in range(len(data)):
        reply = parser.feed(data[index : index + 1])
        if reply is not None:
            assert index == len(data) - 1, "the reply was complete before its last byte"
            return reply
    return None


def test_chunked_answers_are_joined_and_trailers_skipped():
    reply = feed_bytewise(CHUNKED)
    assert (reply.status, reply.body, reply.keep_alive) == (200, b"Wikipedia", True)
    assert reply.headers["x-amzn-requestid"] == "r1"


def test_interim_answers_are_skipped_and_repeated_headers_joined():
    reply = feed_bytewise(SIZED)
    assert (reply.status, reply.body, reply.headers["a"]) == (429, b"hello", "1, 2")


def test_a_body_without_length_runs_until_the_close():
    parser = wire.Parser()
    assert parser.feed(b"HTTP/1.0 200 OK\r\n\r\nall of it") is None
    reply = parser.eof()
    assert (reply.body, reply.keep_alive) == (b"all of it", False)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.1 answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000, "too large"),
    ],
)
def test_malformed_answers_are_wire_errors(data, message):
    with pytest.raises(wire.WireError, match=message):
        wire.Parser().feed(data)


def test_an_answer_cut_short_is_a_wire_error():
    parser = wire.Parser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(wire.WireError, match="closed before the whole answer"):
        parser.eof()


class Listener:
    """A loopback listener that hands each connection to ``_one(connection, number)`` on its own thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn, self.connections), daemon=True).start()

    def _one(self, conn: socket.socket, number: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close the listening socket, waking the thread blocked in its ``accept`` (a close alone does not, on
        Linux)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Server(Listener):
    """A loopback server that reads each request and answers with what ``script`` says, per connection:
    ``script(connection_number, request_number)`` returns the bytes to send (or a list of pieces, sent 20 ms
    apart), ``"close"`` to close without answering, or ``"hang"`` to say nothing. With ``tls`` (a server context)
    it speaks TLS. ``closed`` counts the connections the client closed."""

    def __init__(self, script, *, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.requests = 0
        self.closed = 0
        super().__init__()

    def _one(self, conn: socket.socket, number: int) -> None:
        buf, served = b"", 0
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        self.closed += 1
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                fields = (line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                length = int(next(fields).split(b":")[1])
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                self.requests += 1
                served += 1
                action = self.script(number, served)
                if action == "close":
                    return
                if action == "hang":
                    threading.Event().wait(5)
                    return
                for index, piece in enumerate(action if isinstance(action, list) else [action]):
                    if index:
                        time.sleep(0.02)
                    conn.sendall(piece)
        except (ssl.SSLError, ConnectionError):
            self.closed += 1
        finally:
            conn.close()

    def origin(self) -> wire.Origin:
        return wire.Origin(f"http://127.0.0.1:{self.port}", verify=True, proxy=None)


def _post(origin: wire.Origin, timeout: float = 5.0) -> wire.Reply:
    head = origin.head("/model/x/invoke", {"Content-Type": "application/json"}, 2, f"127.0.0.1:{origin.port}")
    return origin.post(head, b"{}", connect_timeout=5, read_timeout=timeout, pool=4)


async def _apost(origin: wire.Origin, idle: list, timeout: float = 5.0) -> wire.Reply:
    head = origin.head("/model/x/invoke", {"Content-Type": "application/json"}, 2, f"127.0.0.1:{origin.port}")
    return await origin.apost(head, b"{}", idle, connect_timeout=5, read_timeout=timeout, pool=4)


def test_keep_alive_connections_are_reused():
    server = Server(lambda conn, n: SIZED)
    origin = server.origin()
    try:
        assert [_post(origin).body for _ in range(3)] == [b"hello"] * 3
        assert server.connections == 1

        async def three():
            idle: list = []
            return [(await _apost(origin, idle)).body for _ in range(3)]

        assert asyncio.run(three()) == [b"hello"] * 3
        assert server.connections == 2
    finally:
        origin.close()
        server.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_idle_connection_the_server_closed_is_replaced_once(mode):
    # the first connection answers once, then closes on its second request without a byte: like a server
    # whose keep-alive timeout ran out just as the request went
    server = Server(lambda conn, n: "close" if conn == 1 and n == 2 else CHUNKED)
    origin = server.origin()
    try:
        if mode == "sync":
            bodies = [_post(origin).body for _ in range(2)]
        else:

            async def two():
                idle: list = []
                return [(await _apost(origin, idle)).body for _ in range(2)]

            bodies = asyncio.run(two())
        assert bodies == [b"Wikipedia"] * 2
        assert (server.connections, server.requests) == (2, 3)
    finally:
        origin.close()
        server.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "action, error, match",
    [
        ("close", wire.WireError, "closed before the whole answer"),  # a fresh connection: never resent
        ("hang", TimeoutError, None),
    ],
)
def test_a_server_that_never_answers(mode, action, error, match):
    server = Server(lambda conn, n: action)
    origin = server.origin()
    try:
        with pytest.raises(error, match=match):
            _post(origin, 0.3) if mode == "sync" else asyncio.run(_apost(origin, [], 0.3))
        assert server.requests == 1
    finally:
        server.close()
