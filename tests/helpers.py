"""Small helpers shared by the tests."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from gesso.imaging import inspect


def png_info(b64: str):
    return inspect(base64.b64decode(b64))


def invoke(client, model_id: str, body) -> dict:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.invoke_model(
        modelId=model_id, body=raw, contentType="application/json", accept="application/json"
    )
    return json.loads(response["body"].read())


def picture(width: int, height: int, color=(40, 120, 200), *, mode: str = "RGB", fmt: str = "PNG", **save) -> bytes:
    """A real image file of the given size, mode and format (Pillow)."""
    import io

    from PIL import Image

    fill = color if mode in ("RGB", "RGBA") else (color[0] if isinstance(color, tuple) else color)
    if mode == "RGBA" and len(color) == 3:
        fill = (*color, 255)
    image = Image.new(mode, (width, height), fill)
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def mask(
    width: int, height: int, box: tuple[int, int, int, int], *, grey: int | None = None, fmt: str = "PNG"
) -> bytes:
    """A black-and-white mask: black inside ``box`` (the area to edit), white elsewhere."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(image).rectangle(box, fill=(0, 0, 0))
    if grey is not None:
        image.putpixel((0, 0), (grey, grey, grey))
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    return out.getvalue()


def pil(b64: str):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(b64)))


def moto_server():
    """moto's AWS services on loopback, as a generator for a fixture: yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def uvicorn_running(config):
    """Serve ``config`` (a ``uvicorn.Config``) on a thread; a generator for a context manager or fixture that
    yields the port it listens on, and stops the server after."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="proxy-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the proxy did not start"
        time.sleep(0.005)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def bench_module(name: str):
    """A module of ``bench/`` (its scripts import their shared ``gesso_bench`` as a sibling)."""
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module(name)


def multipart(fields) -> tuple[bytes, str]:
    """A multipart/form-data body of ``fields`` (a mapping, or pairs to repeat a name): bytes as PNG files, text as
    fields (a lone surrogate written as its UTF-8 bytes, as a careless client would); and its content type."""
    import uuid

    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items() if hasattr(fields, "items") else fields:
        if isinstance(value, bytes):
            head = f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"\r\nContent-Type: image/png'
        else:
            head, value = f'Content-Disposition: form-data; name="{name}"', value.encode("utf-8", "surrogatepass")
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode("utf-8", "surrogatepass") + value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def proxy_environment(stack, secrets: dict[str, str]):
    """A ``pytest.MonkeyPatch`` on ``stack`` (an ``ExitStack``) with ``secrets`` in the environment and no HTTP
    proxy variables, so clients reach loopback directly."""
    import pytest

    patch = stack.enter_context(pytest.MonkeyPatch.context())
    for name, value in secrets.items():
        patch.setenv(name, value)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        patch.delenv(name, raising=False)
    return patch


#: the model of the deployment :func:`serving` configures
NOVA = "bedrock/amazon.nova-canvas-v1:0"


class Served:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def call(self, method: str, path: str, body: object = None, key: str | None = None) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def children(self) -> list[int]:
        return children(self.process.pid)


def children(parent: int) -> list[int]:
    """The live processes whose parent is ``parent`` (zombies, already ended, left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent and fields[0] != "Z":
                found.append(int(entry))
    return found


def alive(pids: list[int]) -> list[int]:
    living = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.append(pid)
    return living


@contextlib.contextmanager
def serving(
    tmp_path: Path,
    params: dict[str, object],
    *flags: str,
    processes: int = 0,
    config: dict | None = None,
    session: bool = False,
) -> Iterator[Served]:
    """``gesso serve`` with ``flags`` on one model name (``params`` added to its deployment; or on ``config``),
    answering, with ``processes`` children; stopped after. It logs at warning level unless ``flags`` say;
    ``session``: in a process group of its own, as a terminal's foreground job is (Ctrl-C reaches all of it)."""
    params = {"model": NOVA, "max_retries": 0, **params}
    config = config or {"model_list": [{"model_name": "nova", "litellm_params": params}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "gesso", "serve", "--config", str(path), "--port", str(port),
               "--log-level", "warning", *flags]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "GESSO_MAX_CONCURRENCY"}
    (tmp_path / "stale").mkdir()  # another run's directory, left in the environment: never used
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "stale")
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=session)
    serving = Served(process, f"http://127.0.0.1:{port}", log)
    started = []
    try:
        deadline = time.monotonic() + 60
        while len(alive(serving.children())) < processes or not _answers(serving):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "gesso serve did not start: " + log.read_text()
            time.sleep(0.1)
        started = serving.children()
        yield serving
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        for pid in alive(started):
            os.kill(pid, signal.SIGKILL)


def _answers(served: Served) -> bool:
    try:
        return served.call("GET", "/health/liveliness")[0] == 200
    except OSError:
        return False
