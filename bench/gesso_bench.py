"""What the benchmarks (and the test fixtures that reuse them) share: free ports, CPU pinning, an environment and
a JSON HTTP call that bypass any proxy, waiting for and stopping the processes they start, a lean keep-alive
HTTP/1.1 client for generating load, the proxy's image request, and throwaway PostgreSQL databases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pin(cpu: int) -> None:
    """Keep a process (and the threads it starts) on one core, where the OS allows it."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def no_proxy_env() -> dict[str, str]:
    """This process's environment for a child on loopback: no HTTP proxy, and loopback never proxied."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def http(method: str, url: str, body: Any = None, key: str | None = None, timeout: float = 30) -> tuple[int, Any]:
    """One JSON call, never through a proxy: (its status, its JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with _NO_PROXY.open(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_listening(port: int, proc: subprocess.Popen, what: str, log: Path | None = None, seconds: float = 60) -> None:
    """Return once ``port`` takes connections; raise (with the end of ``log``) if ``proc`` exits first or
    ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening:\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port} within {seconds:g} s") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen, wait: float = 10) -> None:
    """SIGINT (a clean shutdown), then SIGKILL if it has not ended within ``wait`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Gone(Exception):
    """The connection failed before a whole answer came back."""


class Conn:
    """One keep-alive HTTP/1.1 connection: send a prepared request, read the whole answer (Content-Length or
    chunked). Any failure of the connection is a :class:`Gone`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = time.monotonic()

    @classmethod
    async def open(cls, port: int) -> Conn:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        except OSError as exc:
            raise Gone(f"connect: {exc}") from exc
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = await self._chunks()
            else:
                body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise Gone(f"{type(exc).__name__}: {exc}") from exc
        self.used = time.monotonic()
        return int(status_line.split(" ", 2)[1]), headers, body

    async def _chunks(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append((await self.reader.readexactly(size + 2))[:-2])

    def close(self) -> None:
        self.writer.close()


def image_request(port: int, key: str, body: dict[str, Any]) -> bytes:
    """A prepared ``POST /v1/images/generations`` with ``body``, authorized by ``key``."""
    data = json.dumps(body).encode()
    return (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


@contextlib.contextmanager
def throwaway_postgres(server: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on the PostgreSQL server at ``server`` (named ``prefix`` and random
    hex), dropped afterwards even if connections were left open (``WITH (FORCE)``, PostgreSQL 13+)."""
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    parts = urlsplit(server)
    scheme = parts.scheme.split("+")[0]  # asyncpg takes postgresql://, not postgresql+asyncpg://
    admin = urlunsplit((scheme, parts.netloc, "/postgres", parts.query, ""))
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE DATABASE {name}"))
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
