"""The natively async transport: cancellation aborts the call and its retries at once, and the
calls hold no threads."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import gesso
from conftest import NOVA
from gesso import errors
from gesso_bedrock import transport


async def _cancel_inside(call, emulator) -> float:
    """Start ``call``, cancel it once the emulator has seen its request (the task is then waiting on the
    emulator's answer, or on its backoff), and return how long the cancel took to finish the task."""
    task = asyncio.create_task(call)
    for _ in range(200):  # until the request reached the emulator
        await asyncio.sleep(0.05)
        if emulator.stats()["requests"]:
            break
    await asyncio.sleep(0.2)  # now the task is waiting: on the held request, or on its 5 s backoff
    start = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.perf_counter() - start


def test_cancelling_a_call_aborts_its_request_at_once(aws, emulator):
    emulator.inject("latency", seconds=5)
    took = asyncio.run(_cancel_inside(gesso.aimage_generation(NOVA, "otter", **aws), emulator))
    assert took < 2.0  # at once, not after the 5 s the emulator holds it
    assert emulator.stats()["requests"] == 1


def test_cancelling_a_call_stops_its_retries(aws, emulator, monkeypatch):
    monkeypatch.setattr(transport, "BACKOFF_BASE", 5.0)
    monkeypatch.setattr(transport, "_random", type("Max", (), {"uniform": staticmethod(lambda low, high: high)})())
    emulator.inject("throttle")
    took = asyncio.run(_cancel_inside(gesso.aimage_generation(NOVA, "otter", **aws), emulator))
    assert took < 2.0  # at once, not after the 5 s backoff
    time.sleep(0.2)
    assert emulator.stats()["requests"] == 1, "no retry was sent after the cancel"


def test_async_calls_use_no_threads(aws, emulator):
    emulator.inject("latency", seconds=0.5)
    seen = []

    async def many():
        calls = [asyncio.create_task(gesso.aimage_generation(NOVA, "otter", **aws)) for _ in range(50)]
        await asyncio.sleep(0.3)
        seen.append({t.name for t in threading.enumerate()})
        return await asyncio.gather(*calls)

    assert len(asyncio.run(many())) == 50
    client_threads = [name for name in seen[0] if not name.startswith(("gesso-emulator", "Thread-", "MainThread"))]
    assert not [name for name in client_threads if name.startswith("gesso-async")], client_threads


def test_two_thousand_calls_in_flight_on_a_few_threads(monkeypatch):
    """2,000 aimage_generation calls held inside the emulator at once (by a 4 s latency, which holds no
    emulator thread), and the process's OS threads counted while they are: the calls hold none."""
    import os
    import resource

    from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator

    calls = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * calls:  # a client and a server socket per call, in one process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * calls), hard))
    monkeypatch.setattr(transport, "MAX_CONCURRENCY", 4 * calls)
    counted: list[int] = []
    with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}, workers=8) as emulator:
        emulator.inject("latency", seconds=4)
        kwargs = {"aws_bedrock_runtime_endpoint": emulator.url, "aws_access_key_id": EMULATOR_ACCESS_KEY,
                  "aws_secret_access_key": EMULATOR_SECRET_KEY, "aws_region_name": "us-east-1"}  # fmt: skip

        async def many():
            tasks = [
                asyncio.create_task(gesso.aimage_generation(NOVA, "otter", size="320x320", **kwargs))
                for _ in range(calls)
            ]
            for _ in range(300):
                await asyncio.sleep(0.02)
                if emulator.stats()["in_flight"] == calls:
                    break
            counted.append(len(os.listdir("/proc/self/task")))
            return await asyncio.gather(*tasks)

        results = asyncio.run(many())
        assert len(results) == calls and all(r.data for r in results)
        assert emulator.stats()["max_in_flight"] == calls
    assert counted[0] <= 32, f"{counted[0]} threads while {calls} calls were in flight"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_proxy_from_the_environment_is_used_as_botocore_would(monkeypatch, mode):
    """HTTP(S)_PROXY and NO_PROXY apply to the engine's calls, as they did to botocore's."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from helpers import picture

    seen: list[str] = []
    answer = json.dumps({"images": [__import__("base64").b64encode(picture(320, 320)).decode()]}).encode()

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    kwargs = {"aws_bedrock_runtime_endpoint": "http://127.0.0.1:9", "aws_access_key_id": "AKIDPROXY",
              "aws_secret_access_key": "proxy-secret-key", "aws_region_name": "us-east-1", "max_retries": 0}  # fmt: skip
    try:
        if mode == "sync":
            response = gesso.image_generation(NOVA, "otter", **kwargs)
        else:
            response = asyncio.run(gesso.aimage_generation(NOVA, "otter", **kwargs))
    finally:
        proxy.shutdown()
    assert response.data and seen == ["http://127.0.0.1:9/model/amazon.nova-canvas-v1%3A0/invoke"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_proxy_of_another_scheme_is_one_clear_error_naming_it(monkeypatch, mode):
    """A socks5:// proxy in the environment is a ProviderError naming the scheme and the variables, not a
    plugin failure; the proxy's credentials appear nowhere in it."""
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "socks5://someone:proxy-password@127.0.0.1:1080")
    kwargs = {"aws_bedrock_runtime_endpoint": "http://127.0.0.1:7", "aws_access_key_id": "AKIDSOCKS",
              "aws_secret_access_key": "socks-secret-key", "aws_region_name": "us-east-1", "max_retries": 0}  # fmt: skip
    with pytest.raises(errors.ProviderError) as caught:
        if mode == "sync":
            gesso.image_generation(NOVA, "otter", **kwargs)
        else:
            asyncio.run(gesso.aimage_generation(NOVA, "otter", **kwargs))
    assert not isinstance(caught.value, errors.PluginHookError)
    assert "socks5://" in caught.value.message and "HTTP_PROXY" in caught.value.message
    assert "proxy-password" not in caught.value.message and "someone" not in caught.value.message
