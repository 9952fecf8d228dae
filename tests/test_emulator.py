"""The emulator speaks Bedrock's InvokeModel protocol: real boto3 clients sign and send HTTP to it."""

from __future__ import annotations

import http.client
import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from gesso_bedrock.emulator import BLOCK_INPUT, BLOCK_OUTPUT, BLOCK_SOME, EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY
from helpers import invoke, png_info

NOVA_ID = "amazon.nova-canvas-v1:0"


def t2i(text="a lighthouse", **config):
    body = {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": text}}
    if config:
        body["imageGenerationConfig"] = config
    return body


def error_of(exc_info) -> tuple[str, str, int]:
    err = exc_info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_text_to_image_returns_real_pngs_of_the_requested_size_and_count(bedrock, emulator):
    out = invoke(bedrock, NOVA_ID, t2i(width=512, height=384, numberOfImages=3))
    assert set(out) == {"images"}
    assert len(out["images"]) == 3
    infos = [png_info(b) for b in out["images"]]
    assert {(i.format, i.width, i.height) for i in infos} == {("png", 512, 384)}
    assert len(set(out["images"])) == 3, "each image of one call differs"
    recorded = emulator.requests[-1]
    assert recorded.path == "/model/amazon.nova-canvas-v1%3A0/invoke"
    assert recorded.signed_by.region == "us-east-1" and recorded.signed_by.service == "bedrock"


def test_defaults_to_1024_square_and_is_deterministic_in_prompt_and_seed(bedrock):
    first = invoke(bedrock, NOVA_ID, t2i(seed=5))["images"][0]
    assert (png_info(first).width, png_info(first).height) == (1024, 1024)
    assert invoke(bedrock, NOVA_ID, t2i(seed=5))["images"][0] == first
    assert invoke(bedrock, NOVA_ID, t2i(seed=6))["images"][0] != first
    assert invoke(bedrock, NOVA_ID, t2i("another prompt", seed=5))["images"][0] != first


@pytest.mark.parametrize(
    "model_id",
    [
        "us.amazon.nova-canvas-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-canvas-v1:0",
    ],
)
def test_profiles_and_arns_route_to_the_base_model(bedrock, emulator, model_id):
    assert len(invoke(bedrock, model_id, t2i())["images"]) == 1
    assert emulator.requests[-1].model_id == model_id
    assert ":" not in emulator.requests[-1].path.split("/")[2], "botocore percent-encodes the id"


def test_application_inference_profiles_resolve_through_the_configured_map(bedrock, emulator):
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    with pytest.raises(ClientError) as info:
        invoke(bedrock, arn, t2i())
    code, message, status = error_of(info)
    # Bedrock's own words first, then how to map the profile in the emulator
    assert (code, status) == ("ValidationException", 400)
    assert message.startswith("The provided model identifier is invalid. (gesso emulator: ")
    assert "--app-profile a1b2c3d4e5f6=MODEL_ID" in message
    emulator.application_profiles["a1b2c3d4e5f6"] = NOVA_ID
    assert len(invoke(bedrock, arn, t2i())["images"]) == 1
    assert emulator.requests[-1].path.endswith("application-inference-profile%2Fa1b2c3d4e5f6/invoke")


def test_raw_colon_in_the_path_is_accepted(emulator):
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    conn.request(
        "POST", "/model/amazon.nova-canvas-v1:0/invoke", body=json.dumps(t2i()), headers={"Authorization": "Bearer k"}
    )
    response = conn.getresponse()
    assert response.status == 200
    assert len(json.loads(response.read())["images"]) == 1


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("amazon.nova-canvas-v9:0", "The provided model identifier is invalid."),
        ("meta.imagine-v1:0", "The provided model identifier is invalid."),
        ("not a model!", "1 validation error detected: Value 'not a model!' at 'modelId' failed to satisfy constraint"),
    ],
)
def test_unknown_or_malformed_model_ids(bedrock, model_id, message):
    with pytest.raises(ClientError) as info:
        invoke(bedrock, model_id, t2i())
    code, text, status = error_of(info)
    assert (code, status) == ("ValidationException", 400)
    assert text.startswith(message)


def test_error_wire_format_is_bedrocks(emulator):
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    conn.request("POST", "/model/amazon.nova-canvas-v1%3A0/invoke", body=b"{}", headers={"Authorization": "Bearer k"})
    response = conn.getresponse()
    assert response.status == 400
    assert (
        response.getheader("x-amzn-ErrorType")
        == "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )
    assert response.getheader("x-amzn-RequestId")
    assert json.loads(response.read()) == {
        "message": "Malformed input request: #: required key [taskType] not found, please reformat your input and try again."
    }


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (b"not json", ["Malformed input request, please reformat your input and try again."]),
        ({**t2i(), "stream": True}, ["#: extraneous key [stream] is not permitted"]),
        (t2i("x" * 1469), ["#/textToImageParams/text: expected maxLength: 1024, actual: 1469"]),
        (t2i(cfgScale=11), ["#/imageGenerationConfig/cfgScale: 11 is not less or equal to 10"]),
        (t2i(seed=-1), ["#/imageGenerationConfig/seed: -1 is not greater or equal to 0"]),
        (t2i(numberOfImages="2"), ["#/imageGenerationConfig/numberOfImages: expected type: Integer, found: String"]),
        (t2i(width=1000, height=1024), ["#/imageGenerationConfig/width: 1000 is not a multiple of 16"]),
        ({"taskType": "FOO", "textToImageParams": {"text": "x"}}, ["#/taskType: FOO is not a valid enum value"]),
        (
            {"taskType": "TEXT_IMAGE", "textToImageParams": {}, "imageGenerationConfig": {"quality": "ultra"}},
            [
                "#/textToImageParams: required key [text] not found",
                "#/imageGenerationConfig/quality: ultra is not a valid enum value",
            ],
        ),
        (
            {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"}, "backgroundRemovalParams": {"image": "x"}},
            ["#: extraneous key [backgroundRemovalParams] is not permitted"],
        ),
        (
            t2i(width=4096, height=512),
            ["The aspect ratio of the requested image must be between 1:4 and 4:1. Given: (4096, 512)."],
        ),
        (
            t2i(width=2048, height=2048),
            ["The requested image must have fewer than 4194304 pixels. Given: (2048, 2048)."],
        ),
    ],
)
def test_bodies_are_validated_the_way_bedrock_words_it(bedrock, body, fragments):
    with pytest.raises(ClientError) as info:
        invoke(bedrock, NOVA_ID, body)
    code, message, status = error_of(info)
    assert (code, status) == ("ValidationException", 400)
    for fragment in fragments:
        assert fragment in message
    if fragments[0].startswith("#"):
        assert message.startswith("Malformed input request: ")
        assert message.endswith(", please reformat your input and try again.")


def test_content_filter_markers(bedrock):
    with pytest.raises(ClientError) as info:
        invoke(bedrock, NOVA_ID, t2i(f"a cat {BLOCK_INPUT}"))
    assert "blocked by our content filters" in error_of(info)[1]
    assert invoke(bedrock, NOVA_ID, t2i(BLOCK_OUTPUT, numberOfImages=2)) == {
        "images": [],
        "error": "All of the generated images have been blocked by our content filters.",
    }
    some = invoke(bedrock, NOVA_ID, t2i(BLOCK_SOME, numberOfImages=4))
    assert len(some["images"]) == 2
    assert some["error"] == "Some of the generated images have been blocked by our content filters."


def _client(emulator, **overrides):
    settings = {
        "region_name": "eu-west-1",
        "endpoint_url": emulator.url,
        "aws_access_key_id": EMULATOR_ACCESS_KEY,
        "aws_secret_access_key": EMULATOR_SECRET_KEY,
        "config": Config(retries={"total_max_attempts": 1}),
        **overrides,
    }
    return boto3.client("bedrock-runtime", **settings)


def test_signatures_are_verified(emulator):
    invoke(_client(emulator), NOVA_ID, t2i())
    assert emulator.requests[-1].signed_by.region == "eu-west-1"

    with pytest.raises(ClientError) as info:
        invoke(_client(emulator, aws_secret_access_key="wrong-secret"), NOVA_ID, t2i())
    code, message, status = error_of(info)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert message.startswith("The request signature we calculated does not match")

    with pytest.raises(ClientError) as info:
        invoke(_client(emulator, aws_access_key_id="AKIDUNKNOWN"), NOVA_ID, t2i())
    assert error_of(info) == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
        403,
    )


def test_session_tokens_are_signed_too(emulator):
    invoke(_client(emulator, aws_session_token="tok-123"), NOVA_ID, t2i())
    assert emulator.requests[-1].headers["X-Amz-Security-Token"] == "tok-123"


def test_requests_without_authorization_are_refused(emulator):
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    conn.request("POST", "/model/amazon.nova-canvas-v1%3A0/invoke", body=json.dumps(t2i()))
    response = conn.getresponse()
    assert response.status == 403
    assert response.getheader("x-amzn-ErrorType").startswith("MissingAuthenticationTokenException:")
    assert json.loads(response.read()) == {"message": "Missing Authentication Token"}


def test_bearer_api_keys(emulator):
    emulator.api_keys = {"good-key"}
    for token, status in (("good-key", 200), ("bad-key", 403)):
        conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
        conn.request(
            "POST",
            "/model/amazon.nova-canvas-v1%3A0/invoke",
            body=json.dumps(t2i()),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert conn.getresponse().status == status


def test_unknown_paths_and_methods(emulator):
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    conn.request("GET", "/foundation-models")
    response = conn.getresponse()
    assert response.status == 404
    assert response.getheader("x-amzn-ErrorType").startswith("UnknownOperationException:")


HUGE = "1" + "0" * 5000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latency", "-1"], "--latency: must be a number from 0 to 3600 (got '-1')"),
        (["--latency", "nan"], "--latency: must be a number from 0 to 3600 (got 'nan')"),
        (["--latency", "inf"], "--latency: must be a number from 0 to 3600 (got 'inf')"),
        (["--latency", "1e400"], "--latency: must be a number from 0 to 3600 (got '1e400')"),
        (["--port", "-5"], "--port: must be an integer from 0 to 65535 (got '-5')"),
        (["--port", "65536"], "--port: must be an integer from 0 to 65535 (got '65536')"),
        (["--port", HUGE], "--port: must be an integer from 0 to 65535"),
        (["--workers", "-1"], "--workers: must be an integer, 0 or more (got '-1')"),
        (["--fault-seed", "1.5"], "--fault-seed: must be an integer (got '1.5')"),
        (["--fault", "latency:seconds=nan"], "--fault: seconds must be a number from 0 to 3600 (got 'nan')"),
        (["--fault", "latency:seconds=-2"], "--fault: seconds must be a number from 0 to 3600 (got '-2')"),
        (["--fault", "error:rate=nan"], "--fault: rate must be a number from 0 to 1 (got 'nan')"),
        (["--fault", "error:rate=inf"], "--fault: rate must be a number from 0 to 1 (got 'inf')"),
        (["--fault", "throttle:count=-1"], "--fault: count must be an integer, 0 or more (got '-1')"),
        (["--fault", f"throttle:count={HUGE}"], "--fault: count must be an integer, 0 or more"),
        (["--fault", "error:status=nan"], "--fault: status must be an integer from 400 to 599 (got 'nan')"),
        (["--fault", f"error:status={HUGE}"], "--fault: status must be an integer from 400 to 599"),
        (["--fault", "throttle:count"], "--fault: expected key=value in fault spec, got 'count'"),
    ],
)
def test_out_of_range_emulator_options_are_usage_errors(capsys, monkeypatch, args, message):
    import warnings

    from gesso.cli import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() sets it
    with pytest.raises(SystemExit) as exited:
        main(["emulator", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: gesso emulator") and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"gesso emulator: error: argument {message}") and len(last) < 160, last


def _picture(data: bytes):
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def test_the_emulators_images_are_labelled_and_say_so_in_a_text_chunk(bedrock):
    import base64

    from PIL import ImageChops

    from gesso_bedrock.emulator.images import synth_png

    b64 = invoke(bedrock, NOVA_ID, t2i("a lighthouse on a cliff at dusk", width=512, height=512, seed=3))["images"][0]
    picture = _picture(base64.b64decode(b64))
    assert picture.info["Software"] == "gesso emulator"
    assert picture.getpixel((9, 9)) == (0, 0, 0), "the label's black box, in the top-left corner"
    red, green, blue = picture.crop((8, 8, 160, 48)).split()
    palest = ImageChops.darker(ImageChops.darker(red, green), blue)
    assert sum(palest.histogram()[240:]) > 30, "white letters in it"
    # the prompt's words are drawn under "gesso emulator", and nothing else changes
    plain = _picture(synth_png(512, 512, "a key"))
    worded = _picture(synth_png(512, 512, "a key", False, "a lighthouse on a cliff at dusk"))
    changed = ImageChops.difference(plain, worded).getbbox()
    assert changed is not None and min(changed[:2]) >= 8 and changed[2] <= 256 and changed[3] <= 64, changed


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (16, 16), (64, 64), (256, 256), (1536, 640), (320, 1600)])
@pytest.mark.parametrize("alpha", [False, True])
def test_labelled_images_of_every_size_are_deterministic(size, alpha):
    from gesso_bedrock.emulator.images import synth_png

    def make(prompt):  # as the emulations call it, the prompt in the key; not from the cache
        return synth_png.__wrapped__(*size, f"model|{prompt}|7", alpha, prompt)

    data = make("an otter floating in the kelp forest at sunrise, photorealistic")
    assert data == make("an otter floating in the kelp forest at sunrise, photorealistic")
    assert data != make("a heron")
    picture = _picture(data)
    assert (picture.size, picture.mode) == (size, "RGBA" if alpha else "RGB")
    assert picture.info["Software"] == "gesso emulator"
    if min(size) >= 16:  # the label's box, inside its margin: opaque, in the transparent quarter too
        inside = max(1, min(size) // 64) + 1
        assert picture.getpixel((inside, inside)) == ((0, 0, 0, 255) if alpha else (0, 0, 0))


def test_edited_pngs_say_they_are_the_emulators_too():
    import base64

    from PIL import Image

    from gesso_bedrock.emulator import edits

    assert _picture(base64.b64decode(edits.png_b64(Image.new("RGB", (4, 4))))).info["Software"] == "gesso emulator"


@pytest.mark.parametrize(
    ("prompt", "caption"),
    [
        (None, ""),
        ("", ""),
        ("  a  red\nfox ", "a red fox"),
        ("one two three four five six seven", "one two three four five six..."),
        ("x" * 50, "x" * 40 + "..."),
        ("un café 東京", "un café ??"),
    ],
)
def test_the_label_shows_the_prompts_first_words(prompt, caption):
    from gesso_bedrock.emulator.images import caption as caption_of

    assert caption_of(prompt) == caption
