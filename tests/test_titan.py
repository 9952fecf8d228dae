"""Titan Image Generator v1 and v2: every task through the emulator, the size table, v2-only tasks and
fields, and each documented constraint refused before any HTTP request (bedrock_wire.md section 5)."""

from __future__ import annotations

import base64
import os
import warnings

import pytest

import gesso
from gesso import api
from gesso.errors import ContentFilteredError, InvalidRequestError, ModelLifecycleWarning
from helpers import invoke, mask, picture, pil, png_info

V1 = "bedrock/amazon.titan-image-generator-v1"
V2 = "bedrock/amazon.titan-image-generator-v2:0"
SRC = picture(512, 512, (90, 90, 200))
B64 = base64.b64encode(SRC).decode()
BOX = (128, 128, 383, 383)
MASK = mask(512, 512, BOX)
MASK64 = base64.b64encode(MASK).decode()


def sent(emulator) -> dict:
    return emulator.requests[-1].json()


def test_the_acceptance_call_sends_every_parameter(aws, emulator):
    resp = gesso.image_generation(V2, "a lighthouse", size="1024x1024", n=2, quality="hd", seed=42, cfgScale=7.5, **aws)
    assert sent(emulator) == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a lighthouse"},
        "imageGenerationConfig": {
            "width": 1024,
            "height": 1024,
            "numberOfImages": 2,
            "quality": "premium",
            "seed": 42,
            "cfgScale": 7.5,
        },
    }
    assert len(resp.data) == 2 and resp.size == "1024x1024"
    assert resp.cost == pytest.approx(0.024)


@pytest.mark.parametrize(
    ("size", "quality", "cost"),
    [
        ("512x512", "standard", 0.008),
        ("768x768", "premium", 0.010),
        ("1024x1024", "standard", 0.010),
        ("1408x768", "hd", 0.012),
    ],
)
def test_cost_by_price_class_and_quality(aws, size, quality, cost):
    assert gesso.image_generation(V2, "x", size=size, quality=quality, **aws).cost == pytest.approx(cost)


def test_v1_text_to_image(aws, emulator):
    resp = gesso.image_generation(V1, "a lighthouse", negativeText="fog", size="512x512", **aws)
    assert sent(emulator) == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"negativeText": "fog", "text": "a lighthouse"},
        "imageGenerationConfig": {"width": 512, "height": 512},
    }
    assert resp.size == "512x512" and resp.cost == pytest.approx(0.008)


def test_v2_image_conditioning(aws, emulator):
    gesso.image_generation(V2, "a castle", conditionImage=SRC, controlMode="CANNY_EDGE", controlStrength=0.5, **aws)
    assert sent(emulator)["textToImageParams"] == {
        "conditionImage": B64,
        "controlMode": "CANNY_EDGE",
        "controlStrength": 0.5,
        "text": "a castle",
    }


@pytest.mark.parametrize("model", [V1, V2])
def test_inpainting_changes_only_the_masked_area_and_can_return_the_mask(aws, emulator, model):
    from PIL import ImageChops

    resp = gesso.image_generation(
        model, "a flower", taskType="INPAINTING", image=SRC, maskImage=MASK, returnMask=True, **aws
    )
    assert sent(emulator) == {
        "taskType": "INPAINTING",
        "inPaintingParams": {"image": B64, "maskImage": MASK64, "returnMask": True, "text": "a flower"},
    }
    changed = ImageChops.difference(pil(resp.data[0].b64_json).convert("RGB"), pil(B64).convert("RGB")).getbbox()
    assert changed is not None and BOX[0] <= changed[0] and changed[2] <= BOX[2] + 1
    assert resp.mask.b64_json == MASK64
    assert resp.cost == pytest.approx(0.008), "the input's size is 512-class"


def test_inpainting_without_text_and_outpainting(aws, emulator):
    gesso.image_generation(V2, taskType="INPAINTING", image=SRC, maskPrompt="the cat", **aws)
    assert sent(emulator) == {"taskType": "INPAINTING", "inPaintingParams": {"image": B64, "maskPrompt": "the cat"}}
    resp = gesso.image_generation(
        V1, "a garden", taskType="OUTPAINTING", image=SRC, maskPrompt="the cat", outPaintingMode="PRECISE", n=2, **aws
    )
    assert sent(emulator) == {
        "taskType": "OUTPAINTING",
        "outPaintingParams": {"image": B64, "maskPrompt": "the cat", "outPaintingMode": "PRECISE", "text": "a garden"},
        "imageGenerationConfig": {"numberOfImages": 2},
    }
    assert len(resp.data) == 2 and resp.size == "512x512"


# AWS decides: https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-image.html
# puts "height": int, "width": int in imageGenerationConfig of both the "Inpainting (Request)" and "Outpainting
# (Request)" templates, and its Inpainting code example sends this body (its Outpainting example, 512x512 too):
AWS_INPAINTING = {
    "taskType": "INPAINTING",
    "inPaintingParams": {
        "text": "Modernize the windows of the house",
        "negativeText": "bad quality, low res",
        "image": base64.b64encode(picture(1024, 1024)).decode(),
        "maskPrompt": "windows",
    },
    "imageGenerationConfig": {"numberOfImages": 1, "height": 512, "width": 512, "cfgScale": 8.0},
}


def test_aws_inpainting_example_body_is_accepted_end_to_end(aws, emulator, bedrock):
    """AWS's own example (model-parameters-titan-image.html, Inpainting tab), as Bedrock spells it: through
    gesso (sent unchanged, a 512x512 output priced as 512-class) and raw through boto3."""
    resp = gesso.image_generation(V1, **AWS_INPAINTING, **aws)
    assert sent(emulator) == AWS_INPAINTING
    assert resp.size == "512x512" and resp.cost == pytest.approx(0.008), "the requested size, not the 1024 input's"
    answer = invoke(bedrock, "amazon.titan-image-generator-v1", AWS_INPAINTING)
    assert [(png_info(i).width, png_info(i).height) for i in answer["images"]] == [(512, 512)]


@pytest.mark.parametrize("model", [V1, V2])
@pytest.mark.parametrize("task", ["INPAINTING", "OUTPAINTING"])
def test_edits_take_a_size_from_the_table(aws, emulator, model, task):
    """size= and imageGenerationConfig width/height work for edits as for TEXT_IMAGE (AWS's templates above)."""
    big = picture(1024, 1024)
    resp = gesso.image_generation(
        model, "a door", taskType=task, image=big, maskPrompt="the door", size="768x768", **aws
    )
    assert sent(emulator)["imageGenerationConfig"] == {"width": 768, "height": 768}
    assert resp.size == "768x768" and png_info(resp.data[0].b64_json).width == 768
    assert resp.cost == pytest.approx(0.008), "768x768 is 512-class; the 1024x1024 input would be 0.010"
    config = {"width": 1408, "height": 768, "numberOfImages": 2}
    resp = gesso.image_generation(
        model, "a door", taskType=task, image=SRC, maskPrompt="x", imageGenerationConfig=config, **aws
    )
    assert resp.size == "1408x768" and len(resp.data) == 2 and resp.cost == pytest.approx(0.020)


def test_edits_snap_to_the_table_when_asked(aws, emulator):
    resp = gesso.image_generation(
        V2, taskType="INPAINTING", image=SRC, maskImage=MASK, size="1000x1000", snap_size=True, **aws
    )
    assert sent(emulator)["imageGenerationConfig"] == {"width": 1024, "height": 1024}
    assert resp.size == "1024x1024" and resp.warnings == (
        "1000x1000 is not a Titan size; snapped to the nearest, 1024x1024",
    )


def test_emulator_checks_an_edits_size_against_the_table(bedrock):
    from botocore.exceptions import ClientError

    body = {**AWS_INPAINTING, "imageGenerationConfig": {"width": 1000, "height": 1000}}
    with pytest.raises(ClientError) as info:
        invoke(bedrock, "amazon.titan-image-generator-v2:0", body)
    assert info.value.response["Error"]["Message"].endswith("Given: (1000, 1000).")


def test_image_variation(aws, emulator):
    resp = gesso.image_generation(
        V1, "brighter", taskType="IMAGE_VARIATION", images=[SRC, SRC], similarityStrength=0.9, size="768x768", **aws
    )
    assert sent(emulator) == {
        "taskType": "IMAGE_VARIATION",
        "imageVariationParams": {"images": [B64, B64], "similarityStrength": 0.9, "text": "brighter"},
        "imageGenerationConfig": {"width": 768, "height": 768},
    }
    assert resp.size == "768x768"


def test_v2_color_guided_and_background_removal(aws, emulator):
    gesso.image_generation(
        V2, "a poster", taskType="COLOR_GUIDED_GENERATION", colors=["#112233"], referenceImage=SRC, **aws
    )
    assert sent(emulator) == {
        "taskType": "COLOR_GUIDED_GENERATION",
        "colorGuidedGenerationParams": {"colors": ["#112233"], "referenceImage": B64, "text": "a poster"},
    }
    resp = gesso.image_generation(V2, taskType="BACKGROUND_REMOVAL", image=SRC, **aws)
    assert sent(emulator) == {"taskType": "BACKGROUND_REMOVAL", "backgroundRemovalParams": {"image": B64}}
    assert pil(resp.data[0].b64_json).getchannel("A").getextrema() == (0, 255)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"taskType": "COLOR_GUIDED_GENERATION", "colors": ["#000000"]}, "taskType"),
        ({"taskType": "BACKGROUND_REMOVAL", "image": SRC, "prompt": None}, "taskType"),
        ({"conditionImage": SRC}, "textToImageParams.conditionImage"),
        (
            {"textToImageParams": {"conditionImage": SRC, "controlMode": "SEGMENTATION"}},
            "textToImageParams.controlMode",
        ),
    ],
)
def test_v2_only_tasks_and_fields_on_v1_name_v2(aws, emulator, kwargs, path):
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", "a poster")
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(V1, prompt, **kwargs, **aws)
    found = [v for v in info.value.violations if v.path == path]
    assert found and "needs amazon.titan-image-generator-v2:0" in found[0].message
    assert len(emulator.requests) == 0


def test_v1_emulation_rejects_v2_bodies_as_a_schema_would(bedrock):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        invoke(
            bedrock,
            "amazon.titan-image-generator-v1",
            {"taskType": "BACKGROUND_REMOVAL", "backgroundRemovalParams": {"image": B64}},
        )
    assert "#/taskType: BACKGROUND_REMOVAL is not a valid enum value" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        invoke(
            bedrock,
            "amazon.titan-image-generator-v1",
            {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x", "conditionImage": B64}},
        )
    assert (
        "#/textToImageParams: extraneous key [conditionImage] is not permitted"
        in info.value.response["Error"]["Message"]
    )


def test_sizes_outside_the_table_list_the_allowed_and_the_nearest(aws, emulator):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(V2, "x", size="1280x720", **aws)
    (violation,) = info.value.violations
    assert violation.path == "size"
    assert violation.message.startswith(
        "1280x720 is not a Titan size; the nearest is 1152x640 (set snap_size to true to use it). Allowed: 1024x1024, 768x768, 512x512,"
    )
    assert "1173x640" in violation.message
    with pytest.raises(
        InvalidRequestError,
        match=r"imageGenerationConfig.width/height: 1000x1000 is not a Titan size; the nearest is 1024x1024",
    ):
        gesso.image_generation(V2, "x", width=1000, height=1000, **aws)
    assert len(emulator.requests) == 0


def test_snapping_is_opt_in_and_reported(aws, emulator):
    resp = gesso.image_generation(V2, "x", size="1280x720", snap_size=True, **aws)
    assert sent(emulator)["imageGenerationConfig"] == {"width": 1152, "height": 640}
    assert resp.size == "1152x640"
    assert resp.warnings == ("1280x720 is not a Titan size; snapped to the nearest, 1152x640",)
    assert resp.cost == pytest.approx(0.010)
    with pytest.raises(InvalidRequestError, match="snap_size: must be true or false"):
        gesso.image_generation(V2, "x", size="1280x720", snap_size="yes", **aws)


@pytest.mark.parametrize(
    ("given", "nearest"),
    [
        ((1920, 1080), (1152, 640)),
        ((1300, 780), (1280, 768)),
        ((2048, 2048), (1024, 1024)),
        ((600, 600), (512, 512)),
        ((400, 700), (384, 704)),
    ],
)
def test_nearest_size(given, nearest):
    from gesso_bedrock_titan.sizes import nearest as near

    assert (near(*given).width, near(*given).height) == nearest


def test_emulator_size_error_has_bedrocks_exact_text(bedrock):
    from botocore.exceptions import ClientError

    body = {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "x"},
        "imageGenerationConfig": {"width": 1280, "height": 720},
    }
    with pytest.raises(ClientError) as info:
        invoke(bedrock, "amazon.titan-image-generator-v2:0", body)
    assert (
        info.value.response["Error"]["Message"]
        == "400 Bad Request: Value of (width, height) is not valid. Given: (1280, 720)."
    )


def _big_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (1400, 1400), os.urandom(1400 * 1400 * 3)).save(out, format="PNG", compress_level=0)
    return out.getvalue()


LONG = "x" * 513
T = {"taskType": "INPAINTING", "image": SRC}
CASES = [
    ("text too long", {"prompt": LONG}, "textToImageParams.text", "1 to 512 characters"),
    ("negativeText empty", {"negativeText": ""}, "textToImageParams.negativeText", "1 to 512 characters"),
    ("cfgScale low", {"cfgScale": 1.0}, "imageGenerationConfig.cfgScale", "between 1.1 and 10"),
    ("cfgScale high", {"cfgScale": 10.1}, "imageGenerationConfig.cfgScale", "between 1.1 and 10"),
    ("seed high", {"seed": 2147483647}, "imageGenerationConfig.seed", "between 0 and 2147483646"),
    ("seed negative", {"seed": -1}, "imageGenerationConfig.seed", "between 0 and 2147483646"),
    ("n zero", {"numberOfImages": 0}, "imageGenerationConfig.numberOfImages", "between 1 and 5"),
    ("n six", {"n": 6}, "imageGenerationConfig.numberOfImages", "between 1 and 5 (got 6) [from n]"),
    ("quality", {"quality": "ultra"}, "quality", "hd, high (-> premium)"),
    (
        "controlMode",
        {"conditionImage": SRC, "controlMode": "DEPTH"},
        "textToImageParams.controlMode",
        "CANNY_EDGE, SEGMENTATION",
    ),
    (
        "controlStrength",
        {"conditionImage": SRC, "controlStrength": 2},
        "textToImageParams.controlStrength",
        "between 0 and 1",
    ),
    (
        "control without image",
        {"controlStrength": 0.4},
        "textToImageParams",
        "'conditionImage' is required together with 'controlStrength'",
    ),
    ("inpaint no mask", {**T}, "inPaintingParams", "exactly one of maskPrompt"),
    ("inpaint two masks", {**T, "maskPrompt": "x", "maskImage": MASK}, "inPaintingParams", "exactly one of maskPrompt"),
    ("inpaint grey mask", {**T, "maskImage": mask(512, 512, BOX, grey=77)}, "inPaintingParams.maskImage", "pure black"),
    (
        "inpaint mask size",
        {**T, "maskImage": mask(512, 384, BOX)},
        "inPaintingParams.maskImage",
        "must be the size of inPaintingParams.image",
    ),
    (
        "inpaint size off the table",
        {**T, "maskPrompt": "x", "size": "1280x720"},
        "size",
        "1280x720 is not a Titan size",
    ),
    (
        "outpaint width/height off the table",
        {"taskType": "OUTPAINTING", "image": SRC, "maskPrompt": "x", "width": 1000, "height": 1000},
        "imageGenerationConfig.width/height",
        "1000x1000 is not a Titan size; the nearest is 1024x1024",
    ),
    ("inpaint text long", {**T, "maskPrompt": "x", "prompt": LONG}, "inPaintingParams.text", "1 to 512 characters"),
    ("inpaint returnMask", {**T, "maskPrompt": "x", "returnMask": 1}, "inPaintingParams.returnMask", "true or false"),
    (
        "outpaint text missing",
        {"taskType": "OUTPAINTING", "image": SRC, "maskPrompt": "x", "prompt": None},
        "prompt",
        "is required for taskType OUTPAINTING",
    ),
    (
        "outpaint mode",
        {"taskType": "OUTPAINTING", "image": SRC, "maskPrompt": "x", "outPaintingMode": "FAST"},
        "outPaintingParams.outPaintingMode",
        "DEFAULT, PRECISE",
    ),
    ("variation none", {"taskType": "IMAGE_VARIATION", "images": []}, "imageVariationParams.images", "1 to 5 items"),
    (
        "variation six",
        {"taskType": "IMAGE_VARIATION", "images": [SRC] * 6},
        "imageVariationParams.images",
        "1 to 5 items",
    ),
    (
        "similarity",
        {"taskType": "IMAGE_VARIATION", "images": [SRC], "similarityStrength": 0.19},
        "imageVariationParams.similarityStrength",
        "between 0.2 and 1",
    ),
    (
        "colors none",
        {"taskType": "COLOR_GUIDED_GENERATION", "colors": []},
        "colorGuidedGenerationParams.colors",
        "1 to 10 items",
    ),
    (
        "colors bad",
        {"taskType": "COLOR_GUIDED_GENERATION", "colors": ["#12345"]},
        "colorGuidedGenerationParams.colors[0]",
        "hex colour code",
    ),
    ("bgr prompt", {"taskType": "BACKGROUND_REMOVAL", "image": SRC}, "prompt", "takes no prompt"),
    (
        "bgr quality",
        {"taskType": "BACKGROUND_REMOVAL", "image": SRC, "prompt": None, "quality": "hd"},
        "quality",
        "takes no quality",
    ),
    (
        "long side",
        {"conditionImage": picture(1409, 700)},
        "textToImageParams.conditionImage",
        "at most 1408 pixels on the long side",
    ),
    ("too many bytes", {"conditionImage": _big_png()}, "textToImageParams.conditionImage", "at most 5 MB"),
    (
        "webp",
        {"taskType": "IMAGE_VARIATION", "images": [picture(512, 512, fmt="WEBP")]},
        "imageVariationParams.images[0]",
        "PNG or JPEG",
    ),
    ("unknown key", {"steps": 30}, "steps", "unknown parameter for taskType TEXT_IMAGE"),
    ("bad task", {"taskType": "UPSCALE"}, "taskType", "must be one of: TEXT_IMAGE, INPAINTING"),
]


@pytest.mark.parametrize(("kwargs", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_constraint_is_enforced_before_sending(aws, emulator, kwargs, path, fragment):
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", "a cat")
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(V2, prompt, **kwargs, **aws)
    assert [v for v in info.value.violations if v.path == path and fragment in v.message], str(info.value)
    assert "amazon.titan-image-generator-v2:0" in str(info.value)
    assert len(emulator.requests) == 0


def test_filtered_outputs(aws):
    from gesso_bedrock.emulator import BLOCK_OUTPUT, BLOCK_SOME

    with pytest.raises(ContentFilteredError, match="AUP or AWS Responsible AI Policy"):
        gesso.image_generation(V2, f"x {BLOCK_OUTPUT}", **aws)
    resp = gesso.image_generation(V2, f"x {BLOCK_SOME}", n=4, **aws)
    assert len(resp.data) == 2 and resp.filtered == 2 and resp.cost == pytest.approx(0.02)


def test_profile_ids_route_to_titan(aws, emulator):
    gesso.image_generation("bedrock/us.amazon.titan-image-generator-v2:0", "x", **aws)
    assert emulator.requests[-1].model_id == "us.amazon.titan-image-generator-v2:0"


def test_v2_lifecycle_warning(aws, monkeypatch):
    monkeypatch.setattr(api, "_lifecycle_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gesso.image_generation(V2, "x", **aws)
    (warning,) = [w for w in caught if issubclass(w.category, ModelLifecycleWarning)]
    assert (
        "amazon.titan-image-generator-v2:0 is a Legacy model on Bedrock whose announced end of life (2026-06-30) has passed"
        in str(warning.message)
    )
