"""gesso.proxy.http, the part the image routes and the key API share: one body reader (the same 408, 413 and
400 answers on both), one error shape, and the key API's answer when the proxy has no database. On a real
proxy on loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
import urllib.error
import urllib.request

import pytest
import uvicorn

from gesso.proxy import config as proxy_config
from gesso.proxy import keys, store
from gesso.proxy.app import build_app
from helpers import uvicorn_running

NOVA = "bedrock/amazon.nova-canvas-v1:0"
MASTER = "sk-http-test-master-key"
#: seconds a body may take to arrive on the proxies of these tests
BODY_TIMEOUT = 0.5
ROUTES = ("/v1/images/generations", "/key/generate")


@contextlib.contextmanager
def serving(database_url: str | None, **general):
    settings = {"master_key": MASTER, **({"database_url": database_url} if database_url else {}), **general}
    config = proxy_config.parse({
        "model_list": [{"model_name": "nova", "litellm_params": {"model": NOVA, "aws_region_name": "us-east-1"}}],
        "general_settings": settings,
    })  # fmt: skip
    app = build_app(config)
    app.state.proxy.body_timeout = BODY_TIMEOUT
    served = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    yield from uvicorn_running(served)


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('http') / 'gesso.db'}"
    store.upgrade(url)
    with serving(url, max_request_size_mb=1) as port:
        yield port


def post(port: int, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    request.add_header("Authorization", f"Bearer {MASTER}")
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.load(exc)


def raw_exchange(port: int, head: bytes, body: bytes) -> tuple[bytes, float, bool]:
    """Send ``head`` and ``body`` on a fresh connection, then read until the server closes it: what came back,
    the seconds it took, and whether the server closed the connection (rather than this client timing out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        started = time.monotonic()
        connection.sendall(head + body)
        data = b""
        try:
            while chunk := connection.recv(65536):
                data += chunk
        except TimeoutError:
            return data, time.monotonic() - started, False
        return data, time.monotonic() - started, True


@pytest.mark.parametrize("path", ROUTES)
def test_a_body_that_stalls_is_a_408_and_the_connection_is_closed(port, path):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    data, seconds, closed = raw_exchange(port, head, b'{"model": ')  # 10 of the 100 bytes, then nothing
    status_line, _, rest = data.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout" and closed, data[:300]
    assert b"connection: close" in headers.lower()
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert BODY_TIMEOUT <= seconds < BODY_TIMEOUT + 5


@pytest.mark.parametrize(("path", "limit"), [(ROUTES[0], 1024 * 1024), (ROUTES[1], keys.MAX_BODY)])
def test_a_body_over_the_limit_is_a_413_naming_it(port, path, limit):  # (the image routes: max_request_size_mb)
    """The head alone: the answer comes before any of the body is read (a client still sending a large body
    when the server closes may see its write fail instead)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Authorization", f"Bearer {MASTER}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(limit + 1))
        connection.endheaders()
        response = connection.getresponse()
        status, answer = response.status, json.load(response)
    finally:
        connection.close()
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    assert f"({limit} bytes" in answer["error"]["message"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(("body", "says"), [(b"{", "not valid JSON"), (b"[1, 2]", "must be a JSON object")])
def test_a_body_that_is_not_a_json_object_is_a_400(port, path, body, says):
    status, headers, answer = post(port, path, body)
    assert status == 400 and answer["error"]["code"] == "invalid_json" and says in answer["error"]["message"]
    assert headers["x-request-id"]


def test_the_key_api_without_a_database_is_a_501_before_anything_else():
    with serving(None) as port:
        for method, path in (("POST", "/key/generate"), ("GET", "/key/list"), ("GET", "/spend/logs")):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)  # and no key at all
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=10)
            error = json.load(caught.value)["error"]
            assert caught.value.code == 501 and error["type"] == "api_error", (path, error)
            assert "general_settings.database_url" in error["message"]
