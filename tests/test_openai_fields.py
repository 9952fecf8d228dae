"""What OpenAI-compatible clients send today, and the rules every value meets as it will be sent.

OpenAI's gpt-image fields (OpenAI API reference, Images, "Create image" and "Create image edit":
https://platform.openai.com/docs/api-reference/images/create): ``background`` auto|opaque|transparent,
``moderation`` auto|low, ``output_format``, ``output_compression`` ("defaults to 100"), ``quality``
auto|low|medium|high, ``size`` auto, ``stream``, ``partial_images`` 0-3, and on edits ``input_fidelity``.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
import warnings

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_proxy import assert_error, deployment, serving

import gesso
from gesso.errors import InvalidRequestError
from gesso.proxy import config as proxy_config
from helpers import multipart, picture

NOVA = "bedrock/amazon.nova-canvas-v1:0"
TITAN = "bedrock/amazon.titan-image-generator-v2:0"
SD35 = "bedrock/stability.sd3-5-large-v1:0"
SDXL = "bedrock/stability.stable-diffusion-xl-v1"
HUGE = 10**5000


def refused(call, **kwargs) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        call(**kwargs)
    return info.value


# -- huge integers and floats: every check sees the value as it will be sent ----------------------------


@pytest.mark.parametrize(
    ("kwargs", "path", "fragment"),
    [
        ({"size": HUGE}, "size", 'must be "WIDTHxHEIGHT"'),
        ({"response_format": HUGE}, "response_format", "must be one of: b64_json, url"),
        ({"seed": HUGE}, "imageGenerationConfig.seed", "must be between 0 and 2147483646"),
        ({"cfgScale": -HUGE}, "imageGenerationConfig.cfgScale", "must be between 1.1 and 10"),
        ({"imageGenerationConfig": {"width": HUGE, "height": 1024}}, "imageGenerationConfig.width", "between 320"),
        ({"n": HUGE}, "n", "at most 1,000"),
        ({"output_compression": HUGE, "output_format": "jpeg"}, "output_compression", "at most 100"),
    ],
)
def test_huge_integers_are_named_not_raised(aws, emulator, kwargs, path, fragment):
    error = refused(gesso.image_generation, model=NOVA, prompt="x", **kwargs, **aws)
    assert [v for v in error.violations if v.path == path and fragment in v.message], str(error)
    assert "an integer of 16610 bits" in str(error) and not emulator.requests


def test_a_huge_integer_without_a_range_names_the_widest_a_provider_reads(aws, emulator):
    error = refused(gesso.image_generation, model=TITAN, prompt="x", textToImageParams={"style": HUGE}, **aws)
    assert "must be" in str(error) and "16610 bits" in str(error) and not emulator.requests


@pytest.mark.parametrize(
    ("model", "kwargs", "fragment"),
    [
        (NOVA, {"imageGenerationConfig": {"width": 4096.0, "height": 4096.0}}, "fewer than 4,194,304 pixels"),
        (TITAN, {"width": 1000.0, "height": 1000.0}, "1000x1000 is not a Titan size"),
        (SDXL, {"width": 1000.0, "height": 1024.0}, "1000x1024 is not an SDXL size on Bedrock"),
    ],
)
def test_float_sizes_meet_the_rules_integers_meet(aws, emulator, model, kwargs, fragment):
    assert fragment in str(refused(gesso.image_generation, model=model, prompt="x", **kwargs, **aws))
    assert not emulator.requests  # refused before sending, as the same values as integers are


def test_an_integral_float_is_sent_as_the_integer_it_was_checked_as(aws, emulator):
    resp = gesso.image_generation(NOVA, "x", imageGenerationConfig={"width": 512.0, "height": 768.0}, n=1.0, **aws)
    assert resp.size == "512x768" and len(resp.data) == 1
    assert emulator.requests[-1].json()["imageGenerationConfig"] == {"width": 512, "height": 768, "numberOfImages": 1}


# -- output_compression: OpenAI's default is 100 ---------------------------------------------------------


def _quantization(b64: str) -> dict:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.quantization


def test_output_compression_defaults_to_100_as_openai_documents(aws, emulator):
    default = gesso.image_generation(NOVA, "x", size="512x512", output_format="jpeg", **aws).data[0].b64_json
    hundred = (
        gesso.image_generation(NOVA, "x", size="512x512", output_format="jpeg", output_compression=100, **aws)
        .data[0]
        .b64_json
    )
    assert default == hundred
    assert all(value == 1 for table in _quantization(default).values() for value in table)  # quality 100
    lower = gesso.image_generation(NOVA, "x", size="512x512", output_format="jpeg", output_compression=75, **aws)
    assert max(max(table) for table in _quantization(lower.data[0].b64_json).values()) > 1


# -- OpenAI's gpt-image fields ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", [NOVA, TITAN, SD35])
def test_gpt_image_defaults_are_each_models_defaults(aws, emulator, model):
    resp = gesso.image_generation(
        model, "x", n=1, background="auto", moderation="auto", output_format="png", quality="auto", size="auto",
        stream=False, partial_images=0, **aws,
    )  # fmt: skip
    assert len(resp.data) == 1 and resp.output_format == "png" and not resp.warnings
    body = emulator.requests[-1].json()
    for field in ("background", "moderation", "stream", "partial_images", "quality", "size"):
        assert field not in body and field not in body.get("imageGenerationConfig", {})


def test_an_opaque_background_is_what_every_model_makes(aws, emulator):
    assert gesso.image_generation(NOVA, "x", background="opaque", **aws).data


def test_a_transparent_background_names_the_models_that_remove_one(aws, emulator):
    message = str(refused(gesso.image_generation, model=SD35, prompt="x", background="transparent", **aws))
    assert "background: stability.sd3-5-large-v1:0 makes opaque images only (auto, opaque)" in message
    for remover in ("amazon.nova-canvas-v1:0", "amazon.titan-image-generator-v2:0", "remove-background"):
        assert remover in message
    assert not emulator.requests


def test_moderation_low_is_accepted_and_the_response_says_it_was_not_applied(aws, emulator):
    resp = gesso.image_generation(NOVA, "x", moderation="low", **aws)
    assert resp.warnings == (
        "moderation low was not applied: amazon.nova-canvas-v1:0's provider filters content by its own rules",
    )


@pytest.mark.parametrize(
    ("kwargs", "path", "fragment"),
    [
        ({"stream": True}, "stream", "returns its images whole, in one response: leave stream out"),
        ({"stream": "yes"}, "stream", "must be true or false"),
        ({"partial_images": 2}, "partial_images", "cannot stream partial images"),
        ({"partial_images": 4}, "partial_images", "must be an integer from 0 to 3"),
        ({"background": "clear"}, "background", "must be one of: auto, opaque, transparent"),
        ({"moderation": "none"}, "moderation", "must be one of: auto, low"),
        ({"input_fidelity": "high"}, "input_fidelity", "has no input fidelity setting"),
        ({"snap_size": "yes"}, "snap_size", "must be true or false"),
    ],
)
def test_gpt_image_fields_no_model_here_has_are_one_clear_error(aws, emulator, kwargs, path, fragment):
    error = refused(gesso.image_generation, model=NOVA, prompt="x", **kwargs, **aws)
    assert [v.path for v in error.violations] == [path] and fragment in str(error)
    assert not emulator.requests


def test_quality_auto_is_the_default_on_a_model_without_quality_levels(aws, emulator):
    assert gesso.image_generation(SD35, "x", quality="auto", **aws).data
    assert "quality" in str(refused(gesso.image_generation, model=SD35, prompt="x", quality="high", **aws))


# -- edits take size: the input's own, or auto -------------------------------------------------------------


SRC = picture(512, 384, (200, 60, 60))


@pytest.mark.parametrize("size", ["512x384", "auto"])
def test_an_edit_takes_the_input_images_size(aws, emulator, size):
    resp = gesso.image_edit(NOVA, SRC, "a red barn", mask=None, size=size, maskPrompt="barn", **aws)
    assert resp.size == "512x384"
    assert "width" not in emulator.requests[-1].json().get("imageGenerationConfig", {})


@pytest.mark.parametrize(
    ("model", "kwargs"),
    [
        (NOVA, {"maskPrompt": "barn"}),
        (NOVA, {"taskType": "BACKGROUND_REMOVAL"}),
        ("bedrock/us.stability.stable-image-erase-object-v1:0", {}),
    ],
)
def test_an_edit_with_another_size_names_the_inputs_size(aws, emulator, model, kwargs):
    prompt = None if kwargs.get("taskType") or "erase" in model else "a red barn"
    error = refused(gesso.image_edit, model=model, image=SRC, prompt=prompt, size="1024x1024", **kwargs, **aws)
    assert "the output takes the input image's size, 512x384; give size 512x384 or auto" in str(error)
    assert not emulator.requests


def test_a_titan_edit_takes_its_inputs_size_even_one_outside_its_table(aws, emulator):
    source = picture(1000, 700)
    resp = gesso.image_edit(TITAN, source, "a red barn", size="1000x700", maskPrompt="barn", **aws)
    assert resp.size == "1000x700" and "width" not in emulator.requests[-1].json().get("imageGenerationConfig", {})
    error = refused(gesso.image_edit, model=TITAN, image=source, prompt="x", size="1000x1000", maskPrompt="barn", **aws)
    assert "1000x1000 is not a Titan size" in str(error)


def test_background_removal_takes_n_1_as_what_it_does(aws, emulator):
    resp = gesso.image_edit(NOVA, SRC, None, taskType="BACKGROUND_REMOVAL", n=1, size="512x384", **aws)
    assert len(resp.data) == 1


# -- one size rule: refused naming the nearest, or snapped with snap_size ------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "nearest", "sent"),
    [
        (NOVA, "1000x1000", "1008x1008", {"width": 1008, "height": 1008}),
        (TITAN, "1280x720", "1152x640", {"width": 1152, "height": 640}),
        (SD35, "1000x300", "1536x640", {"aspect_ratio": "21:9"}),
        (SDXL, "1000x1000", "1024x1024", {"width": 1024, "height": 1024}),
    ],
)
def test_a_size_the_model_cannot_make_is_refused_or_snapped(aws, emulator, model, size, nearest, sent):
    error = refused(gesso.image_generation, model=model, prompt="x", size=size, **aws)
    assert f"the nearest is {nearest} (set snap_size to true to use it)" in str(error)
    assert not emulator.requests
    resp = gesso.image_generation(model, "x", size=size, snap_size=True, **aws)
    assert resp.size == nearest
    assert any(f"{size} is not" in w and f"snapped to the nearest, {nearest}" in w for w in resp.warnings)
    body = emulator.requests[-1].json()
    assert sent.items() <= {**body, **body.get("imageGenerationConfig", {})}.items()


@pytest.mark.parametrize(("size", "ratio"), [("1792x1024", "16:9"), ("512x512", "1:1"), ("1080x2560", "9:21")])
def test_stability_maps_a_size_of_one_of_its_aspect_ratios(aws, emulator, size, ratio):
    resp = gesso.image_generation(SD35, "x", size=size, **aws)
    assert emulator.requests[-1].json()["aspect_ratio"] == ratio and len(resp.data) == 1


# -- the proxy: what LibreChat and Open WebUI send -------------------------------------------------------


@pytest.fixture(scope="module")
def served():
    from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator

    with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as emulator:
        config = proxy_config.parse(
            {"model_list": [deployment("nova", emulator, "nova-a"), deployment("gpt-image-1", emulator, "g-a")]}
        )
        proxy_config.check(config)
        with serving(config) as proxy:
            yield proxy, emulator


def test_a_body_with_a_huge_integer_is_a_400_naming_it(served):
    proxy, _emulator = served
    body = '{"model": "nova", "prompt": "x", "seed": 1' + "0" * 5000 + "}"
    status, _, text = proxy.curl(
        f"{proxy.url}/v1/images/generations", "-H", "content-type: application/json", "--data-binary", body
    )
    assert status == 400 and "Traceback" not in text and "seed" in text


#: LibreChat's default image generation (danny-avila/LibreChat, api/app/clients/tools/structured/
#: OpenAIImageTools.js: openai.images.generate({model, prompt, n, background, output_format, quality, size}) with
#: its tool's defaults background "auto", n 1, quality "auto", size "auto", output_format png)
LIBRECHAT = {
    "model": "gpt-image-1", "prompt": "a lighthouse at dusk", "n": 1, "background": "auto", "output_format": "png",
    "quality": "auto", "size": "auto",
}  # fmt: skip
#: Open WebUI's image generation (open-webui/open-webui, backend/open_webui/routers/images.py: {model, prompt, n,
#: size: IMAGE_SIZE (default "512x512"), response_format: "b64_json" unless the model matches ^gpt-image})
OPEN_WEBUI = {
    "model": "nova",
    "prompt": "a lighthouse at dusk",
    "n": 1,
    "size": "512x512",
    "response_format": "b64_json",
}


def _generate(proxy, body: dict) -> dict:
    """POST ``body`` to the proxy's generations route with curl; the answer, which must be a 200."""
    status, _, text = proxy.curl(
        f"{proxy.url}/v1/images/generations", "-H", "content-type: application/json", "--data-binary",
        json.dumps(body),
    )  # fmt: skip
    assert status == 200, text
    return json.loads(text)


def test_open_webuis_generation_is_answered(served):
    answer = _generate(served[0], OPEN_WEBUI)
    assert answer["data"][0]["b64_json"] and answer["size"] == "512x512"


@pytest.mark.parametrize(
    "fields",
    [
        # LibreChat's edit: model, prompt, quality, size (its defaults "auto"), then an image[] part per image
        [("model", "gpt-image-1"), ("prompt", "make it red"), ("quality", "auto"), ("size", "auto"), ("image[]", SRC)],
        # Open WebUI's edit with IMAGE_EDIT_SIZE set: model, prompt, size, response_format, then image[] parts
        [("model", "nova"), ("prompt", "make it red"), ("size", "512x384"), ("response_format", "b64_json"),
         ("image[]", SRC)],
    ],
    ids=["librechat", "open-webui"],
)  # fmt: skip
def test_the_front_ends_edits_are_answered(served, fields):
    proxy, _ = served
    body, content_type = multipart(fields)
    request = urllib.request.Request(f"{proxy.url}/v1/images/edits", data=body, headers={"content-type": content_type})
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 200
        answer = json.loads(response.read())
    assert answer["data"][0]["b64_json"] and answer["size"] == "512x384"


def test_librechats_default_request_is_answered(served):
    proxy, emulator = served
    answer = _generate(proxy, LIBRECHAT)
    assert len(answer["data"]) == 1 and answer["output_format"] == "png" and answer["size"] == "1024x1024"
    assert emulator.requests[-1].json()["imageGenerationConfig"] == {"numberOfImages": 1}


def test_the_openai_sdks_gpt_image_call_is_answered(served):
    proxy, _ = served
    answer = proxy.client().images.generate(
        model="gpt-image-1", prompt="x", n=1, background="opaque", moderation="auto", output_format="jpeg",
        output_compression=90, quality="high", size="1024x1024",
    )  # fmt: skip
    assert answer.data[0].b64_json and answer.output_format == "jpeg"


def test_an_edit_with_the_inputs_size_is_answered_and_another_size_is_a_400(served):
    proxy, _ = served
    client = proxy.client()
    answer = client.images.edit(model="nova", image=("in.png", SRC), prompt="a red barn", size="512x384", n=1)
    assert answer.data[0].b64_json and answer.size == "512x384"
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(
            model="nova", image=("in.png", SRC), prompt="x", size="1024x1024", extra_body={"maskPrompt": "barn"}
        )
    assert_error(info.value, 400, "invalid_request_error")
    assert "the output takes the input image's size, 512x384" in info.value.response.json()["error"]["message"]


def test_stream_is_a_400_saying_no_model_streams(served):
    proxy, emulator = served
    emulator.requests.clear()
    with pytest.raises(openai.BadRequestError) as info:
        proxy.client().images.generate(model="nova", prompt="x", stream=True)
    assert_error(info.value, 400, "invalid_request_error")
    assert "leave stream out" in info.value.response.json()["error"]["message"]
    assert not emulator.requests


# -- the same rules, whatever type a number arrives as (a property test) ----------------------------------

NUMERIC = ["width", "height", "seed", "cfgScale", "numberOfImages", "cfg_scale", "steps", "n", "strength"]


def _outcome(model: str, name: str, value, **more) -> object:
    from gesso import api

    try:
        api.prepare(model, "x", aws_region_name="us-east-1", **{name: value}, **more)
    except InvalidRequestError as exc:
        return sorted((v.path, v.message) for v in exc.violations)
    return "prepared"


@settings(max_examples=300, deadline=None, database=None)
@given(
    model=st.sampled_from([NOVA, TITAN, SD35, SDXL]),
    name=st.sampled_from(NUMERIC),
    number=st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([0, 1, 16, 320, 1000, 1024, 4096, 2**53])),
    height=st.sampled_from([320, 512, 1000, 1024, 4096]),
)
def test_an_integral_float_meets_exactly_the_rules_its_integer_meets(model, name, number, height):
    more = {"height": float(height)} if name == "width" else {}  # a whole size, as floats and as integers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        as_ints = _outcome(model, name, number, **({"height": height} if more else {}))
        assert _outcome(model, name, float(number), **more) == as_ints


@settings(max_examples=100, deadline=None, database=None)
@given(
    model=st.sampled_from([NOVA, TITAN, SD35, SDXL]),
    name=st.sampled_from([*NUMERIC, "size", "response_format", "output_compression", "timeout", "quality"]),
    number=st.sampled_from([10**5000, -(10**5000), 2**64, -(2**64), 2**1000]),
)
def test_a_huge_integer_anywhere_is_one_error_naming_its_field(model, name, number):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = _outcome(model, name, number)
    assert outcome != "prepared"
    assert any(path.split(".")[-1] == name or f"[from {name}]" in message for path, message in outcome), outcome
