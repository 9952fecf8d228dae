"""Property tests through the proxy: the SDK's bad-input strategies (``test_properties.py``, imported, not
copied) sent as JSON to ``/v1/images/generations`` and as multipart to ``/v1/images/edits`` and
``/v1/images/variations`` of a real proxy (uvicorn on loopback) whose deployments are on an in-process emulator.

Every answer is a 2xx with images, or OpenAI's error shape (``{"error": {message, type, param, code}}``) with
a 4xx status; and an answer that is an error means nothing reached the emulator (bad input is refused before
anything is sent; the emulator has no faults here), except for the emulator's content-filter marker words.

CI size: ``GESSO_FUZZ_EXAMPLES`` examples per test (default 100); set it higher by hand for a longer run, e.g.
``GESSO_FUZZ_EXAMPLES=2000 pytest tests/test_proxy_properties.py``. ``COUNTS`` holds how many examples of
each route were answered 2xx and 4xx (printed at the end of the module, for RELIABILITY.md).
"""

from __future__ import annotations

import base64
import collections
import decimal
import http.client
import json
import os
import pathlib
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import MODEL_IDS, PNG, image_values, models, names, prompts, stability_calls, task_calls, values
from test_proxy import deployment, serving

from gesso.proxy import config as proxy_config
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator

EXAMPLES = int(os.environ.get("GESSO_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip

#: route -> answer ("200", or the status and error code) -> examples, for RELIABILITY.md
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module")
def emu():
    with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def proxy(emu):
    """A deployment per model id the emulator knows, each named as the SDK names the model
    (``bedrock/<id>``), so the SDK's model strategy reaches a configured name, a missing one, or no string."""
    deployments = [deployment(f"bedrock/{mid}", emu, mid, model=f"bedrock/{mid}", max_retries=0) for mid in MODEL_IDS]
    config = proxy_config.parse({"model_list": deployments})
    # no proxy_config.check(config): it prepares a text-only call of each deployment, which the models that
    # need an image (the Stability edit services) refuse
    with serving(config) as served:
        yield served
    print(f"\nproxy property examples: {json.dumps(COUNTS, sort_keys=True)}")


@pytest.fixture(autouse=True)
def no_http_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


# -- the wire forms of the SDK's values -------------------------------------------------------------------


def to_json(value) -> str:
    """``value`` as JSON text, as a client would send it: bytes as base64, a path as its text, a value JSON
    has no form for as its ``str``; NaN and the infinities as Python writes them (``NaN``, not JSON: the proxy
    must refuse or take them cleanly), and integers past Python's digit limit as their digits."""

    def plain(v):
        if isinstance(v, bool) or v is None or isinstance(v, (str, float)):
            return v
        if isinstance(v, int):
            return v if abs(v) < 10**4000 else _Big(v)
        if isinstance(v, (bytes, bytearray)):
            return base64.b64encode(v).decode()
        if isinstance(v, decimal.Decimal):
            return float(v)
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return str(v)  # a Path, complex, frozenset, object()

    text = json.dumps(plain(value), default=lambda big: big.marker)
    for big in _Big.made:
        text = text.replace(json.dumps(big.marker), big.digits)
    _Big.made.clear()
    return text


class _Big:
    """An integer too long for ``str()`` (Python's 4,300-digit limit), written out through ``Decimal``."""

    made: list[_Big] = []

    def __init__(self, value: int) -> None:
        self.marker = f"__big_{uuid.uuid4().hex}__"
        self.digits = format(decimal.Decimal(value), "f")
        _Big.made.append(self)


def multipart(parts: list[tuple[str, str | bytes, bool]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of ``(name, value, is_file)`` parts; text as UTF-8, lone surrogates kept
    (``surrogatepass``: not valid UTF-8, as a broken client might send)."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value, is_file in parts:
        data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"' + ('; filename="image.png"' if is_file else "")
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if is_file:
            out += b"Content-Type: image/png\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _field_text(value) -> str:
    return value if isinstance(value, str) else to_json(value)


IMAGE_NAMES = ("image", "images", "init_image", "sourceImage", "referenceImage", "style_image", "conditionImage")
MASK_NAMES = ("mask", "maskImage", "mask_image")


def form_parts(model, prompt, kwargs: dict, default_image: bool) -> list[tuple[str, str | bytes, bool]]:
    """The SDK's call as OpenAI's multipart form: its first image argument as ``image`` (a list as ``image[]``),
    its first mask as ``mask``, and every other argument as a text field (JSON for what is not text)."""
    kwargs = dict(kwargs)
    parts: list[tuple[str, str | bytes, bool]] = []
    image = next((kwargs.pop(n) for n in IMAGE_NAMES if n in kwargs), PNG if default_image else None)
    mask = next((kwargs.pop(n) for n in MASK_NAMES if n in kwargs), None)
    for name, value in (("image", image), ("mask", mask)):
        if value is None:
            continue
        items = value if isinstance(value, list) and name == "image" else [value]
        for item in items:
            field = "image[]" if name == "image" and isinstance(value, list) else name
            if isinstance(item, bytes):
                parts.append((field, item, True))
            else:
                parts.append((field, item if isinstance(item, str) else _field_text(item), False))
    if model is not None:
        parts.append(("model", _field_text(model), False))
    if prompt is not None:
        parts.append(("prompt", _field_text(prompt), False))
    for name, value in kwargs.items():
        parts.append((name, _field_text(value), False))
    return parts


# -- the check ----------------------------------------------------------------------------------------------


def send(proxy, emu, path: str, body: bytes, content_type: str) -> int:
    """POST ``body``; the answer is images or a well-formed 4xx, and a 4xx sent nothing to the emulator."""
    before = emu.stats()["requests"]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    sent = emu.stats()["requests"] - before
    status = response.status
    assert status < 500, f"{status}: {payload[:500]!r}"
    assert response.getheader("content-type", "").startswith("application/json")
    answer = json.loads(payload)
    if 200 <= status < 300:
        assert isinstance(answer["data"], list) and answer["data"], answer
        assert all(item.get("b64_json") for item in answer["data"])
        COUNTS[path]["200"] += 1
        return status
    assert 400 <= status < 500, status
    assert set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "param", "code"}, answer
    error = answer["error"]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert "Traceback" not in error["message"]
    assert response.getheader("x-request-id")
    # a refusal comes before anything is sent, unless the prompt asked the emulated content filter to act
    marked = b"emulator:block" in body
    # (the provider's content filter: OpenAI's invalid_request_error with code content_policy_violation)
    assert not sent or (marked and error["code"] == "content_policy_violation"), f"sent {sent}, then {status}: {error}"
    COUNTS[path][f"{status} {error['code'] or error['type']}"] += 1
    return status


#: the SDK's calls: near-valid Nova/Titan tasks, near-valid Stability calls, and anything at all
calls = st.one_of(
    task_calls(),
    stability_calls(),
    st.tuples(models, prompts, st.dictionaries(names, values, max_size=5)),
)


@FUZZ
@given(call=calls, prompt_null=st.booleans())
def test_generations_answer_images_or_a_4xx_before_sending(proxy, emu, call, prompt_null):
    model, prompt, kwargs = call
    body = {**kwargs, "model": model}
    if prompt is not None or prompt_null:
        body["prompt"] = prompt
    send(proxy, emu, "/v1/images/generations", to_json(body).encode(), "application/json")


@FUZZ
@given(call=calls, default_image=st.booleans(), extra=st.lists(image_values, max_size=2))
def test_edits_answer_images_or_a_4xx_before_sending(proxy, emu, call, default_image, extra):
    model, prompt, kwargs = call
    parts = form_parts(model, prompt, kwargs, default_image)
    parts += [("image[]", image, True) for image in extra if isinstance(image, bytes)]
    body, content_type = multipart(parts)
    send(proxy, emu, "/v1/images/edits", body, content_type)


@FUZZ
@given(call=calls, default_image=st.booleans())
def test_variations_answer_images_or_a_4xx_before_sending(proxy, emu, call, default_image):
    model, prompt, kwargs = call
    body, content_type = multipart(form_parts(model, prompt, kwargs, default_image))
    send(proxy, emu, "/v1/images/variations", body, content_type)


@FUZZ
@given(model=st.sampled_from(["bedrock/amazon.nova-canvas-v1:0", "bedrock/amazon.titan-image-generator-v2:0"]),
       body=st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode)))  # fmt: skip
def test_raw_bodies_are_answered_with_a_4xx_before_sending(proxy, emu, model, body):
    """Bytes that are not the JSON or multipart they claim to be: every route refuses them, sending nothing."""
    for path, content_type in (
        ("/v1/images/generations", "application/json"),
        ("/v1/images/edits", "multipart/form-data; boundary=x"),
        ("/v1/images/variations", "multipart/form-data; boundary=x"),
    ):
        status = send(proxy, emu, path, body, content_type)
        assert status >= 400 or path.endswith("generations"), body


def test_to_json_writes_what_the_wire_carries():
    assert json.loads(to_json({"a": b"\x89PNG", "b": pathlib.Path("/x"), "c": decimal.Decimal("7.5")})) == {
        "a": "iVBORw==", "b": "/x", "c": 7.5,
    }  # fmt: skip
    assert to_json([10**5000]) == "[1" + "0" * 5000 + "]"
    assert to_json(float("nan")) == "NaN"
