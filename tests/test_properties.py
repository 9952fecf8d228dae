"""Property tests: arbitrary calls of the SDK and arbitrary requests to the emulator.

For every family and task: arbitrary kwargs (near-miss names, every JSON and Python type, NaN and
infinities, huge integers, odd Unicode), sizes, images (not images, truncated, 1x1, huge header dimensions,
RGBA, 16-bit, greyscale, CMYK JPEG), model strings and transport options. Each call either succeeds against
the emulator or raises a GessoError; a call the emulator refused means gesso sent a request it should have
refused itself, so every refusal must come before anything is sent. The emulator answers every request with
a Bedrock-shaped 2xx or 4xx and keeps serving.

The ``ci`` profile (the default) runs a few thousand examples in under a minute; ``HYPOTHESIS_PROFILE=long``
runs many more.
"""

from __future__ import annotations

import asyncio
import base64
import decimal
import http.client
import io
import json
import os
import pathlib
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gesso
from gesso import plugins
from gesso.errors import ContentFilteredError, GessoError, ModelIdWarning, ModelLifecycleWarning
from gesso.params import property_names
from gesso.types import ImageResponse
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator

settings.register_profile(
    "ci", max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
settings.register_profile("long", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def emu():
    with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as emulator:
        yield emulator


def _models() -> list:
    plugins.reset()
    return plugins.get_registry().models


MODELS = _models()
MODEL_IDS = sorted({mid for m in MODELS for mid in plugins.get_registry().provider_of(m).usable_ids(m)})


def _names(schema, found: set[str], depth: int = 0) -> set[str]:
    """Every property name anywhere in a schema (flat names reach nested fields in gesso)."""
    if depth > 6 or not isinstance(schema, dict):
        return found
    for key, sub in schema.items():
        if key == "properties" and isinstance(sub, dict):
            found.update(sub)
            for value in sub.values():
                _names(value, found, depth + 1)
        elif isinstance(sub, (dict, list)):
            for value in sub if isinstance(sub, list) else [sub]:
                _names(value, found, depth + 1)
    return found


PARAM_NAMES = sorted(
    (set().union(*(_names(m.param_schema, set()) for m in MODELS)) | {"snap_size", "max_fanout"}) - {"prompt"}
)
CALL_NAMES = ["n", "size", "quality", "response_format", "style", "user", "timeout", "model_id", "base_model",
              "aws_region_name", "max_retries", "retry_budget", "connect_timeout", "ssl_verify", "guardrailIdentifier",
              "guardrailVersion", "trace", "extra_headers", "api_key", "aws_session_token", "aws_profile_name"]  # fmt: skip


# -- images -----------------------------------------------------------------------------------------------


def _png(width, height, mode="RGB", fmt="PNG", **save) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, format=fmt, **save)
    return out.getvalue()


def _declaring(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))  # fmt: skip


IMAGES = [
    _png(512, 512), _png(1024, 1024), _png(1, 1), _png(64, 64, "RGBA"), _png(320, 320, "L"), _png(320, 320, "I;16"),
    _png(512, 512, "CMYK", "JPEG"), _png(512, 384, fmt="JPEG", quality=95), _png(512, 512)[:100], b"hello",
    _declaring(12000, 12000), _declaring(0, 5), b"",
]  # fmt: skip
image_values = st.sampled_from(IMAGES).flatmap(
    lambda data: st.sampled_from(
        [data, base64.b64encode(data).decode(), "data:image/png;base64," + base64.b64encode(data).decode(),
         pathlib.Path("/no/such/image.png")]
    )
)  # fmt: skip

# -- values -----------------------------------------------------------------------------------------------

odd_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "\ud800", "\x00", "a\r\nb", "ＡＢＣ", "🦦" * 3, "x" * 2000, "os.environ/GESSO_NOPE", "auto",
                     "1024x1024", "0x0", "512X768", "standard", "premium", "hd", "TEXT_IMAGE", "INPAINTING", "DRAFT"]),
)  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.sampled_from([0, 1, 2, 5, 11, 1024, 2**31, 10**30, 1 << 1328]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1024.0, 2.0, 0.5, -0.0]), odd_text,
    st.sampled_from([decimal.Decimal("7.5"), 1j, b"bytes", frozenset(), object()]),
)  # fmt: skip
json_like = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=5), inner, max_size=4)),
    max_leaves=8,
)  # fmt: skip
values = st.one_of(json_like, image_values, st.lists(image_values, max_size=6))


def _near_miss(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name.lower(), name.upper(), name + "s", name[:-1] or name, name.replace("_", "")])


names = st.one_of(
    st.sampled_from(PARAM_NAMES), st.sampled_from(CALL_NAMES), st.sampled_from(PARAM_NAMES).flatmap(_near_miss),
    st.sampled_from(["aws_region", "api_base", "extra_body", "metadata", "negative_prompt", "mask", "prompt2"]),
)  # fmt: skip
models = st.one_of(
    st.sampled_from(MODEL_IDS).map(lambda mid: f"bedrock/{mid}"),
    st.sampled_from(MODEL_IDS),
    st.sampled_from(["bedrock/stability.stability.sd3-5-large-v1:0", "openai/dall-e-3", "bedrock/", "", "arn:aws",
                     "bedrock/arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0", "bedrock/nope.x"]),
    st.one_of(st.none(), st.integers(), st.just(10**5000)),
)  # fmt: skip
prompts = st.one_of(st.none(), odd_text, st.integers())


def _call(emulator, model, prompt, kwargs, *, run=gesso.image_generation):
    base = {"aws_bedrock_runtime_endpoint": emulator.url, "aws_access_key_id": EMULATOR_ACCESS_KEY,
            "aws_secret_access_key": EMULATOR_SECRET_KEY, "aws_region_name": "us-east-1", "max_retries": 0}  # fmt: skip
    # a generated call may replace any of these: then it must still fail cleanly
    call = {**base, **kwargs}
    timeout = call.get("timeout")
    if type(timeout) in (int, float) and 0 < timeout < 1:  # (NaN and huge ints compare False)
        call["timeout"] = 1  # a generated sub-second read timeout would time out a valid call, by design
    before = emulator.stats()["requests"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelLifecycleWarning)
        warnings.simplefilter("ignore", ModelIdWarning)
        try:
            result = run(model, prompt, **call)
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
        except GessoError as error:
            sent = emulator.stats()["requests"] - before
            # the emulator has no faults here: a request it refused, or failed on, is one gesso sent but
            # should have refused itself (or an emulator defect); a refusal comes before sending, as a 4xx
            # (unless the prompt asked the emulated content filter to act: that is its job)
            marked = "emulator:block" in repr((prompt, kwargs))
            assert not sent or (marked and isinstance(error, ContentFilteredError)), f"sent, then failed: {error!r}"
            assert 400 <= error.status_code < 500, f"a refusal must be a 4xx: {error!r}"
            json.dumps(error.to_dict())
            return error
    assert isinstance(result, ImageResponse) and result.data
    json.dumps(result.to_dict())
    return result


@given(model=models, prompt=prompts, kwargs=st.dictionaries(names, values, max_size=5))
def test_any_call_succeeds_or_is_one_gesso_error_before_sending(emu, model, prompt, kwargs):
    _call(emu, model, prompt, kwargs)


PNG = _png(512, 512)
MASK = _png(512, 512, "L")  # all black: edit everything
VALID_TASKS = {
    "TEXT_IMAGE": ("a lighthouse at dusk", {}),
    "COLOR_GUIDED_GENERATION": ("a lighthouse at dusk", {"colors": ["#FF0000", "#00FF00"]}),
    "IMAGE_VARIATION": ("in autumn", {"images": [PNG]}),
    "INPAINTING": ("a window", {"image": PNG, "maskPrompt": "the door"}),
    "OUTPAINTING": ("on a beach", {"image": PNG, "maskImage": MASK}),
    "BACKGROUND_REMOVAL": (None, {"image": PNG}),
    "VIRTUAL_TRY_ON": (None, {"sourceImage": PNG, "referenceImage": PNG, "maskType": "GARMENT",
                              "garmentBasedMask": {"garmentClass": "UPPER_BODY"}}),
}  # fmt: skip
TASKS = {
    "amazon.nova-canvas-v1:0": list(VALID_TASKS),
    "amazon.titan-image-generator-v2:0": [t for t in VALID_TASKS if t != "VIRTUAL_TRY_ON"],
    "amazon.titan-image-generator-v1": ["TEXT_IMAGE", "IMAGE_VARIATION", "INPAINTING", "OUTPAINTING"],
}
#: plausible values, valid or nearly, for the fields a mutation touches
NEAR = {
    "image": image_values, "images": st.lists(image_values, min_size=0, max_size=6), "maskImage": image_values,
    "conditionImage": image_values, "referenceImage": image_values, "sourceImage": image_values,
    "maskPrompt": odd_text, "negativeText": odd_text, "text": odd_text,
    "colors": st.lists(st.sampled_from(["#FF0000", "#00ff00", "red", "#12345"]), max_size=11),
    "similarityStrength": st.floats(0, 1.2), "controlStrength": st.floats(-0.1, 1.1), "cfgScale": st.floats(0, 12),
    "maskType": st.sampled_from(["IMAGE", "GARMENT", "PROMPT", "NONE"]),
    "outPaintingMode": st.sampled_from(["DEFAULT", "PRECISE", "x"]), "seed": st.one_of(st.integers(-1, 2**32), st.floats()),
    "size": st.sampled_from(["512x512", "1024x1024", "1280x720", "0x0", "auto", "4096x4096", "320x1280", "1024.5x2"]),
    "n": st.integers(-1, 12), "quality": st.sampled_from(["hd", "standard", "premium", "ultra"]),
    "snap_size": st.one_of(st.booleans(), st.just("yes")), "max_fanout": st.integers(-1, 12),
    "strength": st.floats(-0.1, 1.1), "mode": st.sampled_from(["image-to-image", "text-to-image", "x"]),
    "init_image": image_values, "style_image": image_values, "mask": image_values, "mask_image": image_values,
    "left": st.integers(-1, 2100), "output_format": st.sampled_from(["png", "jpeg", "webp", "gif"]),
}  # fmt: skip


def _mutate(draw, kwargs: dict, fields: list[str]) -> dict:
    """A valid call with zero to two fields changed or added: often still valid, often just not."""
    for field in draw(
        st.lists(st.sampled_from(sorted({*fields, "size", "n", "quality", "seed"})), unique=True, max_size=2)
    ):
        kwargs[field] = draw(NEAR.get(field, values))
    return kwargs


@st.composite
def task_calls(draw):
    """Nova and Titan: a valid call for one task, mutated a little."""
    model = draw(st.sampled_from(sorted(TASKS)))
    task = draw(st.sampled_from(TASKS[model]))
    prompt, kwargs = VALID_TASKS[task]
    spec = plugins.get_registry().get(model)
    fields = [n for obj in property_names(spec.param_schema) for n in property_names(spec.param_schema, obj)]
    kwargs = _mutate(draw, {"taskType": task, **kwargs}, fields)
    if draw(st.integers(0, 9)) == 0:
        prompt = draw(st.one_of(st.none(), odd_text))
    return f"bedrock/{model}", prompt, kwargs


@given(call=task_calls())
def test_amazon_tasks_near_valid_calls(emu, call):
    _call(emu, *call)


STABILITY = sorted(mid for mid in MODEL_IDS if "stability" in mid)
STABILITY_VALID = {"image": PNG, "init_image": PNG, "style_image": PNG, "select_prompt": "the car",
                   "search_prompt": "the car"}  # fmt: skip


@st.composite
def stability_calls(draw):
    """Stability: the fields each model requires, valid, then mutated a little."""
    model = draw(st.sampled_from(STABILITY))
    spec = plugins.get_registry().get(model)
    schema = spec.param_schema
    fields = [f for f in property_names(schema) if f != "prompt"]
    kwargs = {f: STABILITY_VALID[f] for f in schema.get("required", ()) if f in STABILITY_VALID}
    if "outpaint" in model:
        kwargs["left"] = 128
    if "image" in kwargs and "mode" in fields:
        kwargs["strength"] = 0.5
    prompt = "a lighthouse at dusk" if "prompt" in fields or "prompt" in property_names(schema) else None
    kwargs = _mutate(draw, kwargs, fields)
    if draw(st.integers(0, 9)) == 0:
        prompt = draw(st.one_of(st.none(), odd_text))
    return f"bedrock/{model}", prompt, kwargs


@given(call=stability_calls())
def test_stability_near_valid_calls(emu, call):
    _call(emu, *call)


@settings(max_examples=60)
@given(call=task_calls())
def test_the_async_entry_point_behaves_the_same(emu, call):
    _call(emu, *call, run=gesso.aimage_generation)


# -- the emulator's HTTP surface ----------------------------------------------------------------------------

raw_bodies = st.one_of(
    st.binary(max_size=200),
    json_like.filter(lambda v: not isinstance(v, (decimal.Decimal, complex, bytes, frozenset))).map(
        lambda v: json.dumps(v, default=str).encode()
    ),
    st.sampled_from(
        [
            b"[" * 5000 + b"]" * 5000,
            b'{"taskType":"TEXT_IMAGE","textToImageParams":{"text":"\\udfff"}}',
            b"null",
            b"[]",
            b"1",
            b'"x"',
            b"{}",
        ]
    ),
)
paths = st.one_of(
    st.sampled_from(MODEL_IDS).map(lambda mid: f"/model/{mid}/invoke"),
    st.text(alphabet="abc:/%.-_0123456789", max_size=30).map(lambda t: f"/model/{t}/invoke"),
    st.sampled_from(["/", "/model//invoke", "/model/arn:aws/invoke", "/_gesso/nope", "/model/x/converse"]),
)


@given(path=paths, body=raw_bodies, method=st.sampled_from(["POST", "GET", "PUT"]))
def test_the_emulator_answers_every_request_with_a_bedrock_shaped_2xx_or_4xx(emu, path, body, method):
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=30)
    conn.request(method, path.replace(" ", "%20"), body=body, headers={"Authorization": "Bearer k"})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    assert response.status < 500, payload[:200]
    answer = json.loads(payload)
    if response.status >= 400 and not path.startswith("/_gesso/"):
        assert isinstance(answer["message"], str) and response.getheader("x-amzn-ErrorType")
