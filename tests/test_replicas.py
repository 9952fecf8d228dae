"""The replicas' acceptance test: two real ``gesso serve`` replicas on one PostgreSQL database and one
Bedrock emulator. A key made on one works on the other, and 100 concurrent requests split across both, on a
key whose budget covers exactly 10 images, yield exactly 10 images, spend no more than the budget, reach the
emulator exactly 10 times and leave exactly 100 spend rows. Run with ``-s`` to see the figures."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

NOVA = "bedrock/amazon.nova-canvas-v1:0"
MASTER = "sk-replicas-test-master-key"
PRICE = 0.04  # Nova Canvas, 320x320, standard
REQUESTS = 100
IMAGES = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, method: str, path: str, key: str | None = MASTER, body=None) -> tuple[int, dict, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers.items()), json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), json.load(exc)


class Replicas(list):
    """The replicas' URLs, and their processes (``processes``)."""

    def __init__(self, urls: list[str], processes: list[subprocess.Popen]) -> None:
        super().__init__(urls)
        self.processes = processes


@pytest.fixture
def replicas(database_url, aws, tmp_path, monkeypatch):
    """Two ``gesso serve`` processes on ``database_url``, started together (they migrate under an advisory
    lock), each with its own config naming its deployment ``replica-a`` or ``replica-b``; their URLs."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with started(database_url, aws, tmp_path) as found:
        yield found


@contextlib.contextmanager
def started(database_url, aws, tmp_path, names=("a", "b"), model_info=None, general=None, aliases=()):
    """``gesso serve`` replicas (one a name) on ``database_url``, their configs beside each other in
    ``tmp_path`` (so they share the result store), with more ``model_info`` and ``general_settings``, and more
    model names (``aliases``) for the same model."""
    processes, urls = [], []
    try:
        for name in names:
            config = {
                "model_list": [{"model_name": model, "litellm_params": {"model": NOVA, **aws, "max_retries": 0},
                                "model_info": {"id": f"replica-{name}" + ("" if model == "nova" else f"-{model}"),
                                               **(model_info or {})}}
                               for model in ("nova", *aliases)],
                "general_settings": {"master_key": MASTER, "database_url": database_url, **(general or {})},
            }  # fmt: skip
            path = tmp_path / f"replica-{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            port = free_port()
            log = open(tmp_path / f"replica-{name}.log", "wb")
            command = [sys.executable, "-m", "gesso", "serve", "--config", str(path), "--port", str(port),
                       "--log-level", "warning"]  # fmt: skip
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for process, url, name in zip(processes, urls, names, strict=True):
            while True:
                assert process.poll() is None, (tmp_path / f"replica-{name}.log").read_text()
                assert time.monotonic() < deadline, "a replica did not start"
                try:
                    if call(url, "GET", "/health/liveliness", key=None)[0] == 200:
                        break
                except OSError:
                    time.sleep(0.05)
        yield Replicas(urls, processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow  # starts subprocesses
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # replicas share PostgreSQL, not SQLite
def test_two_replicas_hold_one_budget(replicas, emulator):
    a, b = replicas
    status, _, made = call(a, "POST", "/key/generate", body={"key_alias": "ten-images", "max_budget": IMAGES * PRICE})
    assert status == 200, made
    key, token = made["key"], made["token"]
    status, _, info = call(b, "GET", "/key/info", key=key)  # made on A, known to B
    assert status == 200 and info["info"]["token"] == token and info["info"]["max_budget"] == pytest.approx(0.4)

    emulator.inject("latency", seconds=0.2)  # calls overlap: the budget is held while they are in flight
    body = {"model": "nova", "prompt": "a lighthouse", "size": "320x320"}
    gate = threading.Barrier(REQUESTS)

    def one(index: int) -> tuple[str, int, int, str | None]:
        url = (a, b)[index % 2]
        gate.wait()
        status, _, answer = call(url, "POST", "/v1/images/generations", key=key, body=body)
        images = len(answer.get("data", [])) if status == 200 else 0
        kind = answer["error"]["type"] if status != 200 else None
        return url, status, images, kind

    started = time.monotonic()
    with ThreadPoolExecutor(REQUESTS) as pool:
        outcomes = list(pool.map(one, range(REQUESTS)))
    elapsed = time.monotonic() - started

    statuses = collections.Counter((s, k) for _, s, _, k in outcomes)
    images = sum(n for _, _, n, _ in outcomes)
    per_replica = {u: collections.Counter(s for url, s, _, _ in outcomes if url == u) for u in (a, b)}
    spend = call(b, "GET", "/key/info?key=ten-images")[2]["info"]["spend"]
    rows = call(a, "GET", f"/spend/logs?api_key={token}&limit=10000")[2]
    by_deployment = collections.Counter((r["deployment"] or "-", r["status_code"]) for r in rows)
    report = call(b, "GET", "/spend/report")[2]
    reached = emulator.stats()["requests"]

    print(f"\n{REQUESTS} concurrent requests in {elapsed:.2f} s, split across two replicas on one PostgreSQL")
    for url in (a, b):
        print(f"  replica {url}: {dict(sorted(per_replica[url].items()))}")
    print(f"  statuses: {dict(sorted(statuses.items(), key=str))}")
    print(f"  images: {images}; emulator requests: {reached}")
    print(f"  key spend: {spend} of max_budget {IMAGES * PRICE:.2f} USD")
    print(f"  spend rows: {len(rows)}; by deployment and status: {dict(sorted(by_deployment.items()))}")
    print(f"  /spend/report: {json.dumps(report)}")

    assert statuses == {(200, None): IMAGES, (429, "budget_exceeded"): REQUESTS - IMAGES}
    assert all(per_replica[url] for url in (a, b))  # both replicas served the burst
    assert images == IMAGES and reached == IMAGES
    assert spend <= IMAGES * PRICE + 1e-9 and spend == pytest.approx(IMAGES * PRICE)
    assert len(rows) == REQUESTS and len({r["request_id"] for r in rows}) == REQUESTS
    assert sum(r["images"] for r in rows) == IMAGES and sum(r["cost"] for r in rows) == pytest.approx(0.4)
    assert report["total"]["requests"] == REQUESTS and report["total"]["images"] == IMAGES
