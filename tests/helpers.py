"""Small helpers shared by the tests."""

from __future__ import annotations

import base64
import json

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
