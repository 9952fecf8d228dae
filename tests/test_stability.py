"""Stability on Bedrock: SDXL, SD3/SD3.5/Ultra/Core and the 13 Image Services, through the emulator,
with each documented constraint refused before any HTTP request (bedrock_wire.md sections 2-4)."""

from __future__ import annotations

import base64
import json

import pytest

import gesso
from gesso.errors import ContentFilteredError, InvalidRequestError, ProviderError, UnknownModelError
from gesso.types import ImageRequest, PreparedRequest, RawResponse
from gesso_bedrock.emulator import BLOCK_INPUT, BLOCK_OUTPUT, BLOCK_SOME
from gesso_bedrock.target import Target
from helpers import invoke, mask, picture, pil, png_info

SDXL1 = "bedrock/stability.stable-diffusion-xl-v1"
SDXL0 = "bedrock/stability.stable-diffusion-xl-v0"
SD35 = "bedrock/stability.sd3-5-large-v1:0"
ULTRA = "bedrock/stability.stable-image-ultra-v1:1"
CORE = "bedrock/stability.stable-image-core-v1:1"
SRC = picture(512, 512, (120, 80, 40))
B64 = base64.b64encode(SRC).decode()


def sent(emulator) -> list[dict]:
    return [r.json() for r in emulator.requests]


# -- SDXL -----------------------------------------------------------------------------------------------


def test_sdxl_text_to_image(aws, emulator):
    resp = gesso.image_generation(
        SDXL1, "a lighthouse at dusk", negative_prompt="blurry", size="1024x1024", cfg_scale=7, steps=30, seed=1,
        style_preset="photographic", sampler="K_EULER", clip_guidance_preset="NONE", **aws,
    )  # fmt: skip
    assert sent(emulator) == [
        {"text_prompts": [{"text": "a lighthouse at dusk", "weight": 1}, {"text": "blurry", "weight": -1}],
         "cfg_scale": 7, "steps": 30, "seed": 1, "style_preset": "photographic", "sampler": "K_EULER",
         "clip_guidance_preset": "NONE", "width": 1024, "height": 1024}
    ]  # fmt: skip
    assert resp.cost == pytest.approx(0.04) and resp.data[0].seed == 1 and resp.size == "1024x1024"


def test_sdxl_native_text_prompts_and_style(aws, emulator):
    prompts = [{"text": "castle", "weight": 1.5}, {"text": "fog", "weight": -0.5}]
    gesso.image_generation(SDXL1, text_prompts=prompts, style="anime", **aws)
    assert sent(emulator) == [{"text_prompts": prompts, "style_preset": "anime"}]


def test_sdxl_n_fans_out_with_distinct_seeds(aws, emulator):
    resp = gesso.image_generation(SDXL1, "x", n=3, seed=10, **aws)
    assert sorted(b["seed"] for b in sent(emulator)) == [10, 11, 12]
    assert [d.seed for d in resp.data] == [10, 11, 12], "combined in order"
    assert resp.cost == pytest.approx(0.12)


def test_sdxl_v0_prices_by_size(aws):
    assert gesso.image_generation(SDXL0, "x", size="512x512", **aws).cost == pytest.approx(0.018)
    assert gesso.image_generation(SDXL0, "x", size="1152x896", **aws).cost == pytest.approx(0.036)
    assert gesso.image_generation("bedrock/stability.stable-diffusion-xl", "x", **aws).cost == pytest.approx(0.036)


def test_sdxl_image_to_image_and_masking(aws, emulator):
    gesso.image_generation(
        SDXL1, "in snow", init_image=SRC, init_image_mode="IMAGE_STRENGTH", image_strength=0.4, **aws
    )
    assert sent(emulator)[-1] == {
        "text_prompts": [{"text": "in snow", "weight": 1}], "init_image": B64, "init_image_mode": "IMAGE_STRENGTH", "image_strength": 0.4,
    }  # fmt: skip
    resp = gesso.image_generation(
        SDXL1,
        "a door",
        init_image=SRC,
        mask_source="MASK_IMAGE_BLACK",
        mask_image=mask(512, 512, (100, 100, 300, 300)),
        **aws,
    )
    assert resp.size == "512x512"


def test_sdxl_filtered_output_is_never_returned_as_an_image(aws):
    with pytest.raises(ContentFilteredError, match="CONTENT_FILTERED"):
        gesso.image_generation(SDXL1, f"x {BLOCK_OUTPUT}", **aws)
    with pytest.raises(ContentFilteredError, match="invalid_prompts"):
        gesso.image_generation(SDXL1, f"x {BLOCK_INPUT}", **aws)
    resp = gesso.image_generation(SDXL1, f"x {BLOCK_SOME}", n=4, seed=7, **aws)
    assert [d.seed for d in resp.data] == [7, 9] and resp.filtered == 2
    assert resp.cost == pytest.approx(0.08)


# -- SD3 / SD3.5 / Ultra / Core ---------------------------------------------------------------------------


def test_sd35_size_maps_to_the_nearest_aspect_ratio(aws, emulator):
    resp = gesso.image_generation(
        SD35, "a lighthouse", size="1792x1024", seed=5, output_format="jpeg", cfg_scale=4.5, **aws
    )
    assert sent(emulator) == [
        {"prompt": "a lighthouse", "seed": 5, "output_format": "jpeg", "cfg_scale": 4.5, "aspect_ratio": "16:9"}
    ]
    assert resp.size == "1344x768" and resp.cost == pytest.approx(0.08)
    assert resp.warnings == (
        "size 1792x1024 was sent as aspect_ratio 16:9, the nearest Stable Diffusion 3.5 Large offers",
    )
    assert pil(resp.data[0].b64_json).format == "JPEG"
    url = gesso.image_generation(SD35, "x", output_format="webp", response_format="url", **aws).data[0].url
    assert url.startswith("data:image/webp;base64,")


@pytest.mark.parametrize(
    ("size", "ratio"),
    [("1024x1024", "1:1"), ("1024x1792", "9:16"), ("2560x1080", "21:9"), ("1200x800", "3:2"), ("800x1000", "4:5")],
)
def test_aspect_ratio_mapping(aws, emulator, size, ratio):
    gesso.image_generation(CORE, "x", size=size, **aws)
    assert sent(emulator)[-1]["aspect_ratio"] == ratio


def test_ultra_n3_is_three_calls_with_three_seeds(aws, emulator):
    resp = gesso.image_generation(ULTRA, "a lighthouse", n=3, seed=42, **aws)
    assert sorted(sent(emulator), key=lambda b: b["seed"]) == [
        {"prompt": "a lighthouse", "seed": s} for s in (42, 43, 44)
    ]
    assert [d.seed for d in resp.data] == [42, 43, 44]
    assert resp.cost == pytest.approx(0.42)


def test_one_image_without_a_seed_sends_no_seed(aws, emulator):
    resp = gesso.image_generation(CORE, "x", **aws)
    assert sent(emulator) == [{"prompt": "x"}], "nothing invented"
    assert resp.data[0].seed, "the model's pick, reported"


def test_sd35_image_to_image(aws, emulator):
    resp = gesso.image_generation(SD35, "as a painting", mode="image-to-image", image=SRC, strength=0.6, **aws)
    assert sent(emulator) == [{"prompt": "as a painting", "mode": "image-to-image", "image": B64, "strength": 0.6}]
    assert resp.size == "512x512"


# Decided by https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-5-large.html
# ("Image to image" tab): "image-to-image requires the prompt, image, and strength parameters", and AWS's example
# body there has no mode: body=json.dumps({'prompt': 'A car made out of vegetables.', 'image': image_base64,
# 'strength': 0.7}).
AWS_SD35_I2I = {"prompt": "A car made out of vegetables.", "image": B64, "strength": 0.7}


def test_sd35_image_to_image_without_mode_as_in_aws_example(aws, emulator, bedrock):
    """An image with no mode is image-to-image (validated as such); gesso sends the body as given, adding no
    mode, and the emulator infers the mode as Bedrock does for AWS's own example."""
    resp = gesso.image_generation(SD35, **AWS_SD35_I2I, **aws)
    assert sent(emulator) == [AWS_SD35_I2I]
    assert resp.size == "512x512" and resp.cost == pytest.approx(0.08)
    answer = invoke(bedrock, "stability.sd3-5-large-v1:0", AWS_SD35_I2I)
    assert answer["finish_reasons"] == [None] and png_info(answer["images"][0]).width == 512


# Decided by
# https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-stable-ultra-text-image-request-response.html
# "Image to image" tab: "image - (string) The Base64 image to use as the starting point for the generation.
# Supported formats: JPEG, PNG, WebP." and "strength - (number) How much influence the image parameter has on the
# generated image. [...] Range: 0.0 to 1.0. Default: 0.35." That tab lists no mode; the "Text to image" tab has
# "mode - Set to text-to-image. Default: text-to-image. Enum: text-to-image." So: image (and strength), no mode.
@pytest.mark.parametrize("model", [ULTRA, "bedrock/stability.stable-image-ultra-v1:0"])
def test_ultra_image_to_image(aws, emulator, bedrock, model):
    from gesso import plugins

    resp = gesso.image_generation(model, "as a painting", image=SRC, strength=0.35, seed=3, **aws)
    assert sent(emulator) == [{"prompt": "as a painting", "image": B64, "strength": 0.35, "seed": 3}]
    assert resp.size == "512x512" and resp.cost == pytest.approx(0.14) and resp.data[0].seed == 3
    gesso.image_generation(model, "as a painting", image=SRC, **aws)  # strength is optional (default 0.35)
    answer = invoke(bedrock, model.removeprefix("bedrock/"), {"prompt": "x", "image": B64, "strength": 0.5})
    assert answer["finish_reasons"] == [None] and png_info(answer["images"][0]).width == 512
    assert "image_to_image" in plugins.get_registry().get(model.removeprefix("bedrock/")).capabilities


def test_content_filters_and_inference_errors(aws):
    with pytest.raises(ContentFilteredError, match="Filter reason: prompt"):
        gesso.image_generation(ULTRA, f"x {BLOCK_INPUT}", **aws)
    with pytest.raises(ContentFilteredError, match="Filter reason: output image"):
        gesso.image_generation(ULTRA, f"x {BLOCK_OUTPUT}", **aws)
    resp = gesso.image_generation(ULTRA, f"x {BLOCK_SOME}", n=4, seed=1, **aws)
    assert [d.seed for d in resp.data] == [1, 3] and resp.filtered == 2 and resp.cost == pytest.approx(0.28)


def test_inference_error_is_a_provider_error():
    from gesso_bedrock_stability import common

    from gesso import plugins

    model = plugins.get_registry().get("stability.stable-image-core-v1:1")
    request = ImageRequest(model=model, model_name=model.id, prompt="x", target=Target(model_id=model.id))
    raw = RawResponse(status=200, body=json.dumps({"seeds": [1], "finish_reasons": ["Inference error"]}).encode())
    with pytest.raises(ProviderError, match="Inference error"):
        common.parse_seeded(request, PreparedRequest(bodies=[{}]), raw)


def test_retired_models_still_build_their_bodies(aws, emulator):
    for model in ("stability.sd3-large-v1:0", "stability.stable-image-ultra-v1:0", "stability.stable-image-core-v1:0"):
        gesso.image_generation(f"bedrock/{model}", "x", **aws)
        assert emulator.requests[-1].model_id == model


def test_unknown_stability_ids_get_no_guessed_body(aws, emulator):
    with pytest.raises(UnknownModelError, match="is not one of the models gesso-bedrock-stability offers"):
        gesso.image_generation("bedrock/stability.stable-diffusion-4-v1:0", "x", **aws)
    assert len(emulator.requests) == 0


# -- Image Services ---------------------------------------------------------------------------------------

WIDE = picture(1000, 500)
# fmt: off
SERVICES = [
    ('stable-creative-upscale-v1:0', 'a castle', {'image': picture(256, 256), 'creativity': 0.3}, (1024, 1024), 0.6),
    ('stable-conservative-upscale-v1:0', 'a castle', {'image': picture(256, 256)}, (1024, 1024), 0.4),
    ('stable-fast-upscale-v1:0', None, {'image': picture(256, 128)}, (1024, 512), 0.03),
    ('stable-image-inpaint-v1:0', 'a red door', {'image': SRC, 'mask': mask(512, 512, (0, 0, 10, 10)), 'grow_mask': 3}, (512, 512), 0.07),
    ('stable-outpaint-v1:0', 'more sea', {'image': SRC, 'left': 128, 'down': 64, 'creativity': 0.5}, (640, 576), 0.06),
    ('stable-image-search-recolor-v1:0', 'make it gold', {'image': SRC, 'select_prompt': 'the cup'}, (512, 512), 0.07),
    ('stable-image-search-replace-v1:0', 'a dog', {'image': SRC, 'search_prompt': 'the cat'}, (512, 512), 0.07),
    ('stable-image-erase-object-v1:0', None, {'image': SRC, 'mask': mask(512, 512, (0, 0, 50, 50))}, (512, 512), 0.07),
    ('stable-image-remove-background-v1:0', None, {'image': SRC}, (512, 512), 0.07),
    ('stable-image-control-sketch-v1:0', 'a house', {'image': SRC, 'control_strength': 0.8}, (512, 512), 0.07),
    ('stable-image-control-structure-v1:0', 'a house', {'image': SRC, 'control_strength': 0.2}, (512, 512), 0.07),
    ('stable-image-style-guide-v1:0', 'a house', {'image': SRC, 'fidelity': 0.7, 'size': '1792x1024'}, (1344, 768), 0.07),
    ('stable-style-transfer-v1:0', None, {'init_image': SRC, 'style_image': WIDE, 'style_strength': 0.5}, (512, 512), 0.08),
]
# fmt: on


@pytest.mark.parametrize(("service", "prompt", "kwargs", "size", "cost"), SERVICES, ids=[s[0] for s in SERVICES])
def test_every_service_through_its_us_profile(aws, emulator, service, prompt, kwargs, size, cost):
    resp = gesso.image_generation(f"bedrock/us.stability.{service}", prompt, **kwargs, **aws)
    request = emulator.requests[-1]
    assert request.path == f"/model/us.stability.{service.replace(':', '%3A')}/invoke"
    body = request.json()
    assert body.get("prompt") == prompt
    for key, value in kwargs.items():
        if isinstance(value, bytes):
            assert body[key] == base64.b64encode(value).decode()
        elif key != "size":
            assert body[key] == value
    assert resp.size == f"{size[0]}x{size[1]}" and resp.cost == pytest.approx(cost)


def test_services_are_refused_by_base_id(aws, emulator, bedrock):
    with pytest.raises(
        InvalidRequestError,
        match="only through cross-Region inference profiles: use bedrock/us.stability.stable-image-inpaint-v1:0",
    ):
        gesso.image_generation("bedrock/stability.stable-image-inpaint-v1:0", "x", image=SRC, **aws)
    assert len(emulator.requests) == 0
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        invoke(bedrock, "stability.stable-image-inpaint-v1:0", {"prompt": "x", "image": B64})
    assert "with on-demand throughput isn\u2019t supported" in info.value.response["Error"]["Message"]


def test_remove_background_is_transparent(aws):
    resp = gesso.image_generation("bedrock/us.stability.stable-image-remove-background-v1:0", image=SRC, **aws)
    assert pil(resp.data[0].b64_json).getchannel("A").getextrema() == (0, 255)


# -- constraints --------------------------------------------------------------------------------------------

S = "bedrock/us.stability."
# fmt: off
CASES = [
    ('sdxl size', SDXL1, 'x', {'size': '128x512'}, 'size', '128x512 is not an SDXL size on Bedrock; the nearest is 640x1536 (set snap_size to true to use it). Allowed: 1024x1024'),
    ('sdxl v0 seed example', SDXL0, 'x', {'size': '128x512', 'seed': 30}, 'size', '512x512'),
    ('sdxl width/height', SDXL1, 'x', {'width': 512, 'height': 512}, 'width/height', 'not an SDXL size'),
    ('sdxl multiple of 64', SDXL1, 'x', {'width': 1000, 'height': 1024}, 'width/height', '1000x1024 is not an SDXL size on Bedrock; the nearest is 1024x1024'),
    ('sdxl samples', SDXL1, 'x', {'samples': 2}, 'samples', 'must be 1'),
    ('sdxl cfg', SDXL1, 'x', {'cfg_scale': 36}, 'cfg_scale', 'between 0 and 35'),
    ('sdxl steps low', SDXL1, 'x', {'steps': 9}, 'steps', 'between 10 and 50'),
    ('sdxl steps high', SDXL1, 'x', {'steps': 51}, 'steps', 'between 10 and 50'),
    ('sdxl seed', SDXL1, 'x', {'seed': 4294967296}, 'seed', 'between 0 and 4294967295'),
    ('sdxl sampler', SDXL1, 'x', {'sampler': 'EULER'}, 'sampler', 'K_EULER'),
    ('sdxl clip', SDXL1, 'x', {'clip_guidance_preset': 'FAST'}, 'clip_guidance_preset', 'FAST_BLUE'),
    ('sdxl style', SDXL1, 'x', {'style_preset': 'oil'}, 'style_preset', 'photographic'),
    ('sdxl prompt long', SDXL1, 'x' * 2001, {}, 'text_prompts[0].text', 'at most 2000 characters'),
    ('sdxl no prompt', SDXL1, None, {}, 'prompt', 'is required'),
    ('sdxl both prompts', SDXL1, 'x', {'text_prompts': [{'text': 'y'}]}, 'text_prompts', 'either prompt'),
    ('sdxl quality', SDXL1, 'x', {'quality': 'hd'}, 'quality', 'no quality setting'),
    ('sdxl init size with width', SDXL1, 'x', {'init_image': SRC, 'width': 1024, 'height': 1024}, 'width', 'output follows the init image'),
    ('sdxl init too small', SDXL1, 'x', {'init_image': picture(256, 256)}, 'init_image', '262,144 to 1,048,576 pixels'),
    ('sdxl image_strength', SDXL1, 'x', {'init_image': SRC, 'image_strength': 1.5}, 'image_strength', 'between 0 and 1'),
    ('sdxl strength without image', SDXL1, 'x', {'image_strength': 0.5}, '', "'init_image' is required together with 'image_strength'"),
    ('sdxl mode', SDXL1, 'x', {'init_image': SRC, 'init_image_mode': 'BLEND'}, 'init_image_mode', 'IMAGE_STRENGTH, STEP_SCHEDULE'),
    ('sdxl step schedule', SDXL1, 'x', {'init_image': SRC, 'step_schedule_start': -0.1}, 'step_schedule_start', 'between 0 and 1'),
    ('sdxl mask missing', SDXL1, 'x', {'init_image': SRC, 'mask_source': 'MASK_IMAGE_WHITE'}, 'mask_image', 'is required'),
    ('sdxl mask with alpha', SDXL1, 'x', {'init_image': SRC, 'mask_source': 'INIT_IMAGE_ALPHA', 'mask_image': mask(512, 512, (0, 0, 9, 9))}, 'mask_image', 'not used with mask_source INIT_IMAGE_ALPHA'),
    ('sdxl mask size', SDXL1, 'x', {'init_image': SRC, 'mask_source': 'MASK_IMAGE_WHITE', 'mask_image': mask(640, 512, (0, 0, 9, 9))}, 'mask_image', 'must be the size of init_image'),
    ('sdxl mask_source', SDXL1, 'x', {'init_image': SRC, 'mask_source': 'ALPHA'}, 'mask_source', 'MASK_IMAGE_WHITE'),
    ('v2 empty prompt', SD35, '', {}, 'prompt', '1 to 10000 characters'),
    ('v2 no prompt', ULTRA, None, {}, 'prompt', 'is required for Stable Image Ultra 1.1'),
    ('v2 negative too long', CORE, 'x', {'negative_prompt': 'n' * 10001}, 'negative_prompt', 'at most 10000 characters'),
    ('v2 aspect ratio', CORE, 'x', {'aspect_ratio': '4:3'}, 'aspect_ratio', '16:9, 1:1, 21:9'),
    ('v2 size vs aspect', CORE, 'x', {'aspect_ratio': '1:1', 'size': '1792x1024'}, 'aspect_ratio', 'contradicting values'),
    ('v2 ultra webp', ULTRA, 'x', {'output_format': 'webp'}, 'output_format', 'jpeg, png'),
    ('v2 ultra cfg', ULTRA, 'x', {'cfg_scale': 5}, 'cfg_scale', 'unknown parameter'),
    ('v2 ultra mode', ULTRA, 'x', {'mode': 'image-to-image'}, 'mode', 'text-to-image'),
    ('v2 core mode', CORE, 'x', {'mode': 'text-to-image'}, 'mode', 'unknown parameter'),
    ('v2 sd35 seed', SD35, 'x', {'seed': 4294967295}, 'seed', 'between 0 and 4294967294'),
    ('v2 sd35 cfg', SD35, 'x', {'cfg_scale': 11}, 'cfg_scale', 'between 1 and 10'),
    ('v2 i2i needs strength', SD35, 'x', {'mode': 'image-to-image', 'image': SRC}, 'strength', 'is required'),
    ('v2 i2i needs image', SD35, 'x', {'mode': 'image-to-image', 'strength': 0.5}, 'image', 'is required'),
    ('v2 i2i no aspect', SD35, 'x', {'mode': 'image-to-image', 'image': SRC, 'strength': 0.5, 'size': '1024x1024'}, 'aspect_ratio', 'only for text-to-image'),
    ('v2 image without mode needs strength', SD35, 'x', {'image': SRC}, 'strength', 'is required'),
    ('v2 image without mode no aspect', SD35, 'x', {'image': SRC, 'strength': 0.5, 'size': '1024x1024'}, 'aspect_ratio', 'only for text-to-image'),
    ('v2 image without mode tiny', SD35, 'x', {'image': picture(63, 100), 'strength': 0.5}, 'image', 'at least 64 pixels'),
    ('v2 image with t2i mode', SD35, 'x', {'mode': 'text-to-image', 'image': SRC, 'strength': 0.5}, 'image', 'cannot be used with mode text-to-image'),
    ('v2 strength without image', SD35, 'x', {'strength': 0.5}, 'strength', 'only for image-to-image'),
    ('ultra strength high', ULTRA, 'x', {'image': SRC, 'strength': 1.5}, 'strength', 'between 0 and 1'),
    ('ultra strength negative', ULTRA, 'x', {'image': SRC, 'strength': -0.1}, 'strength', 'between 0 and 1'),
    ('ultra strength text', ULTRA, 'x', {'image': SRC, 'strength': 'high'}, 'strength', 'must be a number'),
    ('ultra strength without image', ULTRA, 'x', {'strength': 0.5}, 'strength', 'only for image-to-image'),
    ('ultra i2i no aspect', ULTRA, 'x', {'image': SRC, 'size': '1792x1024'}, 'aspect_ratio', 'only for text-to-image'),
    ('ultra i2i no mode', ULTRA, 'x', {'image': SRC, 'mode': 'text-to-image'}, 'mode', 'must be left out for image-to-image'),
    ('ultra tiny image', ULTRA, 'x', {'image': picture(63, 100)}, 'image', 'at least 64 pixels'),
    ('ultra image not image', ULTRA, 'x', {'image': b'GIF89a'}, 'image', 'not a readable image'),
    ('v2 i2i tiny image', SD35, 'x', {'mode': 'image-to-image', 'image': picture(63, 100), 'strength': 0.5}, 'image', 'at least 64 pixels'),
    ('v2 strength range', SD35, 'x', {'mode': 'image-to-image', 'image': SRC, 'strength': 1.2}, 'strength', 'between 0 and 1'),
    ('v2 style', CORE, 'x', {'style': 'anime'}, 'style', 'no style presets'),
    ('v2 quality', CORE, 'x', {'quality': 'standard'}, 'quality', 'no quality setting'),
    ('svc creative too big', S + 'stable-creative-upscale-v1:0', 'x', {'image': picture(1100, 1000)}, 'image', '4,096 to 1,048,576 pixels'),
    ('svc creative creativity', S + 'stable-creative-upscale-v1:0', 'x', {'image': SRC, 'creativity': 0.6}, 'creativity', 'between 0.1 and 0.5'),
    ('svc conservative needs prompt', S + 'stable-conservative-upscale-v1:0', None, {'image': SRC}, 'prompt', 'is required'),
    ('svc fast side', S + 'stable-fast-upscale-v1:0', None, {'image': picture(1600, 400)}, 'image', '32 to 1536 pixels'),
    ('svc fast prompt', S + 'stable-fast-upscale-v1:0', 'x', {'image': SRC}, 'prompt', 'takes no prompt'),
    ('svc std aspect', S + 'stable-image-inpaint-v1:0', 'x', {'image': picture(1300, 500)}, 'image', 'between 1:2.5 and 2.5:1'),
    ('svc std side', S + 'stable-image-inpaint-v1:0', 'x', {'image': picture(60, 100)}, 'image', 'at least 64 pixels'),
    ('svc std pixels', S + 'stable-image-inpaint-v1:0', 'x', {'image': picture(3100, 3100, fmt='JPEG')}, 'image', 'at most 9,437,184 pixels'),
    ('svc grow_mask', S + 'stable-image-inpaint-v1:0', 'x', {'image': SRC, 'grow_mask': 21}, 'grow_mask', 'between 0 and 20'),
    ('svc inpaint size', S + 'stable-image-inpaint-v1:0', 'x', {'image': SRC, 'size': '1024x1024'}, 'size', "the output takes the input image's size, 512x512"),
    ('svc outpaint no direction', S + 'stable-outpaint-v1:0', None, {'image': SRC}, '', 'at least one of left, right, up or down'),
    ('svc outpaint zero', S + 'stable-outpaint-v1:0', None, {'image': SRC, 'left': 0}, '', 'at least one of left'),
    ('svc outpaint range', S + 'stable-outpaint-v1:0', None, {'image': SRC, 'up': 2001}, 'up', 'between 0 and 2000'),
    ('svc outpaint creativity', S + 'stable-outpaint-v1:0', None, {'image': SRC, 'up': 10, 'creativity': 0.05}, 'creativity', 'between 0.1 and 1'),
    ('svc recolor select', S + 'stable-image-search-recolor-v1:0', 'x', {'image': SRC}, 'select_prompt', 'is required'),
    ('svc replace search', S + 'stable-image-search-replace-v1:0', 'x', {'image': SRC}, 'search_prompt', 'is required'),
    ('svc erase prompt', S + 'stable-image-erase-object-v1:0', 'x', {'image': SRC}, 'prompt', 'takes no prompt'),
    ('svc remove bg seed', S + 'stable-image-remove-background-v1:0', None, {'image': SRC, 'seed': 3}, 'seed', 'unknown parameter'),
    ('svc control strength', S + 'stable-image-control-sketch-v1:0', 'x', {'image': SRC, 'control_strength': 1.5}, 'control_strength', 'between 0 and 1'),
    ('svc style guide fidelity', S + 'stable-image-style-guide-v1:0', 'x', {'image': SRC, 'fidelity': -1}, 'fidelity', 'between 0 and 1'),
    ('svc transfer style image', S + 'stable-style-transfer-v1:0', None, {'init_image': SRC}, 'style_image', 'is required'),
    ('svc transfer change', S + 'stable-style-transfer-v1:0', None, {'init_image': SRC, 'style_image': SRC, 'change_strength': 0.05}, 'change_strength', 'between 0.1 and 1'),
    ('svc output format', S + 'stable-image-control-structure-v1:0', 'x', {'image': SRC, 'output_format': 'gif'}, 'output_format', 'jpeg, png, webp'),
    ('svc seed', S + 'stable-image-control-structure-v1:0', 'x', {'image': SRC, 'seed': -1}, 'seed', 'between 0 and 4294967294'),
    ('svc image not image', S + 'stable-image-control-structure-v1:0', 'x', {'image': b'GIF89a'}, 'image', 'not a readable image'),
]
# fmt: on


@pytest.mark.parametrize(
    ("model", "prompt", "kwargs", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_every_constraint_is_enforced_before_sending(aws, emulator, model, prompt, kwargs, path, fragment):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(model, prompt, **kwargs, **aws)
    assert [v for v in info.value.violations if v.path == path and fragment in v.message], str(info.value)
    assert len(emulator.requests) == 0


def test_emulator_rejects_bad_service_and_v2_bodies(bedrock):
    from botocore.exceptions import ClientError

    for model_id, body, fragment in [
        (
            "us.stability.stable-outpaint-v1:0",
            {"image": B64},
            "#: #: no subschema matched out of the total 4 subschemas",
        ),
        (
            "stability.stable-image-core-v1:1",
            {"prompt": "x", "style_preset": "anime"},
            "#: extraneous key [style_preset] is not permitted",
        ),
        (
            "stability.stable-diffusion-xl-v1",
            {"text_prompts": [{"text": "x"}], "width": 512, "height": 512},
            "Invalid dimensions (512, 512)",
        ),
        ("stability.sd3-5-large-v1:0", {"negative_prompt": "x"}, "#: required key [prompt] not found"),
        ("stability.sd3-5-large-v1:0", {"prompt": "x", "image": B64}, "#: required key [strength] not found"),
        ("stability.stable-image-ultra-v1:1", {"prompt": "x", "image": B64, "strength": 1.5}, "#/strength: 1.5 is not"),
        ("stability.stable-image-ultra-v1:1", {"prompt": "x", "strength": 0.5}, "extraneous key [strength]"),
    ]:
        with pytest.raises(ClientError) as info:
            invoke(bedrock, model_id, body)
        assert info.value.response["Error"]["Code"] == "ValidationException"
        assert fragment in info.value.response["Error"]["Message"], info.value.response["Error"]["Message"]


def test_service_base_ids_are_not_listed_as_usable(aws):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "gesso", "models"], capture_output=True, text=True, check=True).stdout
    ids = {line.split("\t")[0] for line in out.splitlines()}
    assert "us.stability.stable-image-inpaint-v1:0" in ids
    assert "stability.stable-image-inpaint-v1:0" not in ids
    assert "stability.stable-image-ultra-v1:1" in ids
    with pytest.raises(UnknownModelError) as info:
        gesso.image_generation("bedrock/stability.stable-image-inpaint-v9:0", "x", **aws)  # a near miss
    assert "us.stability.stable-image-inpaint-v1:0" in str(info.value)
    assert " stability.stable-image-inpaint-v1:0" not in str(info.value)


def test_sdxl_and_services_suggest_names(aws):
    with pytest.raises(
        InvalidRequestError,
        match=r"cfgscale: unknown parameter for Stable Diffusion XL 1.0 \(did you mean cfg_scale\?\)",
    ):
        gesso.image_generation(SDXL1, "x", cfgscale=7, **aws)
    with pytest.raises(
        InvalidRequestError, match=r"growmask: unknown parameter for Inpaint \(inpaint\) \(did you mean grow_mask\?\)"
    ):
        gesso.image_generation("bedrock/us.stability.stable-image-inpaint-v1:0", "x", image=SRC, growmask=3, **aws)


# -- n fans out into paid calls: capped ------------------------------------------------

# fmt: off
ONE_IMAGE_FAMILIES = [
    ("sdxl", SDXL1, "x", {}), ("sd3.5", SD35, "x", {}), ("ultra", ULTRA, "x", {}), ("core", CORE, "x", {}),
    ("service", S + "stable-image-inpaint-v1:0", "x", {"image": SRC}),
    ("service without seed", S + "stable-image-remove-background-v1:0", None, {"image": SRC}),
]
# fmt: on


@pytest.mark.parametrize(
    ("model", "prompt", "kwargs"), [f[1:] for f in ONE_IMAGE_FAMILIES], ids=[f[0] for f in ONE_IMAGE_FAMILIES]
)
def test_n_past_the_cap_is_refused_before_any_body_is_built(aws, emulator, monkeypatch, model, prompt, kwargs):
    from gesso_bedrock_stability import common, sdxl

    from gesso import plugins

    def never(*args, **kwargs):
        raise AssertionError("a body was built")

    for module, name in ((common, "place_flat"), (common, "fan_out"), (sdxl, "BodyBuilder")):
        monkeypatch.setattr(module, name, never)
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(model, prompt, n=11, **kwargs, **aws)
    (violation,) = info.value.violations
    assert violation.path == "n" and violation.message.startswith("11 images would be 11 separate paid calls")
    assert "more than the cap of 10; to allow it, pass max_fanout=11" in violation.message
    assert len(emulator.requests) == 0
    # n=10**6 straight to the plugin (gesso's own checks may bound n before it gets there): nothing built
    spec = plugins.get_registry().get(model.removeprefix("bedrock/").removeprefix("us."))
    huge = ImageRequest(
        model=spec, model_name=spec.id, prompt=prompt, n=10**6, params=kwargs, target=Target(model_id=spec.id)
    )
    with pytest.raises(InvalidRequestError, match="n: 1000000 images would be 1000000 separate paid calls"):
        plugins.route(spec).gesso_transform_request(request=huge)  # stage calls are routed to the owner


def test_max_fanout_sets_the_cap_per_call(aws, emulator):
    resp = gesso.image_generation(CORE, "x", n=12, max_fanout=12, **aws)
    assert len(emulator.requests) == 12 and len(resp.data) == 12
    assert all("max_fanout" not in body for body in sent(emulator)), "a gesso option, never sent"
    assert len(gesso.image_generation(SDXL1, "x", n=10, seed=1, **aws).data) == 10, "10 is within the default cap"
    with pytest.raises(InvalidRequestError, match="more than the cap of 2; to allow it, pass max_fanout=3"):
        gesso.image_generation(S + "stable-image-inpaint-v1:0", "x", image=SRC, n=3, max_fanout=2, **aws)
    assert len(emulator.requests) == 22


@pytest.mark.parametrize("bad", [0, -1, "x", "10", 2.5, True])
def test_invalid_max_fanout_is_named(aws, emulator, bad):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(SD35, "x", n=2, max_fanout=bad, **aws)
    (violation,) = info.value.violations
    assert violation.path == "max_fanout" and "must be a whole number of at least 1" in violation.message
    assert len(emulator.requests) == 0


@pytest.mark.parametrize(
    ("model", "prompt", "kwargs"), [f[1:] for f in ONE_IMAGE_FAMILIES[:5]], ids=[f[0] for f in ONE_IMAGE_FAMILIES[:5]]
)
@pytest.mark.parametrize("seed", [None, 0])
def test_without_a_seed_each_call_gets_a_distinct_seed_from_gesso(aws, emulator, model, prompt, kwargs, seed):
    given = {} if seed is None else {"seed": seed}
    resp = gesso.image_generation(model, prompt, n=4, **given, **kwargs, **aws)
    seeds = [body["seed"] for body in sent(emulator)]
    top = 4294967294 if model in (SD35, ONE_IMAGE_FAMILIES[4][1]) else 4294967295  # each model's seed range
    assert len(set(seeds)) == 4 and all(1 <= s <= top for s in seeds)
    assert sorted(d.seed for d in resp.data) == sorted(seeds), "each image reports its seed"
    assert len({d.b64_json for d in resp.data}) == 4, "no identical images"


def test_services_without_a_seed_field_still_fan_out(aws, emulator):
    resp = gesso.image_generation(S + "stable-image-remove-background-v1:0", image=SRC, n=2, **aws)
    assert sent(emulator) == [{"image": B64}, {"image": B64}] and len(resp.data) == 2
