"""gesso.image_generation with Nova Canvas TEXT_IMAGE, end to end through boto3 and the emulator."""

from __future__ import annotations

import asyncio
import json

import pytest

import gesso
from conftest import NOVA
from gesso.errors import ContentFilteredError, InvalidRequestError, UnknownModelError
from gesso_bedrock.emulator import BLOCK_INPUT, BLOCK_OUTPUT, BLOCK_SOME
from helpers import png_info


def sent(emulator) -> dict:
    return emulator.requests[-1].json()


@pytest.mark.parametrize(
    ("kwargs", "body"),
    [
        ({}, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat"}}),
        (
            {"size": "1024x768", "n": 2, "quality": "hd"},
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "a cat"},
                "imageGenerationConfig": {"width": 1024, "height": 768, "numberOfImages": 2, "quality": "premium"},
            },
        ),
        (
            {"negativeText": "blurry", "style": "PHOTOREALISM", "seed": 42, "cfgScale": 6.5},
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "a cat", "negativeText": "blurry", "style": "PHOTOREALISM"},
                "imageGenerationConfig": {"seed": 42, "cfgScale": 6.5},
            },
        ),
        (
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"negativeText": "blurry"},
                "imageGenerationConfig": {"seed": 7},
                "size": "512x512",
            },
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"negativeText": "blurry", "text": "a cat"},
                "imageGenerationConfig": {"seed": 7, "width": 512, "height": 512},
            },
        ),
        (
            {"conditionImage": "iVBORw0KGgo=", "controlMode": "SEGMENTATION", "controlStrength": 0.4},
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {
                    "conditionImage": "iVBORw0KGgo=",
                    "controlMode": "SEGMENTATION",
                    "controlStrength": 0.4,
                    "text": "a cat",
                },
            },
        ),
        (
            {"quality": "low"},
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "a cat"},
                "imageGenerationConfig": {"quality": "standard"},
            },
        ),
        ({"size": "auto"}, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat"}}),
    ],
    ids=[
        "prompt-only",
        "openai-params",
        "flat-provider-params",
        "nested-form",
        "conditioning",
        "quality-low",
        "size-auto",
    ],
)
def test_exact_bodies(aws, emulator, kwargs, body):
    if "conditionImage" in kwargs:
        emulator_images = pytest.importorskip("gesso_bedrock.emulator.images")
        kwargs = {**kwargs, "conditionImage": emulator_images.synth_png_b64(320, 320, "cond")}
        body = json.loads(json.dumps(body).replace("iVBORw0KGgo=", kwargs["conditionImage"]))
    gesso.image_generation(NOVA, "a cat", **kwargs, **aws)
    assert sent(emulator) == body


def test_flat_and_nested_forms_send_the_same_body(aws, emulator):
    gesso.image_generation(NOVA, "a cat", negativeText="blurry", seed=3, n=2, **aws)
    flat = sent(emulator)
    gesso.image_generation(
        NOVA,
        "a cat",
        textToImageParams={"negativeText": "blurry"},
        imageGenerationConfig={"seed": 3, "numberOfImages": 2},
        **aws,
    )
    assert sent(emulator) == flat
    gesso.image_generation(
        NOVA,
        None,
        taskType="TEXT_IMAGE",
        textToImageParams={"text": "a cat", "negativeText": "blurry"},
        imageGenerationConfig={"seed": 3},
        n=2,
        **aws,
    )
    assert sent(emulator) == flat


def test_response_shape_and_cost(aws):
    resp = gesso.image_generation(NOVA, "A cute baby sea otter", **aws)
    assert isinstance(resp, gesso.ImageResponse)
    assert resp.model == "amazon.nova-canvas-v1:0"
    assert resp.cost == pytest.approx(0.04)
    assert resp.size == "1024x1024"
    assert len(resp.data) == 1 and resp.data[0].url is None
    assert png_info(resp.data[0].b64_json).format == "png"
    as_dict = resp.to_dict()
    assert set(as_dict) == {"created", "data", "model", "cost", "pricing", "size"}
    assert set(as_dict["data"][0]) == {"b64_json"}
    assert gesso.ImageResponse.from_dict(as_dict) == resp


@pytest.mark.parametrize(
    ("kwargs", "cost"),
    [
        ({}, 0.04),
        ({"quality": "premium"}, 0.06),
        ({"size": "1024x1024", "n": 3}, 0.12),
        # the tier is by area (bedrock_wire.md section 8): 1280x720 is below 1024x1024 pixels, 1408x768 above
        ({"size": "1280x720"}, 0.04),
        ({"size": "1408x768"}, 0.06),
        ({"size": "2048x1024", "quality": "hd", "n": 2}, 0.16),
    ],
)
def test_cost_by_tier_quality_and_count(aws, kwargs, cost):
    assert gesso.image_generation(NOVA, "a cat", **kwargs, **aws).cost == pytest.approx(cost)


def test_response_format_url_gives_data_urls(aws):
    resp = gesso.image_generation(NOVA, "a cat", response_format="url", **aws)
    assert resp.data[0].b64_json is None
    assert resp.data[0].url.startswith("data:image/png;base64,iVBOR")


def test_cfgscale_out_of_range_names_param_range_and_model_and_sends_nothing(aws, emulator):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(model="bedrock/amazon.nova-canvas-v1:0", prompt="x", cfgScale=99, **aws)
    message = str(info.value)
    assert "cfgScale" in message and "between 1.1 and 10" in message and "amazon.nova-canvas-v1:0" in message
    assert info.value.status_code == 400
    assert info.value.param == "imageGenerationConfig.cfgScale"
    assert len(emulator.requests) == 0


@pytest.mark.parametrize(
    ("kwargs", "path", "fragment"),
    [
        ({"size": "1000x1024"}, "size", "multiple of 16 (got 1000); the nearest is 1008x1024"),
        ({"size": "304x1024"}, "size", "between 320 and 4096 (got 304)"),
        ({"size": "4112x1024"}, "size", "between 320 and 4096 (got 4112)"),
        ({"size": "1600x320"}, "size", "aspect ratio must be between 1:4 and 4:1"),
        ({"size": "2048x2048"}, "size", "fewer than 4,194,304 pixels"),
        ({"width": 2048, "height": 2048}, "imageGenerationConfig.width/height", "fewer than 4,194,304 pixels"),
        ({"width": 512}, "imageGenerationConfig", "'height' is required together with 'width'"),
        ({"size": "big"}, "size", 'must be "WIDTHxHEIGHT"'),
        ({"n": 0}, "n", "positive integer"),
        ({"n": 6}, "imageGenerationConfig.numberOfImages", "between 1 and 5 (got 6) [from n]"),
        ({"quality": "ultra"}, "quality", "hd, high (-> premium)"),
        ({"style": "vivid"}, "textToImageParams.style", "must be one of: 3D_ANIMATED_FAMILY_FILM"),
        ({"seed": 2147483647}, "imageGenerationConfig.seed", "between 0 and 2147483646"),
        ({"seed": "42"}, "imageGenerationConfig.seed", "must be an integer (got string '42')"),
        ({"cfgScale": 1.0}, "imageGenerationConfig.cfgScale", "between 1.1 and 10 (got 1)"),
        ({"negativeText": ""}, "textToImageParams.negativeText", "1 to 1024 characters long (got 0)"),
        ({"controlStrength": 0.5}, "textToImageParams", "'conditionImage' is required together with 'controlStrength'"),
        ({"controlMode": "SKETCH", "conditionImage": "x"}, "textToImageParams.controlMode", "CANNY_EDGE, SEGMENTATION"),
        ({"controlStrength": 1.5, "conditionImage": "x"}, "textToImageParams.controlStrength", "between 0 and 1"),
        ({"guidance": 3}, "guidance", "unknown parameter for taskType TEXT_IMAGE; allowed: cfgScale"),
        (
            {"imageGenerationConfig": {"steps": 3}},
            "imageGenerationConfig.steps",
            "unknown parameter; allowed here: cfgScale",
        ),
        ({"taskType": "PAINT"}, "taskType", "must be one of: TEXT_IMAGE, COLOR_GUIDED_GENERATION"),
        (
            {"colorGuidedGenerationParams": {"colors": ["#FF0000"]}},
            "",
            "colorGuidedGenerationParams' cannot be sent with taskType TEXT_IMAGE",
        ),
        ({"response_format": "png"}, "response_format", "b64_json, url"),
        ({"timeout": 0}, "timeout", "positive number of seconds"),
        ({"user": 5}, "user", "must be a string"),
    ],
)
def test_invalid_parameters_are_named_before_any_request(aws, emulator, kwargs, path, fragment):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "a cat", **kwargs, **aws)
    matching = [v for v in info.value.violations if v.path == path]
    assert matching, f"no violation at {path!r}: {info.value}"
    assert any(fragment in v.message for v in matching), str(info.value)
    assert "amazon.nova-canvas-v1:0" in str(info.value)
    assert len(emulator.requests) == 0


def test_prompt_length_and_empty_prompt(aws):
    with pytest.raises(
        InvalidRequestError,
        match=r"textToImageParams.text: must be 1 to 1024 characters long \(got 1025\) \[from prompt\]",
    ):
        gesso.image_generation(NOVA, "x" * 1025, **aws)
    with pytest.raises(
        InvalidRequestError, match=r"textToImageParams.text: must be 1 to 1024 characters long \(got 0\)"
    ):
        gesso.image_generation(NOVA, "", **aws)
    with pytest.raises(InvalidRequestError, match=r"prompt: is required for taskType TEXT_IMAGE$"):
        gesso.image_generation(NOVA, None, **aws)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"size": "512x512", "imageGenerationConfig": {"width": 1024, "height": 512}}, "imageGenerationConfig.width"),
        ({"n": 2, "numberOfImages": 3}, "imageGenerationConfig.numberOfImages"),
        ({"negativeText": "a", "textToImageParams": {"negativeText": "b"}}, "textToImageParams.negativeText"),
        ({"textToImageParams": {"text": "a dog"}}, "textToImageParams.text"),
        ({"quality": "hd", "imageGenerationConfig": {"quality": "standard"}}, "imageGenerationConfig.quality"),
    ],
)
def test_contradictions_are_errors_not_overrides(aws, emulator, kwargs, path):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "a cat", **kwargs, **aws)
    assert [v.path for v in info.value.violations] == [path]
    assert "contradicting values" in str(info.value)
    assert len(emulator.requests) == 0


def test_agreeing_sources_are_fine(aws, emulator):
    gesso.image_generation(
        NOVA, "a cat", n=2, numberOfImages=2, quality="hd", imageGenerationConfig={"quality": "premium"}, **aws
    )
    assert sent(emulator)["imageGenerationConfig"] == {"numberOfImages": 2, "quality": "premium"}


def test_all_outputs_filtered_raises_content_filtered(aws):
    with pytest.raises(ContentFilteredError) as info:
        gesso.image_generation(NOVA, f"a cat {BLOCK_OUTPUT}", n=2, **aws)
    assert info.value.status_code == 400
    assert info.value.code == "content_policy_violation"
    assert "All of the generated images have been blocked" in str(info.value)


def test_some_outputs_filtered_returns_the_rest_and_says_so(aws):
    resp = gesso.image_generation(NOVA, f"a cat {BLOCK_SOME}", n=4, **aws)
    assert len(resp.data) == 2
    assert resp.filtered == 2
    assert resp.warnings == (
        "Some of the generated images have been blocked by our content filters. (2 of 4 withheld)",
    )
    assert resp.cost == pytest.approx(0.08), "only returned images are charged"
    assert resp.to_dict()["warnings"] == list(resp.warnings)


def test_input_filter_400_is_content_filtered(aws):
    with pytest.raises(ContentFilteredError, match="blocked by our content filters"):
        gesso.image_generation(NOVA, f"a cat {BLOCK_INPUT}", **aws)


@pytest.mark.parametrize(
    "model",
    ["bedrock/us.amazon.nova-canvas-v1:0", "us.amazon.nova-canvas-v1:0", "bedrock/invoke/eu.amazon.nova-canvas-v1:0"],
)
def test_region_prefixed_ids_route_to_nova_and_are_invoked_as_given(aws, emulator, model):
    resp = gesso.image_generation(model, "a cat", **aws)
    invoked = model.split("/")[-1]
    assert resp.model == invoked
    assert emulator.requests[-1].model_id == invoked


def test_model_id_is_the_invoke_target(aws, emulator):
    arn = "arn:aws:bedrock:us-east-1:000000000000:application-inference-profile/a0a0a0a0a0a0"
    emulator.application_profiles[arn] = "amazon.nova-canvas-v1:0"
    resp = gesso.image_generation(NOVA, "a cat", model_id=arn, **aws)
    assert resp.model == "amazon.nova-canvas-v1:0"
    assert emulator.requests[-1].path == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A000000000000%3Aapplication-inference-profile%2Fa0a0a0a0a0a0/invoke"
    )
    assert sent(emulator) == {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat"}}


def test_foundation_model_arn_as_model(aws, emulator):
    arn = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0"
    gesso.image_generation(f"bedrock/{arn}", "a cat", **aws)
    assert emulator.requests[-1].model_id == arn


def test_application_profile_arn_as_model_says_to_use_model_id(aws):
    with pytest.raises(UnknownModelError, match="Pass the ARN as model_id"):
        gesso.image_generation(
            "bedrock/arn:aws:bedrock:us-east-1:000000000000:application-inference-profile/abc", "x", **aws
        )


def test_unknown_models(aws, monkeypatch):
    from gesso import plugins

    monkeypatch.setenv("GESSO_PLUGINS", "gesso-bedrock-nova")
    plugins.reset()
    with pytest.raises(UnknownModelError) as info:
        gesso.image_generation("bedrock/amazon.titan-image-generator-v2:0", "x", **aws)
    assert info.value.status_code == 404
    assert "pip install gesso-bedrock-titan" in str(info.value)
    with pytest.raises(UnknownModelError, match="gesso-bedrock-stability"):
        gesso.image_generation("bedrock/us.stability.sd3-5-large-v1:0", "x", **aws)
    with pytest.raises(UnknownModelError, match="Installed models: amazon.nova-canvas-v1:0"):
        gesso.image_generation("bedrock/meta.llama-image-v1", "x", **aws)
    with pytest.raises(UnknownModelError, match="gesso serves AWS Bedrock models"):
        gesso.image_generation("openai/dall-e-3", "x", **aws)
    with pytest.raises(UnknownModelError, match="gesso-bedrock-nova"):
        monkeypatch.setenv("GESSO_PLUGINS", "")
        plugins.reset()
        gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", **aws)


def test_async_matches_sync(aws, emulator):
    resp = asyncio.run(gesso.aimage_generation(NOVA, "a cat", n=2, seed=1, **aws))
    assert len(resp.data) == 2 and resp.cost == pytest.approx(0.08)
    body = sent(emulator)
    gesso.image_generation(NOVA, "a cat", n=2, seed=1, **aws)
    assert sent(emulator) == body


def test_async_validates_before_sending(aws, emulator):
    with pytest.raises(InvalidRequestError, match="cfgScale"):
        asyncio.run(gesso.aimage_generation(NOVA, "a cat", cfgScale=0, **aws))
    assert len(emulator.requests) == 0


@pytest.mark.parametrize(
    ("given", "suggestion"),
    [
        ("cfgscale", "cfgScale"),
        ("negative_text", "negativeText"),
        ("numberofimages", "numberOfImages"),
        ("seeds", "seed"),
    ],
)
def test_unknown_parameters_suggest_the_closest_name(aws, given, suggestion):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "a cat", **{given: 1}, **aws)
    assert f"{given}: unknown parameter for taskType TEXT_IMAGE (did you mean {suggestion}?); allowed: cfgScale" in str(
        info.value
    )
