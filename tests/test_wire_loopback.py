"""gesso_bedrock.wire against real servers on loopback, sync and async: chunked bodies with trailers, 100
Continue before the answer, a 50 MB body, TLS (certificates from trustme), a CONNECT proxy that wants
Proxy-Authorization (plain and over TLS) with TLS through its tunnel, malformed framing closing the connection
(a ProviderError to the caller), idle connections expiring, and pooled connections reused in a process holding
more than 1,024 file descriptors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import resource
import selectors
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trustme
from test_wire import CHUNKED, Listener, Server

import gesso
from gesso import errors
from gesso_bedrock import wire

MODES = ["sync", "async"]


def call(origin: wire.Origin, mode: str, *, times: int = 1, timeout: float = 10.0) -> list[wire.Reply]:
    """``times`` requests on ``origin``'s pool (one event loop for the async ones)."""
    head = origin.head("/model/x/invoke", {"Content-Type": "application/json"}, 2, origin.host)
    if mode == "sync":
        return [origin.post(head, b"{}", connect_timeout=5, read_timeout=timeout, pool=4) for _ in range(times)]

    async def run() -> list[wire.Reply]:
        idle: list = []
        try:
            return [
                await origin.apost(head, b"{}", idle, connect_timeout=5, read_timeout=timeout, pool=4)
                for _ in range(times)
            ]
        finally:
            for protocol in idle:
                protocol.abort()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_path(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def answer(body: bytes, *, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


@contextmanager
def serving(script, *, ca: trustme.CA | None = None, verify: bool | str = True, proxy: str | None = None
            ) -> Iterator[tuple[Server, wire.Origin]]:  # fmt: skip
    """A :class:`Server` running ``script`` (over TLS with a certificate from ``ca``) and an origin for it."""
    server = Server(script, tls=server_context(ca) if ca is not None else None)
    scheme = "https" if ca is not None else "http"
    origin = wire.Origin(f"{scheme}://127.0.0.1:{server.port}", verify=verify, proxy=proxy)
    try:
        yield server, origin
    finally:
        origin.close()
        server.close()


# -- framing over real connections --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_chunked_body_with_trailers_arriving_in_pieces(mode):
    pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Amzn-RequestId: r1\r\n\r\n4\r\nWi",
              b"ki\r\n5;ext=1\r\npedia\r\n", b"0\r\nX-Trailer: t\r\nX-Other: u\r\n", b"\r\n"]  # fmt: skip
    with serving(lambda conn, n: pieces) as (server, origin):
        replies = call(origin, mode, times=2)
        assert [(r.status, r.body, r.keep_alive) for r in replies] == [(200, b"Wikipedia", True)] * 2
        assert replies[0].headers["x-amzn-requestid"] == "r1" and "x-trailer" not in replies[0].headers
        assert server.connections == 1


@pytest.mark.parametrize("mode", MODES)
def test_100_continue_then_the_answer(mode):
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    with serving(lambda conn, n: [interim, answer(b"done", status=b"201 Created")]) as (server, origin):
        replies = call(origin, mode, times=2)
        assert [(r.status, r.body) for r in replies] == [(201, b"done")] * 2
        assert server.connections == 1


BIG = hashlib.shake_256(b"gesso").digest(50 * 2**20)


@pytest.mark.parametrize("mode", MODES)
def test_a_50_mb_body(mode):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG)
    with serving(lambda conn, n: [head, BIG]) as (_, origin):
        (reply,) = call(origin, mode)
        assert len(reply.body) == len(BIG) and reply.body == BIG


@pytest.mark.parametrize("mode", MODES)
def test_tls_verified_with_the_ca_bundle_and_reused(mode, ca, ca_path):
    with serving(lambda conn, n: CHUNKED, ca=ca, verify=ca_path) as (server, origin):
        assert [r.body for r in call(origin, mode, times=3)] == [b"Wikipedia"] * 3
        assert server.connections == 1


@pytest.mark.parametrize("mode", MODES)
def test_tls_with_an_unknown_ca_is_refused(mode, ca):
    # verified with the system's CAs, which do not know trustme's
    with serving(lambda conn, n: CHUNKED, ca=ca) as (_, origin), pytest.raises(ssl.SSLCertVerificationError):
        call(origin, mode)


# -- malformed framing: an error, and the connection closed -------------------------------------------------

MALFORMED = {
    "Content-Length 1_0": answer(b"0123456789").replace(b"Length: 10", b"Length: 1_0"),
    "Content-Length -1": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nx",
    "Content-Length +5": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    "Transfer-Encoding and Content-Length": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ),
    "no CRLF after a chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n",
    "chunk size 0x3": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_framing_is_an_error_and_the_connection_is_closed(mode, name):
    # the first answer is good (the connection is pooled), the second malformed, the third good again
    requests = iter([CHUNKED, MALFORMED[name], CHUNKED])
    with serving(lambda conn, n: next(requests)) as (server, origin):
        head = origin.head("/model/x/invoke", {}, 2, origin.host)
        if mode == "sync":
            assert origin.post(head, b"{}", connect_timeout=5, read_timeout=5, pool=4).body == b"Wikipedia"
            with pytest.raises(wire.WireError, match="malformed|Transfer-Encoding"):
                origin.post(head, b"{}", connect_timeout=5, read_timeout=5, pool=4)
            assert origin.post(head, b"{}", connect_timeout=5, read_timeout=5, pool=4).body == b"Wikipedia"
        else:

            async def three() -> None:
                idle: list = []
                kwargs = {"connect_timeout": 5, "read_timeout": 5, "pool": 4}
                assert (await origin.apost(head, b"{}", idle, **kwargs)).body == b"Wikipedia"
                with pytest.raises(wire.WireError, match="malformed|Transfer-Encoding"):
                    await origin.apost(head, b"{}", idle, **kwargs)
                assert (await origin.apost(head, b"{}", idle, **kwargs)).body == b"Wikipedia"
                for protocol in idle:
                    protocol.abort()

            asyncio.run(three())
        assert server.connections == 2  # never reused after the malformed answer
        wait_for(lambda: server.closed >= 1)  # the client closed it


def wait_for(condition, seconds: float = 5.0) -> None:
    done = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        done.wait(0.01)
    assert condition()


@pytest.mark.parametrize("mode", MODES)
def test_malformed_framing_reaches_the_caller_as_a_provider_error(mode):
    with serving(lambda conn, n: MALFORMED["Transfer-Encoding and Content-Length"]) as (server, _):
        kwargs = {"aws_bedrock_runtime_endpoint": f"http://127.0.0.1:{server.port}", "aws_access_key_id": "AKIDWIRE",
                  "aws_secret_access_key": "wire-secret", "aws_region_name": "us-east-1", "max_retries": 0}  # fmt: skip
        with pytest.raises(errors.ProviderError, match="Could not reach Bedrock: a malformed header") as caught:
            if mode == "sync":
                gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "an otter", **kwargs)
            else:
                asyncio.run(gesso.aimage_generation("bedrock/amazon.nova-canvas-v1:0", "an otter", **kwargs))
        assert "Content-Length" in str(caught.value)


@pytest.mark.parametrize("mode", MODES)
def test_bytes_after_the_answer_keep_the_connection_out_of_the_pool(mode):
    with serving(lambda conn, n: answer(b"hi") + b"\r\n") as (server, origin):
        assert [r.body for r in call(origin, mode, times=2)] == [b"hi", b"hi"]
        assert server.connections == 2


@pytest.mark.parametrize("mode", MODES)
def test_idle_connections_expire(mode, monkeypatch):
    monkeypatch.setattr(wire, "IDLE_TIMEOUT", 0.2)
    kwargs = {"connect_timeout": 5, "read_timeout": 5, "pool": 4}
    with serving(lambda conn, n: CHUNKED) as (server, origin):
        head = origin.head("/model/x/invoke", {}, 2, origin.host)
        if mode == "sync":
            origin.post(head, b"{}", **kwargs)
            origin.post(head, b"{}", **kwargs)  # within the idle timeout: reused
            threading.Event().wait(0.3)
            origin.post(head, b"{}", **kwargs)
        else:

            async def three() -> None:
                idle: list = []
                await origin.apost(head, b"{}", idle, **kwargs)
                await origin.apost(head, b"{}", idle, **kwargs)
                await asyncio.sleep(0.3)
                await origin.apost(head, b"{}", idle, **kwargs)
                for protocol in idle:
                    protocol.abort()

            asyncio.run(three())
        assert (server.connections, server.requests) == (2, 3)
        wait_for(lambda: server.closed >= 1)  # the expired one was closed by the client


# -- proxies ------------------------------------------------------------------------------------------------


class Proxy(Listener):
    """A loopback proxy that wants ``Proxy-Authorization: Basic <login>``: ``CONNECT`` opens a tunnel (piped
    until either side closes); an absolute-form request is answered by the proxy itself, echoing its request
    line. With ``tls`` it speaks TLS to its clients (an https:// proxy). ``seen`` keeps each request's
    Proxy-Authorization (or None)."""

    def __init__(self, login: str, *, tls: ssl.SSLContext | None = None) -> None:
        self.expected = "Basic " + base64.b64encode(login.encode()).decode()
        self.tls = tls
        self.seen: list[str | None] = []
        self.tunnels = 0
        super().__init__()

    def _one(self, conn: socket.socket, number: int) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            auth = fields.get("proxy-authorization")
            self.seen.append(auth)
            if auth != self.expected:
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
                             b"Content-Length: 0\r\n\r\n")  # fmt: skip
                return
            method, target, _ = lines[0].split(" ")
            if method != "CONNECT":
                conn.sendall(answer(lines[0].encode()))
                return
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port))) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.tunnels += 1
                if rest:
                    upstream.sendall(rest)
                self._pipe(conn, upstream)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    @staticmethod
    def _pipe(client: socket.socket, upstream: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            while True:
                pending = isinstance(client, ssl.SSLSocket) and client.pending()
                ready = [(client, upstream)] if pending else [(k.fileobj, k.data) for k, _ in selector.select(10)]
                if not ready:
                    return
                for source, sink in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    sink.sendall(data)


LOGIN = "gesso user:p@ss:word"
PROXY_URL_LOGIN = "gesso%20user:p%40ss%3Aword"


def basic(login: str) -> str:
    return "Basic " + base64.b64encode(login.encode()).decode()


@contextmanager
def proxied(
    ca: trustme.CA, proxy_scheme: str, login: str, **serving_kwargs
) -> Iterator[tuple[Server, Proxy, wire.Origin]]:
    """A TLS server behind a :class:`Proxy` (over TLS when ``proxy_scheme`` is https) that the origin reaches
    with ``login`` (as a URL's userinfo)."""
    proxy = Proxy(LOGIN, tls=server_context(ca) if proxy_scheme == "https" else None)
    try:
        url = f"{proxy_scheme}://{login}@127.0.0.1:{proxy.port}"
        with serving(lambda conn, n: CHUNKED, ca=ca, proxy=url, **serving_kwargs) as (server, origin):
            yield server, proxy, origin
    finally:
        proxy.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("proxy_scheme", ["http", "https"])
def test_tls_through_a_connect_tunnel_of_a_proxy_that_wants_authorization(mode, proxy_scheme, ca, ca_path, caplog):
    caplog.set_level(logging.DEBUG)
    with proxied(ca, proxy_scheme, PROXY_URL_LOGIN, verify=ca_path) as (server, proxy, origin):
        assert [r.body for r in call(origin, mode, times=3)] == [b"Wikipedia"] * 3
        assert (proxy.tunnels, server.connections) == (1, 1)  # one tunnel, reused
        assert proxy.seen == [basic(LOGIN)]
    assert "p@ss" not in caplog.text and "p%40ss" not in caplog.text


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("proxy_scheme", ["http", "https"])
def test_a_proxy_refusing_the_credentials_is_an_error_that_names_no_secret(mode, proxy_scheme, ca, ca_path):
    with proxied(ca, proxy_scheme, "gesso:wrong-secret", verify=ca_path) as (server, proxy, origin):
        with pytest.raises(wire.WireError, match="the proxy refused the tunnel: 407") as caught:
            call(origin, mode)
        assert "wrong-secret" not in str(caught.value)
        assert proxy.seen == [basic("gesso:wrong-secret")] and server.connections == 0


@pytest.mark.parametrize("mode", MODES)
def test_an_http_endpoint_through_an_https_proxy_is_sent_in_absolute_form_over_tls(mode, ca, ca_path):
    proxy = Proxy(LOGIN, tls=server_context(ca))
    url = f"https://{PROXY_URL_LOGIN}@127.0.0.1:{proxy.port}"
    origin = wire.Origin("http://bedrock.test:8080", verify=ca_path, proxy=url)
    try:
        (reply,) = call(origin, mode)
        assert reply.body == b"POST http://bedrock.test:8080/model/x/invoke HTTP/1.1"
        assert proxy.seen == [basic(LOGIN)]
    finally:
        origin.close()
        proxy.close()


def test_proxy_ports_default_by_scheme_and_other_schemes_are_refused_at_creation():
    endpoint = "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert wire.Origin(endpoint, verify=True, proxy="http://proxy.test").proxy == ("proxy.test", 80)
    assert wire.Origin(endpoint, verify=True, proxy="https://proxy.test").proxy == ("proxy.test", 443)
    assert wire.Origin(endpoint, verify=True, proxy="proxy.test:3128").proxy == ("proxy.test", 3128)
    with pytest.raises(wire.WireError, match=r"unsupported proxy scheme socks5://"):
        wire.Origin(endpoint, verify=True, proxy="socks5://user:secret@proxy.test:1080")


# -- a busy process ------------------------------------------------------------------------------------------


def test_pooled_connections_are_reused_above_file_descriptor_1024():
    """``select.select`` refuses descriptors >= 1024; the pool's check does not, so the connection is reused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1_100 + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE's hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1_100)]
    try:
        with serving(lambda conn, n: CHUNKED) as (server, origin):
            assert len(held) == 1_100 and max(held) >= 1_024
            probe = socket.socket()
            assert probe.fileno() >= 1_024  # so the client's socket is numbered above 1024 too
            probe.close()
            assert [r.body for r in call(origin, "sync", times=5)] == [b"Wikipedia"] * 5
            assert (server.connections, server.requests) == (1, 5)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
