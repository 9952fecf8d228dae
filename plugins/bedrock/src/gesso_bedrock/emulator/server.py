"""The emulator's HTTP/1.1 server, on asyncio: it holds thousands of open requests with injected latency on
one thread (a latency is an ``asyncio.sleep``, not a blocked thread), and runs each model's emulation on a
bounded thread pool (emulations are synchronous, and a test's may block on purpose). Keep-alive
connections (idle ones are kept), ``Content-Length`` bodies (up to InvokeModel's 25,000,000 bytes), a request
that stalls once begun answered 408 after ``READ_TIMEOUT`` seconds, optional TLS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import socket
import ssl
import threading
from typing import TYPE_CHECKING, Any

from gesso.aio import within
from gesso_bedrock.emulator.call import Headers

if TYPE_CHECKING:
    from gesso_bedrock.emulator import Emulator

logger = logging.getLogger("gesso.emulator")

MAX_BODY = 25_000_000
MAX_HEAD = 64 * 1024
#: seconds the rest of a request's headers, and then its body, may take to arrive once it has begun
READ_TIMEOUT = 30.0
#: pending connections the kernel queues (asyncio.start_server would reset a given socket's to 100)
BACKLOG = 4096
_REASONS = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Payload Too Large", 424: "Failed Dependency", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip


class Server:
    """Serves one :class:`~gesso_bedrock.emulator.Emulator` on ``host:port`` (``port=0``: a free one)."""

    def __init__(self, emulator: Emulator, host: str, port: int, *, tls: tuple[str, str] | None, workers: int) -> None:
        self.emulator = emulator
        self.socket = socket.create_server((host, port), backlog=BACKLOG, reuse_port=False)
        self.port = self.socket.getsockname()[1]
        self.context: ssl.SSLContext | None = None
        if tls:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(*tls)
        self.pool = (
            concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="gesso-emulator-model")
            if workers
            else None
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # -- running ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on a background thread."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="gesso-emulator", daemon=True)
        self._thread.start()
        ready.wait(10)

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted."""
        self._run(threading.Event())

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(ready))
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)

    async def _serve(self, ready: threading.Event) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(
            self._connection, sock=self.socket, ssl=self.context, limit=MAX_HEAD, backlog=BACKLOG
        )
        ready.set()
        async with server:
            await self._stopped.wait()

    def stop(self) -> None:
        if self.loop is not None and self._stopped is not None:
            self.loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.socket.close()

    # -- one connection -----------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError) as exc:
            logger.debug("client went away: %s", exc)
        except asyncio.CancelledError:  # the server is stopping: an idle keep-alive connection ends quietly
            pass
        except Exception:  # a bug here must cost one connection, never the server
            logger.exception("emulator connection failed")
        finally:
            writer.close()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection stays open for another."""
        try:
            first = await reader.readexactly(1)  # an idle keep-alive connection waits here, for as long as it likes
            head = first + await within(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError:
            await self._refuse(writer, 431, "The request headers are too large.")
            return False
        except asyncio.TimeoutError:  # a request begun must arrive: a stalled or trickling client is let go
            await self._refuse(writer, 408, f"The request headers did not arrive within {READ_TIMEOUT:g} s.")
            return False
        line, *fields = head.decode("latin-1").split("\r\n")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._refuse(writer, 400, "Malformed request line.")
            return False
        method, target, version = parts
        headers = Headers()
        for field in fields:
            if field:
                name, _, value = field.partition(":")
                headers[name.strip()] = value.strip()
        raw = (headers.get("Content-Length") or "0").strip()
        if not raw.isdigit() or headers.get("Transfer-Encoding"):
            await self._refuse(
                writer, 400, "Content-Length must be a non-negative integer (chunked bodies are not taken)"
            )
            return False
        length = int(raw)
        if length > MAX_BODY:
            await self._refuse(writer, 413, f"The request body may be at most {MAX_BODY} bytes.")
            return False
        try:
            body = await within(reader.readexactly(length), READ_TIMEOUT) if length else b""
        except asyncio.TimeoutError:
            await self._refuse(writer, 408, f"The request body did not arrive within {READ_TIMEOUT:g} s.")
            return False
        status, out, payload = await self.emulator.handle_async(method, target, headers, body, pool=self.pool)
        keep = version == "HTTP/1.1" and (headers.get("Connection") or "").lower() != "close"
        await self._write(writer, status, out, payload, keep=keep)
        return keep

    async def _refuse(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        from gesso_bedrock.emulator import ERROR_NAMESPACE

        payload = json.dumps({"message": message}).encode()
        out = {"Content-Type": "application/json", "x-amzn-ErrorType": f"ValidationException:{ERROR_NAMESPACE}"}
        await self._write(writer, status, out, payload, keep=False)

    @staticmethod
    async def _write(
        writer: asyncio.StreamWriter, status: int, headers: dict[str, str], payload: bytes, *, keep: bool
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Server: gesso-emulator"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(payload)}", f"Connection: {'keep-alive' if keep else 'close'}", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + payload)
        await writer.drain()


def address(server: Server) -> tuple[Any, int]:
    host_port: tuple[Any, int] = server.socket.getsockname()[:2]
    return host_port
