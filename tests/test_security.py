"""Security, through the SDK and the proxy: secrets (the master key, virtual keys, AWS secret keys, session tokens,
Bedrock API keys, and the keys STS hands an assumed role) never reach a log line with DEBUG on for every logger,
nor an error body, a repr or the spend log, and no base64 run longer than 100 characters is logged; image URLs
are refused and never fetched (no server-side request forgery); a tiny PNG declaring 100000x100000 pixels, as an
image or a mask, is refused from its header, before anything decodes it.

That a caller cannot change a deployment's credentials, region, endpoint, model id, retries or timeout is
``test_proxy.py::test_a_caller_cannot_set_a_deployment_option``; the request size limit (413) is
``test_proxy.py::test_a_body_over_max_request_size_is_a_413``."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

import gesso
from gesso import api
from gesso.errors import GessoError, InvalidRequestError
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY
from helpers import picture, uvicorn_running

NOVA = "bedrock/amazon.nova-canvas-v1:0"
ROLE = "arn:aws:iam::123456789012:role/gesso-security"
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{101,}")
#: an STS answer's secret key that was not redacted
STS_SECRET = re.compile(r"(?i)<SecretAccessKey>(?!<redacted>)")


def secret(name: str) -> str:
    return f"{name}-SECRET-{uuid.uuid4().hex[:12]}"


def leaks(text: str, secrets: list[str]) -> list[str]:
    """Every line of ``text`` that holds a secret, a long base64 run or an unredacted STS secret key."""
    found = []
    for line in text.splitlines():
        if any(s in line for s in secrets) or BASE64_RUN.search(line) or STS_SECRET.search(line):
            found.append(line[:300])
    return found


@pytest.fixture
def every_log(caplog):
    """DEBUG on for every logger (a library may have set its own level), captured by pytest's caplog and by a
    handler on the root logger (formatted, tracebacks included); returns a function giving all the text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level = root.level
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)

    def text() -> str:
        records = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
        return stream.getvalue() + "\n" + records

    text.caplog = caplog  # type: ignore[attr-defined]
    yield text
    root.removeHandler(handler)
    root.setLevel(root_level)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


# -- secrets, through the SDK ----------------------------------------------------------------------------------


def test_sdk_debug_logs_errors_and_reprs_carry_no_secret(every_log, emulator, open_emulator, sts, monkeypatch):
    from gesso_bedrock.emulator import EMULATOR_SECRET_KEY

    token, wrong, api_key = secret("session-token"), secret("wrong-secret-key"), secret("bedrock-api-key")
    env_secret, env_token = secret("env-secret-key"), secret("env-session-token")
    secrets = [EMULATOR_SECRET_KEY, token, wrong, api_key, env_secret, env_token]
    base = {"aws_region_name": "us-east-1", "max_retries": 0}
    signed = {**base, "aws_bedrock_runtime_endpoint": emulator.url, "aws_access_key_id": EMULATOR_ACCESS_KEY}
    image = picture(512, 512)
    errors: list[GessoError] = []

    # static keys and a session token, with an image in the body (base64, which must not be logged either)
    answer = gesso.image_variation(NOVA, image, aws_secret_access_key=EMULATOR_SECRET_KEY, aws_session_token=token,
                                   **signed)  # fmt: skip
    assert answer.data and emulator.requests[-1].headers["X-Amz-Security-Token"] == token
    # refused: a wrong secret key (the signature does not match), a Bedrock API key over plain HTTP
    for kwargs in ({"aws_secret_access_key": wrong, **signed},
                   {"api_key": api_key, **base, "aws_bedrock_runtime_endpoint": emulator.url}):  # fmt: skip
        with pytest.raises(GessoError) as caught:
            gesso.image_generation(NOVA, "otter", **kwargs)
        errors.append(caught.value)
    # an assumed role, from source credentials in the environment that gesso is never given: botocore logs the
    # STS call (its X-Amz-Security-Token header) and STS's answer (the role's secret key and session token)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSOURCEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env_secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", env_token)
    answer = gesso.image_generation(NOVA, "otter", aws_role_name=ROLE, aws_sts_endpoint=sts,
                                    aws_bedrock_runtime_endpoint=open_emulator.url, **base)  # fmt: skip
    assumed = open_emulator.requests[-1].headers["X-Amz-Security-Token"]
    assert answer.data and assumed and assumed != env_token
    secrets.append(assumed)

    text = every_log()
    assert any(r.name.startswith("botocore") for r in every_log.caplog.records), (
        "botocore's DEBUG records were captured"
    )
    assert "<SecretAccessKey><redacted></SecretAccessKey>" in text, "STS's answer was logged, redacted"
    assert re.search(r"(?i)x-amz-security-token['\"]?: b?'?<redacted>", text), "the STS call's token header"
    assert leaks(text, secrets) == []
    for error in errors:
        for shown in (str(error), repr(error), repr(error.__cause__), json.dumps(error.to_dict())):
            assert leaks(shown, secrets) == [], shown
    prepared = api._prepare(NOVA, "x", {"aws_secret_access_key": wrong, "aws_session_token": token, **signed})
    assert leaks(repr(prepared), secrets) == []
    assert leaks(repr(answer), secrets) == []


# -- secrets, through the proxy ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, *, body=None, key: str | None = None, data: bytes | None = None, content_type="application/json"):
    """(status, headers, text) of one request."""
    payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=payload, method="POST" if payload is not None else "GET")
    request.add_header("Content-Type", content_type)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def multipart(fields: dict[str, bytes | str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"\r\nContent-Type: image/png'
        else:
            head, value = f'Content-Disposition: form-data; name="{name}"', value.encode()
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.slow
def test_proxy_debug_log_error_bodies_and_spend_log_carry_no_secret(emulator, open_emulator, sts, tmp_path):
    master, deploy_secret, deploy_token = secret("sk-master"), secret("deploy-secret"), secret("deploy-token")
    wrong_key, caller_secret = secret("sk-guessed"), secret("caller-secret")
    secrets = [master, deploy_secret, deploy_token, wrong_key, caller_secret]
    keys = {"aws_access_key_id": "AKIDDEPLOYMENT", "aws_secret_access_key": deploy_secret,
            "aws_session_token": deploy_token, "aws_region_name": "us-east-1", "max_retries": 0}  # fmt: skip
    config = {
        "model_list": [
            {"model_name": "nova", "litellm_params": {"model": NOVA, **keys,
                                                       "aws_bedrock_runtime_endpoint": open_emulator.url}},
            {"model_name": "role", "litellm_params": {"model": NOVA, **keys, "aws_role_name": ROLE,
                                                       "aws_sts_endpoint": sts,
                                                       "aws_bedrock_runtime_endpoint": open_emulator.url}},
            # the signing emulator knows only its own key: it refuses this deployment's signature
            {"model_name": "refused", "litellm_params": {"model": NOVA, **keys,
                                                          "aws_bedrock_runtime_endpoint": emulator.url}},
        ],
        "general_settings": {"master_key": "os.environ/GESSO_SECURITY_MASTER_KEY",
                             "database_url": f"sqlite:///{tmp_path / 'gesso.db'}"},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    port, log = free_port(), tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["GESSO_SECURITY_MASTER_KEY"] = master
    command = [sys.executable, "-m", "gesso", "serve", "--config", str(tmp_path / "config.yaml"), "--port", str(port),
               "--log-level", "debug"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    bodies = []
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError):
                if fetch(url + "/health/liveliness")[0] == 200:
                    break
            assert time.monotonic() < deadline, "gesso serve did not start"
            time.sleep(0.05)
        status, _, made = fetch(url + "/key/generate", body={"key_alias": "security"}, key=master)
        assert status == 200
        virtual = json.loads(made)["key"]
        secrets.append(virtual)
        for model in ("nova", "role"):
            status, _, text = fetch(url + "/v1/images/generations", body={"model": model, "prompt": "x"}, key=virtual)
            assert status == 200, text
        data, content_type = multipart({"model": "nova", "prompt": "a red door", "image": picture(512, 512)})
        status, _, text = fetch(url + "/v1/images/edits", data=data, content_type=content_type, key=virtual)
        assert status == 200, text
        for body, key, expected in (
            ({"model": "nova", "prompt": "x"}, wrong_key, 401),
            ({"model": "nova", "prompt": "x", "aws_secret_access_key": caller_secret}, virtual, 400),
            ({"model": "refused", "prompt": "x"}, virtual, 502),
        ):
            status, _, text = fetch(url + "/v1/images/generations", body=body, key=key)
            assert status == expected, text
            bodies.append(text)
        status, _, spend = fetch(url + "/spend/logs?limit=100", key=master)
        assert status == 200 and len(json.loads(spend)) == 6
        bodies += [spend, fetch(url + "/key/info?key=security", key=master)[2]]
    finally:
        proc.terminate()
        proc.wait(15)
    text = log.read_text(errors="replace")
    assert "botocore" in text and "gesso.proxy" in text and "DEBUG" in text, "the log was at DEBUG"
    assert "<SecretAccessKey><redacted></SecretAccessKey>" in text, "STS's answer was logged, redacted"
    assert leaks(text, secrets) == []
    for body in bodies:
        assert leaks(body, secrets) == [], body
    assert "AKIDDEPLOYMENT" not in bodies[1] and "refused" in bodies[2]  # the 400 names the field, not its value


# -- image URLs are refused, never fetched ---------------------------------------------------------------------------


@pytest.fixture
def image_host():
    """An HTTP server on loopback that would serve a PNG for any path; ``hits`` counts what reached it."""
    png = picture(512, 512)
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        do_HEAD = do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.hits = hits
    server.urls = [f"http://127.0.0.1:{server.server_port}/cat.png", f"https://127.0.0.1:{server.server_port}/cat.png"]
    yield server
    server.shutdown()
    server.server_close()


def test_sdk_refuses_image_urls_without_fetching_them(aws, emulator, image_host):
    for url in image_host.urls:
        calls = [
            lambda url=url: gesso.image_variation(NOVA, url, **aws),
            lambda url=url: gesso.image_edit(NOVA, url, "a red door", **aws),
            lambda url=url: gesso.image_edit(NOVA, picture(512, 512), "a red door", mask=url, **aws),
            lambda url=url: gesso.image_edit(
                NOVA, url.encode(), "a red door", **aws
            ),  # as bytes, as the proxy's forms give it
            lambda url=url: gesso.image_generation(NOVA, "x", taskType="IMAGE_VARIATION", images=[url], **aws),
        ]
        for call in calls:
            with pytest.raises(InvalidRequestError) as caught:
                call()
            assert (
                "is a URL (" in caught.value.message and "gesso never fetches images from URLs" in caught.value.message
            )
    assert image_host.hits == [] and len(emulator.requests) == 0


@contextlib.contextmanager
def proxy_on(emulator_url: str):
    """An in-process proxy (so the test sees what its process decodes) with ``nova`` on the emulator."""
    import uvicorn

    from gesso.proxy import config as proxy_config
    from gesso.proxy.app import build_app
    from gesso_bedrock.emulator import EMULATOR_SECRET_KEY

    params = {"model": NOVA, "aws_bedrock_runtime_endpoint": emulator_url, "aws_access_key_id": EMULATOR_ACCESS_KEY,
              "aws_secret_access_key": EMULATOR_SECRET_KEY, "aws_region_name": "us-east-1"}  # fmt: skip
    app = build_app(proxy_config.parse({"model_list": [{"model_name": "nova", "litellm_params": params}]}))
    served = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None, lifespan="off")
    for port in uvicorn_running(served):
        yield f"http://127.0.0.1:{port}"


def assert_openai_400(status: int, text: str, *needles: str) -> dict:
    assert status == 400, text
    error = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert "Traceback" not in text and all(n in error["message"] for n in needles), error["message"]
    return error


def test_proxy_refuses_image_urls_without_fetching_them(emulator, image_host, monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with proxy_on(emulator.url) as url:
        for image_url in image_host.urls:
            for fields in ({"image": image_url}, {"image": picture(512, 512), "mask": image_url}):
                data, content_type = multipart({"model": "nova", "prompt": "a red door", **fields})
                status, _, text = fetch(url + "/v1/images/edits", data=data, content_type=content_type)
                assert_openai_400(status, text, "is a URL (", "gesso never fetches images from URLs")
            body = {"model": "nova", "prompt": "x", "taskType": "IMAGE_VARIATION",
                    "imageVariationParams": {"images": [image_url]}}  # fmt: skip
            status, _, text = fetch(url + "/v1/images/generations", body=body)
            assert_openai_400(status, text, "imageVariationParams.images[0]", "gesso never fetches images from URLs")
    assert image_host.hits == [] and len(emulator.requests) == 0


# -- decompression bombs: refused from the header, never decoded ----------------------------------------------------


@pytest.fixture
def decoded(monkeypatch):
    """The sizes of the images Pillow decodes in this process (``Image.load``)."""
    from PIL import Image

    sizes: list[tuple[int, int]] = []
    load = Image.Image.load

    def recording(self):
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(Image.Image, "load", recording)
    return sizes


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header declares ``width`` x ``height`` (its data: one blank row)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width * 3 + 1), 9))
        + chunk(b"IEND", b"")
    )


BOMB = png_declaring(100_000, 100_000)
LARGE = png_declaring(12_000, 12_000)  # under Pillow's own bomb limit: decoded, it would take ~500 MB


def test_sdk_refuses_a_decompression_bomb_before_decoding(aws, emulator, decoded):
    assert len(BOMB) < 1000
    for bomb in (BOMB, LARGE, "data:image/png;base64," + base64.b64encode(BOMB).decode()):
        for call in (
            lambda bomb=bomb: gesso.image_variation(NOVA, bomb, **aws),
            lambda bomb=bomb: gesso.image_edit(NOVA, bomb, "a red door", **aws),
            lambda bomb=bomb: gesso.image_edit(NOVA, picture(512, 512), "a red door", mask=bomb, **aws),
        ):
            with pytest.raises(InvalidRequestError, match=r"\d{5,6}x\d{5,6}"):
                call()
    assert all(w * h <= 4096 * 4096 for w, h in decoded), decoded
    assert len(emulator.requests) == 0


def test_proxy_edit_endpoint_refuses_a_decompression_bomb_before_decoding(emulator, decoded, monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with proxy_on(emulator.url) as url:
        for bomb in (BOMB, LARGE):
            for fields in ({"image": bomb}, {"image": picture(512, 512), "mask": bomb}):
                data, content_type = multipart({"model": "nova", "prompt": "a red door", **fields})
                status, _, text = fetch(url + "/v1/images/edits", data=data, content_type=content_type)
                assert_openai_400(status, text, "x")
                assert re.search(r"\d{5,6}x\d{5,6}", text), text
            data, content_type = multipart({"model": "nova", "image": bomb})
            status, _, text = fetch(url + "/v1/images/variations", data=data, content_type=content_type)
            assert_openai_400(status, text)
    assert all(w * h <= 4096 * 4096 for w, h in decoded), decoded
    assert len(emulator.requests) == 0
