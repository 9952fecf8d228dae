"""Bad input never escapes: one example of each class of defect the fuzzing found, each a clear gesso
error raised before anything is sent (or, for the emulator, a Bedrock-shaped 4xx); nothing leaks into
logs. ``tests/test_properties.py`` runs the wider, generated cases."""

from __future__ import annotations

import base64
import decimal
import http.client
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import gesso
from conftest import NOVA
from gesso.errors import AuthenticationError, GessoError, InvalidRequestError, UnknownModelError
from helpers import picture

TITAN = "bedrock/amazon.titan-image-generator-v2:0"
SD35 = "bedrock/stability.sd3-5-large-v1:0"


def refused(emulator, model, *, prompt="otter", **kwargs) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(model, prompt, **kwargs)
    assert len(emulator.requests) == 0, "nothing may be sent for bad input"
    return info.value


# -- class 1: Python exceptions escaped instead of a gesso error -------------------------------------------


@pytest.mark.parametrize(
    ("model", "kwargs", "param"),
    [
        (TITAN, {"size": "0x0"}, "size"),
        (SD35, {"size": "0x5"}, "size"),
        (NOVA, {"timeout": 1 << 1328}, "timeout"),
        (
            NOVA,
            {"aws_session_token": "token", "aws_access_key_id": None, "aws_secret_access_key": None},
            "aws_session_token",
        ),
        (NOVA, {"cfgScale": decimal.Decimal("7.5")}, "imageGenerationConfig.cfgScale"),
        (NOVA, {"cfgScale": 1j}, "imageGenerationConfig.cfgScale"),
        (NOVA, {"taskType": []}, "taskType"),
        (NOVA, {"max_retries": 1100}, "max_retries"),
        (NOVA, {"imageGenerationConfig": {1: 2}}, "imageGenerationConfig"),
    ],
)
def test_python_exceptions_become_one_gesso_error(aws, emulator, model, kwargs, param):
    error = refused(emulator, model, **{**aws, **kwargs})
    assert param in [v.path for v in error.violations], error


def test_a_huge_integer_model_is_an_unknown_model_not_a_value_error(aws):
    with pytest.raises(UnknownModelError, match="an integer of"):
        gesso.image_generation(10**5000, "otter", **aws)


def test_an_sts_endpoint_answering_garbage_is_an_authentication_error(emulator):
    class Garbage(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"<<<garbage")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(AuthenticationError, match="AssumeRole for role"):
            gesso.image_generation(
                NOVA, "otter", aws_role_name="arn:aws:iam::123456789012:role/r", aws_access_key_id="AKIDX",
                aws_secret_access_key="s", aws_sts_endpoint=f"http://127.0.0.1:{server.server_address[1]}",
                aws_region_name="us-east-1", aws_bedrock_runtime_endpoint=emulator.url,
            )  # fmt: skip
    finally:
        server.shutdown()
    assert len(emulator.requests) == 0


# -- class 2: sent, then rejected --------------------------------------------------------------------------


def test_integral_floats_are_sent_as_integers(aws, emulator):
    gesso.image_generation(NOVA, "otter", width=1024.0, height=512.0, numberOfImages=2.0, cfgScale=7.0, **aws)
    sent = emulator.requests[-1].body
    assert b'"width":1024,' in sent and b'"numberOfImages":2' in sent and b"1024.0" not in sent
    assert emulator.requests[-1].status == 200


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:bedrock:eu:bad:foundation-model/amazon.nova-canvas-v1:0",
        "arn:aws:bedrock:us-east-1:123:application-inference-profile/abc",
        "arn:aws:bedrock:us east 1::foundation-model/amazon.nova-canvas-v1:0",
        "arn:aws",
    ],
)
def test_malformed_arns_are_refused_locally(aws, emulator, arn):
    error = refused(emulator, NOVA, model_id=arn, **aws)
    assert error.param == "model_id" and "must be a Bedrock ARN" in error.message


# -- class 3: silently accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"response_format": ""}, "response_format"),
        ({"response_format": 0}, "response_format"),
        ({"model_id": ""}, "model_id"),
        ({"retry_budget": float("nan")}, "retry_budget"),
        ({"aws_secret_access_key": None, "aws_access_key_id": "AKIDONLY"}, "aws_secret_access_key"),
        ({"aws_access_key_id": None, "aws_secret_access_key": "secret-only"}, "aws_access_key_id"),
    ],
)
def test_values_that_were_silently_accepted_are_refused(aws, emulator, kwargs, param):
    error = refused(emulator, NOVA, **{**aws, **kwargs})
    assert param in [v.path for v in error.violations], error


# -- class 4: configuration errors retried as outages -----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"), [({"aws_region_name": "us east 1"}, "aws_region_name"), ({"timeout": float("nan")}, "timeout")]
)
def test_configuration_errors_are_400s_before_sending(aws, emulator, kwargs, param):
    error = refused(emulator, NOVA, **{**aws, **kwargs})
    assert error.status_code == 400 and param in [v.path for v in error.violations]


# -- class 5: the emulator answers 4xx, never 500, and keeps serving ---------------------------------------


def post(emulator, body: bytes, *, headers=None, model="amazon.nova-canvas-v1:0") -> tuple[int, dict]:
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    conn.request("POST", f"/model/{model}/invoke", body=body, headers={"Authorization": "Bearer k", **(headers or {})})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


@pytest.mark.parametrize(
    "body",
    [
        b'{"taskType":"TEXT_IMAGE","textToImageParams":{"text":"a \\ud800 b"}}',
        b'{"taskType":"TEXT_IMAGE","textToImageParams":{"text":"x"},"imageGenerationConfig":{"width":1024.0,"height":1024.0}}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe not json",
    ],
)
def test_the_emulator_answers_bad_bodies_with_400(emulator, body):
    status, answer = post(emulator, body)
    assert status == 400 and answer["message"].startswith("Malformed input request")
    assert post(emulator, json.dumps({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"}}).encode())[0] == 200


def test_the_emulator_refuses_the_id_arn_aws_with_400(emulator):
    assert post(emulator, b"{}", model="arn:aws")[0] == 400


@pytest.mark.parametrize("length", ["-1", "abc", "10000000000000"])
def test_the_emulator_answers_a_bad_content_length_and_keeps_serving(emulator, length):
    with socket.create_connection((emulator.host, emulator.port), timeout=10) as sock:
        sock.sendall(
            f"POST /model/amazon.nova-canvas-v1:0/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
            f"Content-Length: {length}\r\n\r\n{{}}".encode()
        )
        answer = sock.recv(4096).decode("latin-1")
    assert answer.startswith(("HTTP/1.1 400", "HTTP/1.1 413")), answer
    assert post(emulator, json.dumps({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"}}).encode())[0] == 200


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "error", "code": "Bad\r\nX-Injected: 1"},
        {"kind": "error", "code": "Ünïcode"},
        {"kind": "error", "status": 1000},
        {"kind": "error", "status": 200},
        {"kind": "latency", "seconds": "inf"},
        ["not", "an", "object"],
    ],
)
def test_the_fault_endpoint_refuses_what_would_break_later_answers(emulator, fault):
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    conn.request("POST", "/_gesso/faults", body=json.dumps(fault))
    response = conn.getresponse()
    assert response.status == 400, response.read()
    assert emulator.faults.list() == []


def test_the_emulator_bounds_what_it_records(emulator):
    emulator.record_bytes = 1 << 20
    big = json.dumps({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x" * 400_000}}).encode()
    for _ in range(10):
        post(emulator, big)
    assert sum(len(r.body) for r in emulator.requests) <= 1 << 20 and len(emulator.requests) >= 1


# -- class 6: secrets and image data never reach logs or messages -----------------------------------------

SECRETS = {
    "api_key": "bedrock-api-key-SECRET-111",
    "aws_secret_access_key": "secret-access-key-SECRET-222",
    "aws_session_token": "session-token-SECRET-333",
    "aws_external_id": "external-id-SECRET-444",
    "aws_web_identity_token": "web-identity-SECRET-555",
}


def test_debug_logs_carry_no_secret_and_no_image_data(emulator, caplog):
    import re

    caplog.set_level(logging.DEBUG)
    image = picture(512, 512)
    calls = [
        {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": SECRETS["aws_secret_access_key"],
         "aws_session_token": SECRETS["aws_session_token"]},
        {"api_key": SECRETS["api_key"], "aws_bedrock_runtime_endpoint": "https://127.0.0.1:1"},
        {"aws_role_name": "arn:aws:iam::123456789012:role/r", "aws_external_id": SECRETS["aws_external_id"],
         "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": SECRETS["aws_secret_access_key"],
         "aws_sts_endpoint": "http://127.0.0.1:1"},
        {"aws_role_name": "arn:aws:iam::123456789012:role/r", "aws_web_identity_token": SECRETS["aws_web_identity_token"],
         "aws_sts_endpoint": "http://127.0.0.1:1"},
    ]  # fmt: skip
    for extra in calls:
        kwargs = {"aws_bedrock_runtime_endpoint": emulator.url, "aws_region_name": "us-east-1", "max_retries": 0}
        kwargs.update(extra)
        with pytest.raises(GessoError) as info:
            gesso.image_generation(NOVA, "otter", taskType="IMAGE_VARIATION", images=[image], cfgScale=99, **kwargs)
        kwargs["cfgScale"] = 7  # now valid: the call is sent (and fails or succeeds)
        try:
            gesso.image_generation(NOVA, "otter", taskType="IMAGE_VARIATION", images=[image], **kwargs)
        except GessoError as exc:
            info = exc
        assert not any(secret in str(info) for secret in SECRETS.values())
    from gesso_bedrock.emulator.faults import ANSWERS

    for kind in ANSWERS:  # every error kind the emulator can answer with
        emulator.inject(kind, count=1)
        with pytest.raises(GessoError) as info:
            gesso.image_generation(
                NOVA, "otter", taskType="IMAGE_VARIATION", images=[image], max_retries=0, aws_region_name="us-east-1",
                aws_bedrock_runtime_endpoint=emulator.url, aws_access_key_id="AKIDEXAMPLE",
                aws_secret_access_key=SECRETS["aws_secret_access_key"], aws_session_token=SECRETS["aws_session_token"],
                guardrailIdentifier="abc123def", guardrailVersion="1",
            )  # fmt: skip
        assert not any(secret in str(info.value) for secret in SECRETS.values())
        emulator.faults.clear()
    lines = [record.getMessage() for record in caplog.records]
    assert any("botocore" in r.name for r in caplog.records), "DEBUG logging of botocore was on"
    for line in lines:
        assert not any(secret in line for secret in SECRETS.values()), line[:300]
        assert not re.search(r"[A-Za-z0-9+/]{65,}", line), line[:300]


def test_the_emulator_record_repr_hides_the_bearer_key(emulator):
    post(emulator, b"{}", headers={"Authorization": "Bearer very-secret-key"})
    assert "very-secret-key" not in repr(emulator.requests[-1])


# -- class 7: no unbounded work before a refusal -----------------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` (its data is one compressed blank run)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width * 3 + 1) * 64, 9)  # far fewer rows than declared: never decoded
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_an_image_refused_by_its_header_is_never_decoded(aws, emulator, monkeypatch):
    from gesso import inputs

    decoded = []
    monkeypatch.setattr(inputs, "check_pixels", lambda *a, **k: decoded.append(a) or [])
    error = refused(emulator, TITAN, taskType="IMAGE_VARIATION", images=[png_declaring(12000, 12000)], **aws)
    assert "at most 1408 pixels" in error.message and decoded == []


def test_a_decompression_bomb_is_refused_before_decoding():
    from gesso import inputs

    image, _ = inputs.load(png_declaring(12000, 12000), "image")
    assert image is not None
    pixels, problems = inputs.open_pixels(image, "image")
    assert pixels is None and "too large to check" in problems[0].message


def test_a_base64_data_url_of_a_bomb_is_refused_the_same_way(aws, emulator):
    data = "data:image/png;base64," + base64.b64encode(png_declaring(9000, 9000)).decode()
    error = refused(emulator, NOVA, taskType="IMAGE_VARIATION", images=[data], **aws)
    assert "imageVariationParams.images[0]" in error.message


@pytest.mark.parametrize(
    "model_id", ["stability.sd3-5-large-v1:0", "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB", "amazon.nova-canvas"]
)
def test_a_plain_model_id_must_name_the_same_model(aws, emulator, model_id):
    # found by the property tests: an id Bedrock does not know, or another model's (whose body differs), was sent
    error = refused(emulator, NOVA, model_id=model_id, **aws)
    assert error.param == "model_id" and "is not an id of amazon.nova-canvas-v1:0" in error.message


def test_a_profile_id_of_the_same_model_is_a_fine_model_id(aws, emulator):
    gesso.image_generation(NOVA, "otter", model_id="us.amazon.nova-canvas-v1:0", **aws)
    assert emulator.requests[-1].model_id == "us.amazon.nova-canvas-v1:0"
