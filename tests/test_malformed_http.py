"""Malformed HTTP over raw sockets, to the proxy (uvicorn with ``gesso serve``'s protocol,
:mod:`gesso.proxy.guard`) and to the Bedrock emulator (its asyncio server).

Cases: bad JSON; a Content-Length longer than the body (the client then stalls) and shorter than it (the rest
must not pass for a next request that succeeds); truncated multipart (complete as HTTP, and cut off mid-body);
huge headers (a 100 KB and a 1 MB header line, 2,000 headers, a 100 KB URL, 10 MB of headers); a slow client
(a byte per 100 ms, in its headers and in its body) while normal requests go on; HTTP/0.9; non-HTTP binary
(random bytes, a TLS ClientHello, zeros, bare line ends); a connection that sends nothing. Each is answered
with a 4xx or the connection is closed (within the server's deadline when the client stalls), and after each
the server answers a normal request (a real image call) with a 200.

The deadlines are shortened here (``STALL`` seconds: the proxy's head and body timeouts, the emulator's
``READ_TIMEOUT``); the variants of a case run concurrently so the module stays within seconds.
``GESSO_FUZZ_EXAMPLES`` sets how many random variants the bad-JSON and binary cases add to their fixed ones
(default 6; e.g. 500 for a longer run). ``COUNTS`` holds how many of each case ran on each server and
``OUTCOMES`` what happened (both printed at the end, for RELIABILITY.md).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import http.client
import json
import os
import random
import select
import socket
import time
import uuid

import pytest
import uvicorn
from test_proxy import deployment

from gesso.proxy import config as proxy_config
from gesso.proxy import guard
from gesso.proxy.app import build_app
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator
from gesso_bedrock.emulator import server as emulator_server
from helpers import picture, uvicorn_running

#: seconds a stalled request is given (the proxy's head and body deadlines, the emulator's read deadline)
STALL = 1.0
#: a stalled client is let go within this many seconds
LET_GO = STALL + 3.0
#: a normal request beside a slow client answers within this many seconds
FAST = 1.0
NOVA_ID = "amazon.nova-canvas-v1:0"
PNG = picture(64, 64)
#: random variants of the bad-JSON and binary cases, each (the fixed ones run too)
RANDOM = int(os.environ.get("GESSO_FUZZ_EXAMPLES", "6"))

#: (server, case) -> runs, for RELIABILITY.md
COUNTS: collections.Counter = collections.Counter()
#: (server, case) -> what happened ("400", "408 then closed", "closed", ...) -> runs, for RELIABILITY.md
OUTCOMES: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)


# -- the servers --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(emulator_server, "READ_TIMEOUT", STALL)
        with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as emulator:
            yield emulator
    print("\nmalformed HTTP cases (server, case: runs; what happened):")
    for (server, case), runs in sorted(COUNTS.items()):
        print(f"  {server}, {case}: {runs}; {dict(OUTCOMES[(server, case)]) or 'answered 200'}")


@contextlib.contextmanager
def guarded_proxy(config: proxy_config.ProxyConfig):
    """The app on uvicorn with the protocol ``gesso serve`` runs, its deadlines shortened to ``STALL``."""
    app = build_app(config)
    app.state.proxy.body_timeout = STALL
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None, lifespan="off",
                            http=guard.guarded(head_timeout=STALL))  # fmt: skip
    yield from uvicorn_running(config)


@pytest.fixture(scope="module")
def proxy_port(emu):
    config = proxy_config.parse({"model_list": [deployment("nova", emu, "nova-a", max_retries=0)]})
    with guarded_proxy(config) as port:
        yield port


class Target:
    """One server under test: where it is, and the requests it takes."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        if name == "proxy":
            self.json_path = "/v1/images/generations"
            self.multipart_path = "/v1/images/edits"
            self.valid = json.dumps({"model": "nova", "prompt": "a lighthouse", "size": "320x320"}).encode()
            self.auth = b""
        else:
            self.json_path = self.multipart_path = f"/model/{NOVA_ID}/invoke"
            self.valid = json.dumps({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a lighthouse"},
                                     "imageGenerationConfig": {"width": 320, "height": 320}}).encode()  # fmt: skip
            self.auth = b"Authorization: Bearer k\r\n"

    def head(self, path: str, content_type: str, length: int) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {length}\r\n").encode() + self.auth + b"\r\n"  # fmt: skip

    def post(self, body: bytes, *, length: int | None = None, multipart: str | None = None) -> bytes:
        """A POST of ``body`` (declaring ``length``), JSON or (``multipart``: the boundary) a form."""
        length = len(body) if length is None else length
        if multipart:
            return self.head(self.multipart_path, f"multipart/form-data; boundary={multipart}", length) + body
        return self.head(self.json_path, "application/json", length) + body

    def normal(self) -> float:
        """A normal request, answered 200 with an image; the seconds it took."""
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"}
            if self.auth:
                headers["Authorization"] = "Bearer k"
            conn.request("POST", self.json_path, body=self.valid, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        assert response.status == 200, payload[:300]
        answer = json.loads(payload)
        assert answer.get("data") or answer.get("images"), answer
        return time.monotonic() - started


@pytest.fixture(params=["proxy", "emulator"])
def target(request, emu) -> Target:
    port = request.getfixturevalue("proxy_port") if request.param == "proxy" else emu.port
    served = Target(request.param, port)
    served.normal()
    yield served
    served.normal()  # after every case, the server still serves


# -- raw exchanges ------------------------------------------------------------------------------------------


class Exchange:
    """What a raw connection got: the statuses of the responses it read, whether the server closed (or reset)
    it, whether the client gave up waiting, and the seconds until then."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.waited_out = False
        self.seconds = 0.0

    @property
    def responses(self) -> list[tuple[int, bytes, bytes]]:
        """The responses read: status, head and body (by their Content-Length)."""
        found, rest = [], self.data
        while rest.startswith(b"HTTP/"):
            head, _, rest = rest.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            found.append((int(head.split(b" ", 2)[1]), head, rest[:length]))
            rest = rest[length:]
        return found

    @property
    def statuses(self) -> list[int]:
        return [status for status, _, _ in self.responses]


def exchange(port: int, *chunks: bytes, pause: float = 0.0, wait: float = LET_GO) -> Exchange:
    """Send ``chunks`` (``pause`` seconds apart, looking for an answer meanwhile: a server may answer or close
    before it has them all), then read until the server closes, or ``wait`` seconds after the last chunk."""
    got = Exchange()
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)

    def receive() -> None:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        got.closed = not data
        got.data += data

    try:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the server refused and closed while we sent
                got.closed = True
                break
            if pause and select.select([sock], [], [], pause)[0]:
                receive()
                if got.closed:
                    break
        deadline = time.monotonic() + wait
        while not got.closed:
            if not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                got.waited_out = True
                break
            receive()
    finally:
        sock.close()
        got.seconds = time.monotonic() - started
    return got


def refused(got: Exchange, *, answered: bool = False) -> None:
    """Every response read is a 4xx (no success, no server error), and there was one (``answered``) or the
    server closed the connection; never a connection left hanging."""
    assert not got.waited_out, f"the server neither answered nor closed in {got.seconds:.1f} s: {got.data[:200]!r}"
    statuses = got.statuses
    assert got.data == b"" or statuses, got.data[:200]
    assert all(400 <= s < 500 for s in statuses), (statuses, got.data[:300])
    if answered:
        assert statuses, got.data[:200]


def ran(target: Target, case: str, times: int = 1, got: Exchange | None = None) -> None:
    COUNTS[(target.name, case)] += times
    if got is not None:
        answer = " ".join(str(s) for s in got.statuses)
        how = "kept open" if got.waited_out else "closed" if got.closed else ""
        OUTCOMES[(target.name, case)][" then ".join(filter(None, (answer, how)))] += 1


# -- the cases ------------------------------------------------------------------------------------------------

BAD_JSON = [b"{", b'{"model": "nova",}', b"\xff\xfe\x00{}", b"[1, 2", b"{'model': 'nova'}", b'{"model": "nova"}}',
            b"nul", b'"\\ud800', b"[" * 100_000, b"{" + b'"a":1,' * 50_000 + b"}", b'{"model": NaN, "prompt": 1e999}',
            b'{"model": "nova", "prompt": "x", "n": ' + b"9" * 5000 + b"}"]  # fmt: skip
HUGE = {
    "100 KB header line": b"X-Big: " + b"a" * 100_000 + b"\r\n",
    "1 MB header line": b"X-Big: " + b"a" * 1_000_000 + b"\r\n",
    "2,000 headers": b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 90) for i in range(2000)),
    "10 MB of headers": (b"X-Big: " + b"a" * 99_990 + b"\r\n") * 100,
}
HTTP09 = [b"GET /\r\n", b"GET /health/liveliness\r\n", b"GET /_gesso/stats\r\n", b"GET\r\n", b"GET / HTTP/0.9\r\n\r\n",
          b"GET /health/liveliness\r\n\r\n"]  # fmt: skip
#: bytes that are never JSON: control characters other than the whitespace ones
CONTROL = [b for b in range(32) if b not in (9, 10, 13)]
TLS_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00\x00\x20" + bytes(range(64))


def form(boundary: str) -> bytes:
    parts = [(b'name="model"', b"nova"), (b'name="prompt"', b"a window"),
             (b'name="image"; filename="a.png"\r\nContent-Type: image/png', PNG)]  # fmt: skip
    out = b"".join(b"--%s\r\nContent-Disposition: form-data; %s\r\n\r\n%s\r\n" % (boundary.encode(), d, v)
                   for d, v in parts)  # fmt: skip
    return out + b"--%s--\r\n" % boundary.encode()


def closing(request: bytes) -> bytes:
    return request.replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\nConnection: close\r\n", 1)


def cases(target: Target, family: str) -> dict[str, list[bytes]]:
    """The variants of one case: what each sends (its chunks), before it waits for the answer."""
    valid = target.valid
    boundary = uuid.uuid4().hex
    body = form(boundary)
    rng = random.Random(f"{target.name} {family}")
    if family == "bad JSON":  # and the valid body cut short, or with a control byte (never JSON) put in
        bodies = list(BAD_JSON)
        for _ in range(RANDOM):
            at = rng.randrange(len(valid))
            bodies.append(valid[:at] if rng.random() < 0.5 else valid[:at] + bytes([rng.choice(CONTROL)]) + valid[at:])
        return {f"bad JSON {i}": [closing(target.post(b))] for i, b in enumerate(bodies)}
    if family == "Content-Length shorter than the body":
        return {f"{short} bytes short": [target.post(valid, length=len(valid) - short)] for short in (1, 7, 30)}
    if family == "truncated multipart":  # cut off where the Content-Length says, so complete as HTTP
        ends = [int(len(body) * f) for f in (0.1, 0.5, 0.9)] + [len(body) - 3, len(body) - 10]
        return {f"cut at {end}": [closing(target.post(body[:end], multipart=boundary))] for end in ends}
    if family == "stalled":
        return {
            "Content-Length longer than the body": [target.post(valid, length=len(valid) + 100)],
            "truncated multipart, stalled": [target.post(body[: len(body) // 2], length=len(body), multipart=boundary)],
            "partial request line": [b"POST /v1/images/gen"],
            "partial headers": [target.post(valid)[:60]],
            "a connection that sends nothing": [],
            "bare line ends": [b"\r\n" * 10],
        }
    if family == "huge headers":
        request = target.post(valid)
        at = request.index(b"\r\n\r\n") + 2
        found = {name: [request[:at] + extra + request[at:]] for name, extra in HUGE.items()}
        found["100 KB URL"] = [b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"]
        return found
    if family == "HTTP/0.9":
        return {repr(line): [line] for line in HTTP09}
    if family == "non-HTTP binary":
        blobs = [TLS_HELLO, b"\x00" * 4096, b"\xff" * 70_000, rng.randbytes(1_000_000)]
        blobs += [rng.randbytes(int(10 ** rng.uniform(0, 5))) for _ in range(RANDOM)]
        return {f"blob {i} ({len(blob)} bytes)": [blob] for i, blob in enumerate(blobs)}
    raise AssertionError(family)


FAMILIES = ["bad JSON", "Content-Length shorter than the body", "truncated multipart", "stalled", "huge headers",
            "HTTP/0.9", "non-HTTP binary"]  # fmt: skip
#: the variants a server must answer (not only close on)
ANSWERED = ("bad JSON", "truncated multipart")


def check_refused(target: Target, family: str, name: str, got: Exchange) -> None:
    if name == "a connection that sends nothing" and target.name == "emulator":
        # the emulator keeps idle connections as they are (its clients pool them): it waits, and serves
        # others meanwhile
        assert got.waited_out and got.data == b"", got.data[:200]
        return
    refused(got, answered=family in ANSWERED)
    if family == "stalled":  # let go (answered 408, or closed) within its deadline
        assert got.closed and got.seconds < STALL + 1.5, (name, got.seconds, got.data[:200])
    for _, head, body in got.responses:  # the proxy's own answers are OpenAI's error shape (uvicorn's, text)
        if target.name == "proxy" and b"content-type: application/json" in head.lower():
            error = json.loads(body)["error"]
            assert set(error) == {"message", "type", "param", "code"}, error
    if family == "bad JSON" and target.name == "proxy":
        assert got.statuses == [400], got.data[:300]


@pytest.mark.parametrize("family", FAMILIES)
def test_malformed_requests_are_refused_and_the_server_keeps_serving(target, family):
    """Every variant of the case at once, each on its own connection: each answered with a 4xx or closed
    (a stalled one within its deadline); meanwhile, and after, a normal request is answered 200."""
    variants = cases(target, family)
    with concurrent.futures.ThreadPoolExecutor(min(32, len(variants))) as pool:
        running = {name: pool.submit(exchange, target.port, *chunks, wait=STALL + 1.5)
                   for name, chunks in variants.items()}  # fmt: skip
        time.sleep(0.1)
        assert target.normal() < FAST  # the malformed ones do not hold up others
        for name, future in running.items():
            got = future.result()
            check_refused(target, family, name, got)
            ran(target, family if family != "stalled" else name, got=got)


def test_a_slow_client_does_not_stall_others(target):
    """A client sends a request a byte per 100 ms (its headers; another, its body); normal requests meanwhile
    answer fast, and the slow ones are let go within the deadline: answered 408, or closed."""
    whole = target.post(target.valid)
    body_at = whole.index(b"\r\n\r\n") + 4
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow_head = pool.submit(exchange, target.port, *[whole[i : i + 1] for i in range(len(whole))], pause=0.1)
        slow_body = pool.submit(exchange, target.port, whole[:body_at],
                                *[whole[i : i + 1] for i in range(body_at, len(whole))], pause=0.1)  # fmt: skip
        times = []
        while not (slow_head.done() and slow_body.done()):
            times.append(target.normal())
            time.sleep(0.05)
        assert times and max(times) < FAST, times
        for future in (slow_head, slow_body):
            got = future.result()
            refused(got)
            assert got.closed and got.seconds < STALL + 1.5, (got.seconds, got.data[:200])
            assert got.statuses in ([], [408]), got.data[:200]
    ran(target, "slow client, a byte per 100 ms (headers)", got=slow_head.result())
    ran(target, "slow client, a byte per 100 ms (body)", got=slow_body.result())
    ran(target, "normal requests beside the slow clients", len(times))


# -- gesso serve runs the guarded protocol ----------------------------------------------------------------------


def test_gesso_serve_runs_the_guarded_protocol(monkeypatch, emu, tmp_path):
    import argparse

    from gesso.proxy import serve

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options))
    monkeypatch.setattr(serve, "tune_gc", lambda: None)
    config = proxy_config.parse({"model_list": [deployment("nova", emu, "nova-a")]})
    args = argparse.Namespace(host="127.0.0.1", port=0, workers=1, log_level="warning")
    serve._serve(args, config, {})
    assert seen["http"] is guard.GuardedHttpToolsProtocol
    assert guard.HEAD_LIMIT == 64 * 1024 and guard.HEAD_TIMEOUT == 10.0
