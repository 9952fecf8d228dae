"""Nova Canvas: all seven task types end to end through the emulator, every image-input form, and a
violation per documented constraint (bedrock_wire.md 6.2-6.3), each refused before any HTTP request."""

from __future__ import annotations

import base64
import warnings

import pytest

import gesso
from gesso import api
from gesso.errors import InvalidRequestError, ModelLifecycleWarning, ModelRetiredError
from helpers import mask, picture, pil

NOVA = "bedrock/amazon.nova-canvas-v1:0"
SRC = picture(512, 384, (200, 60, 60))
REF = picture(400, 400, (20, 200, 20))
B64 = base64.b64encode(SRC).decode()
REF64 = base64.b64encode(REF).decode()
BOX = (128, 96, 383, 287)  # black: the area to edit
MASK = mask(512, 384, BOX)
MASK64 = base64.b64encode(MASK).decode()


def sent(emulator) -> dict:
    return emulator.requests[-1].json()


# -- every task, end to end ----------------------------------------------------------------------------


def test_color_guided_generation_the_seed_example(aws, emulator):
    resp = gesso.image_generation(
        NOVA, "A cute baby sea otter", taskType="COLOR_GUIDED_GENERATION",
        colorGuidedGenerationParams={"colors": ["#FFFFFF"]}, n=1, size="512x512", **aws,
    )  # fmt: skip
    assert sent(emulator) == {
        "taskType": "COLOR_GUIDED_GENERATION",
        "colorGuidedGenerationParams": {"colors": ["#FFFFFF"], "text": "A cute baby sea otter"},
        "imageGenerationConfig": {"width": 512, "height": 512, "numberOfImages": 1},
    }
    assert resp.size == "512x512" and resp.cost == pytest.approx(0.04)


def test_color_guided_flat_with_reference_image(aws, emulator):
    resp = gesso.image_generation(
        NOVA, "otter", taskType="COLOR_GUIDED_GENERATION", colors=["#FF0000", "#0000ff"], referenceImage=REF,
        negativeText="text", **aws,
    )  # fmt: skip
    assert sent(emulator)["colorGuidedGenerationParams"] == {
        "colors": ["#FF0000", "#0000ff"],
        "referenceImage": REF64,
        "negativeText": "text",
        "text": "otter",
    }
    red, _, blue = pil(resp.data[0].b64_json).convert("RGB").getpixel((0, 0))
    assert red > blue, "the emulated output uses the requested colours"


def test_image_variation_keeps_the_input_size(aws, emulator, tmp_path):
    path = tmp_path / "source.png"
    path.write_bytes(SRC)
    resp = gesso.image_generation(
        NOVA, "in autumn", taskType="IMAGE_VARIATION", images=[path, SRC], similarityStrength=0.6, n=2, **aws
    )
    assert sent(emulator) == {
        "taskType": "IMAGE_VARIATION",
        "imageVariationParams": {"images": [B64, B64], "similarityStrength": 0.6, "text": "in autumn"},
        "imageGenerationConfig": {"numberOfImages": 2},
    }
    assert resp.size == "512x384" and len(resp.data) == 2
    assert resp.cost == pytest.approx(0.08)


def test_image_variation_without_text(aws, emulator):
    gesso.image_generation(NOVA, taskType="IMAGE_VARIATION", images=[SRC], **aws)
    assert sent(emulator) == {"taskType": "IMAGE_VARIATION", "imageVariationParams": {"images": [B64]}}


def test_inpainting_with_a_mask_image_changes_only_the_masked_area(aws, emulator):
    from PIL import ImageChops

    resp = gesso.image_generation(NOVA, "a window", taskType="INPAINTING", image=SRC, maskImage=MASK, seed=3, **aws)
    assert sent(emulator) == {
        "taskType": "INPAINTING",
        "inPaintingParams": {"image": B64, "maskImage": MASK64, "text": "a window"},
        "imageGenerationConfig": {"seed": 3},
    }
    changed = ImageChops.difference(pil(resp.data[0].b64_json).convert("RGB"), pil(B64).convert("RGB")).getbbox()
    assert changed is not None
    assert BOX[0] <= changed[0] and BOX[1] <= changed[1] and changed[2] <= BOX[2] + 1 and changed[3] <= BOX[3] + 1
    assert resp.size == "512x384" and resp.cost == pytest.approx(0.04)


def test_inpainting_with_a_mask_prompt_and_no_text(aws, emulator):
    gesso.image_generation(NOVA, taskType="INPAINTING", inPaintingParams={"image": B64, "maskPrompt": "the dog"}, **aws)
    assert sent(emulator) == {"taskType": "INPAINTING", "inPaintingParams": {"image": B64, "maskPrompt": "the dog"}}


def test_outpainting_changes_only_the_white_area(aws, emulator):
    from PIL import ImageChops

    resp = gesso.image_generation(
        NOVA,
        "a beach",
        taskType="OUTPAINTING",
        image=SRC,
        maskImage=MASK,
        outPaintingMode="PRECISE",
        quality="premium",
        **aws,
    )
    assert sent(emulator) == {
        "taskType": "OUTPAINTING",
        "outPaintingParams": {"image": B64, "maskImage": MASK64, "outPaintingMode": "PRECISE", "text": "a beach"},
        "imageGenerationConfig": {"quality": "premium"},
    }
    out, src = pil(resp.data[0].b64_json).convert("RGB"), pil(B64).convert("RGB")
    inside = (BOX[0] + 1, BOX[1] + 1, BOX[2] - 1, BOX[3] - 1)
    assert ImageChops.difference(out.crop(inside), src.crop(inside)).getbbox() is None, "the kept area is untouched"
    assert ImageChops.difference(out, src).getbbox() is not None
    assert resp.cost == pytest.approx(0.06)


def test_background_removal_returns_transparent_rgba_and_sends_no_config(aws, emulator):
    resp = gesso.image_generation(NOVA, taskType="BACKGROUND_REMOVAL", image=f"data:image/png;base64,{B64}", **aws)
    assert sent(emulator) == {"taskType": "BACKGROUND_REMOVAL", "backgroundRemovalParams": {"image": B64}}
    out = pil(resp.data[0].b64_json)
    assert out.mode == "RGBA" and out.size == (512, 384)
    assert out.getchannel("A").getextrema() == (0, 255)
    assert resp.cost == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("kwargs", "params"),
    [
        (
            {
                "maskType": "GARMENT",
                "garmentClass": "UPPER_BODY",
                "garmentStyling": {"longSleeveStyle": "SLEEVE_UP", "tuckingStyle": "TUCKED"},
                "maskShape": "CONTOUR",
                "preserveFace": "ON",
                "mergeStyle": "DETAILED",
            },
            {
                "maskType": "GARMENT",
                "garmentBasedMask": {
                    "garmentClass": "UPPER_BODY",
                    "garmentStyling": {"longSleeveStyle": "SLEEVE_UP", "tuckingStyle": "TUCKED"},
                    "maskShape": "CONTOUR",
                },
                "maskExclusions": {"preserveFace": "ON"},
                "mergeStyle": "DETAILED",
            },
        ),
        (
            {
                "maskType": "PROMPT",
                "maskPrompt": "the jacket",
                "maskShape": "BOUNDING_BOX",
                "preserveHands": "OFF",
                "preserveBodyPose": "DEFAULT",
            },
            {
                "maskType": "PROMPT",
                "promptBasedMask": {"maskPrompt": "the jacket", "maskShape": "BOUNDING_BOX"},
                "maskExclusions": {"preserveHands": "OFF", "preserveBodyPose": "DEFAULT"},
            },
        ),
        ({"maskType": "IMAGE", "maskImage": MASK}, {"maskType": "IMAGE", "imageBasedMask": {"maskImage": MASK64}}),
    ],
    ids=["garment", "prompt", "image"],
)
def test_virtual_try_on_mask_types(aws, emulator, kwargs, params):
    resp = gesso.image_generation(NOVA, taskType="VIRTUAL_TRY_ON", sourceImage=SRC, referenceImage=REF, **kwargs, **aws)
    assert sent(emulator) == {
        "taskType": "VIRTUAL_TRY_ON",
        "virtualTryOnParams": {"sourceImage": B64, "referenceImage": REF64, **params},
    }
    assert resp.size == "512x384" and resp.mask is None


def test_virtual_try_on_returns_its_mask(aws, emulator):
    resp = gesso.image_generation(
        NOVA, taskType="VIRTUAL_TRY_ON",
        virtualTryOnParams={"sourceImage": SRC, "referenceImage": REF, "maskType": "GARMENT", "garmentBasedMask": {"garmentClass": "SHOES"}, "returnMask": True},
        **aws,
    )  # fmt: skip
    assert pil(resp.mask.b64_json).size == (512, 384)
    assert resp.to_dict()["mask"] == {"b64_json": resp.mask.b64_json}


def test_image_inputs_in_every_form_send_the_same_base64(aws, emulator, tmp_path):
    path = tmp_path / "in.png"
    path.write_bytes(SRC)
    bodies = []
    for value in (SRC, bytearray(SRC), path, B64, f"data:image/png;base64,{B64}"):
        gesso.image_generation(NOVA, taskType="BACKGROUND_REMOVAL", image=value, **aws)
        bodies.append(sent(emulator))
    assert all(b == bodies[0] for b in bodies)


def test_jpeg_inputs_and_a_jpeg_mask(aws, emulator):
    jpeg = picture(512, 384, fmt="JPEG", quality=95)
    resp = gesso.image_generation(
        NOVA, "a door", taskType="INPAINTING", image=jpeg, maskImage=mask(512, 384, BOX, fmt="JPEG"), **aws
    )
    assert len(resp.data) == 1


# -- constraints, each refused before anything is sent ------------------------------------------------

T = "TEXT_IMAGE"
LONG = "x" * 1025


def bad(**kwargs):
    return kwargs


# fmt: off
CASES = [
    ('t2i negativeText too long', bad(negativeText=LONG), 'textToImageParams.negativeText', '1 to 1024 characters'),
    ('t2i style', bad(style='OIL'), 'textToImageParams.style', 'must be one of'),
    ('t2i controlMode', bad(conditionImage=REF, controlMode='DEPTH'), 'textToImageParams.controlMode', 'CANNY_EDGE, SEGMENTATION'),
    ('t2i controlStrength', bad(conditionImage=REF, controlStrength=-0.1), 'textToImageParams.controlStrength', 'between 0 and 1'),
    ('t2i conditionImage not an image', bad(conditionImage=b'not an image'), 'textToImageParams.conditionImage', 'not a readable image'),
    ('t2i conditionImage webp', bad(conditionImage=picture(400, 400, fmt='WEBP')), 'textToImageParams.conditionImage', 'PNG or JPEG'),
    ('cgg colors missing', bad(taskType='COLOR_GUIDED_GENERATION'), 'colorGuidedGenerationParams.colors', 'is required'),
    ('cgg no colors', bad(taskType='COLOR_GUIDED_GENERATION', colors=[]), 'colorGuidedGenerationParams.colors', '1 to 10 items'),
    ('cgg 11 colors', bad(taskType='COLOR_GUIDED_GENERATION', colors=['#000000'] * 11), 'colorGuidedGenerationParams.colors', '1 to 10 items'),
    ('cgg bad colour', bad(taskType='COLOR_GUIDED_GENERATION', colors=['red']), 'colorGuidedGenerationParams.colors[0]', 'hex colour code like "#FF8800"'),
    ('cgg text too long', bad(taskType='COLOR_GUIDED_GENERATION', colors=['#000000'], prompt=LONG), 'colorGuidedGenerationParams.text', '1 to 1024 characters'),
    ('cgg negativeText empty', bad(taskType='COLOR_GUIDED_GENERATION', colors=['#000000'], negativeText=''), 'colorGuidedGenerationParams.negativeText', '1 to 1024 characters'),
    ('cgg prompt and text disagree', bad(taskType='COLOR_GUIDED_GENERATION', colors=['#000000'], colorGuidedGenerationParams={'text': 'a dog'}), 'colorGuidedGenerationParams.text', 'contradicting'),
    ('iv text too long', bad(taskType='IMAGE_VARIATION', images=[SRC], prompt=LONG), 'imageVariationParams.text', '1 to 1024 characters'),
    ('iv negativeText too long', bad(taskType='IMAGE_VARIATION', images=[SRC], negativeText=LONG), 'imageVariationParams.negativeText', '1 to 1024 characters'),
    ('inpaint text too long', bad(taskType='INPAINTING', image=SRC, maskPrompt='dog', prompt=LONG), 'inPaintingParams.text', '1 to 1024 characters'),
    ('inpaint negativeText empty', bad(taskType='INPAINTING', image=SRC, maskPrompt='dog', negativeText=''), 'inPaintingParams.negativeText', '1 to 1024 characters'),
    ('outpaint text too long', bad(taskType='OUTPAINTING', image=SRC, maskPrompt='dog', prompt=LONG), 'outPaintingParams.text', '1 to 1024 characters'),
    ('outpaint negativeText too long', bad(taskType='OUTPAINTING', image=SRC, maskPrompt='dog', negativeText=LONG), 'outPaintingParams.negativeText', '1 to 1024 characters'),
    ('cgg referenceImage', bad(taskType='COLOR_GUIDED_GENERATION', colors=['#000000'], referenceImage='%%%'), 'colorGuidedGenerationParams.referenceImage', 'not base64'),
    ('iv no images', bad(taskType='IMAGE_VARIATION', images=[]), 'imageVariationParams.images', '1 to 5 items'),
    ('iv 6 images', bad(taskType='IMAGE_VARIATION', images=[SRC] * 6), 'imageVariationParams.images', '1 to 5 items'),
    ('iv similarity low', bad(taskType='IMAGE_VARIATION', images=[SRC], similarityStrength=0.1), 'imageVariationParams.similarityStrength', 'between 0.2 and 1'),
    ('iv similarity high', bad(taskType='IMAGE_VARIATION', images=[SRC], similarityStrength=1.1), 'imageVariationParams.similarityStrength', 'between 0.2 and 1'),
    ('iv images missing', bad(taskType='IMAGE_VARIATION'), 'imageVariationParams.images', 'is required'),
    ('inpaint image missing', bad(taskType='INPAINTING', maskPrompt='dog'), 'inPaintingParams.image', 'is required'),
    ('inpaint two masks', bad(taskType='INPAINTING', image=SRC, maskPrompt='dog', maskImage=MASK), 'inPaintingParams', 'exactly one of maskPrompt'),
    ('inpaint no mask', bad(taskType='INPAINTING', image=SRC), 'inPaintingParams', 'exactly one of maskPrompt'),
    ('inpaint grey mask', bad(taskType='INPAINTING', image=SRC, maskImage=mask(512, 384, BOX, grey=128)), 'inPaintingParams.maskImage', 'pure black'),
    ('inpaint coloured mask', bad(taskType='INPAINTING', image=SRC, maskImage=picture(512, 384, (255, 0, 0))), 'inPaintingParams.maskImage', 'pure black'),
    ('inpaint mask size', bad(taskType='INPAINTING', image=SRC, maskImage=mask(512, 512, BOX)), 'inPaintingParams.maskImage', 'must be the size of inPaintingParams.image (512x384; got 512x512)'),
    ('inpaint size', bad(taskType='INPAINTING', image=SRC, maskPrompt='dog', size='512x512'), 'size', "output takes the input image's size"),
    ('inpaint width', bad(taskType='INPAINTING', image=SRC, maskPrompt='dog', width=512, height=512), 'imageGenerationConfig.width', 'must not be sent for INPAINTING'),
    ('inpaint maskPrompt empty', bad(taskType='INPAINTING', image=SRC, maskPrompt=''), 'inPaintingParams.maskPrompt', '1 to 1024 characters'),
    ('outpaint text missing', bad(taskType='OUTPAINTING', image=SRC, maskPrompt='dog', prompt=None), 'prompt', 'is required for taskType OUTPAINTING'),
    ('outpaint mode', bad(taskType='OUTPAINTING', image=SRC, maskPrompt='dog', outPaintingMode='FAST'), 'outPaintingParams.outPaintingMode', 'DEFAULT, PRECISE'),
    ('outpaint two masks', bad(taskType='OUTPAINTING', image=SRC, maskPrompt='dog', maskImage=MASK), 'outPaintingParams', 'exactly one of'),
    ('outpaint height', bad(taskType='OUTPAINTING', image=SRC, maskPrompt='dog', imageGenerationConfig={'height': 512, 'width': 512}), 'imageGenerationConfig.height', 'must not be sent for OUTPAINTING'),
    ('bgr image missing', bad(taskType='BACKGROUND_REMOVAL', prompt=None), 'backgroundRemovalParams.image', 'is required'),
    ('bgr prompt', bad(taskType='BACKGROUND_REMOVAL', image=SRC), 'prompt', 'takes no prompt'),
    ('bgr n', bad(taskType='BACKGROUND_REMOVAL', image=SRC, prompt=None, n=2), 'n', 'takes no n'),
    ('bgr seed', bad(taskType='BACKGROUND_REMOVAL', image=SRC, prompt=None, seed=2), 'seed', 'unknown parameter for taskType BACKGROUND_REMOVAL'),
    ('bgr config', bad(taskType='BACKGROUND_REMOVAL', image=SRC, prompt=None, imageGenerationConfig={'seed': 1}), '', "imageGenerationConfig' cannot be sent with taskType BACKGROUND_REMOVAL"),
    ('vto source missing', bad(taskType='VIRTUAL_TRY_ON', prompt=None, referenceImage=REF, maskType='PROMPT', maskPrompt='shirt'), 'virtualTryOnParams.sourceImage', 'is required'),
    ('vto reference missing', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, maskType='PROMPT', maskPrompt='shirt'), 'virtualTryOnParams.referenceImage', 'is required'),
    ('vto maskType missing', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF), 'virtualTryOnParams.maskType', 'is required'),
    ('vto maskType enum', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='AUTO'), 'virtualTryOnParams.maskType', 'IMAGE, GARMENT, PROMPT'),
    ('vto image mask missing', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='IMAGE'), 'virtualTryOnParams.imageBasedMask', 'is required'),
    ('vto garment missing', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='GARMENT'), 'virtualTryOnParams.garmentBasedMask', 'is required'),
    ('vto garmentClass', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='GARMENT', garmentClass='HAT'), 'virtualTryOnParams.garmentBasedMask.garmentClass', 'UPPER_BODY'),
    ('vto garmentClass missing', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='GARMENT', garmentBasedMask={}), 'virtualTryOnParams.garmentBasedMask.garmentClass', 'is required'),
    ('vto maskShape enum', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='PROMPT', maskPrompt='shirt', maskShape='ROUND'), 'virtualTryOnParams.promptBasedMask.maskShape', 'CONTOUR, BOUNDING_BOX, DEFAULT'),
    ('vto maskShape without type', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='IMAGE', maskImage=MASK, maskShape='CONTOUR'), 'maskShape', 'needs maskType GARMENT or PROMPT'),
    ('vto sleeve style', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='GARMENT', garmentClass='UPPER_BODY', garmentStyling={'longSleeveStyle': 'ROLLED'}), 'virtualTryOnParams.garmentBasedMask.garmentStyling.longSleeveStyle', 'SLEEVE_DOWN, SLEEVE_UP'),
    ('vto tucking style', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='GARMENT', garmentClass='UPPER_BODY', garmentStyling={'tuckingStyle': 'HALF'}), 'virtualTryOnParams.garmentBasedMask.garmentStyling.tuckingStyle', 'UNTUCKED, TUCKED'),
    ('vto outer layer', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='GARMENT', garmentClass='UPPER_BODY', garmentStyling={'outerLayerStyle': 'ZIPPED'}), 'virtualTryOnParams.garmentBasedMask.garmentStyling.outerLayerStyle', 'CLOSED, OPEN'),
    ('vto exclusions', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='PROMPT', maskPrompt='shirt', preserveFace='YES'), 'virtualTryOnParams.maskExclusions.preserveFace', 'ON, OFF, DEFAULT'),
    ('vto mergeStyle', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='PROMPT', maskPrompt='shirt', mergeStyle='SMOOTH'), 'virtualTryOnParams.mergeStyle', 'BALANCED, SEAMLESS, DETAILED'),
    ('vto returnMask', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='PROMPT', maskPrompt='shirt', returnMask='yes'), 'virtualTryOnParams.returnMask', 'true or false'),
    ('vto other mask', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='PROMPT', maskPrompt='shirt', garmentClass='SHOES'), 'virtualTryOnParams.garmentBasedMask', 'cannot be sent with maskType PROMPT'),
    ('vto mask size', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='IMAGE', maskImage=mask(400, 400, BOX)), 'virtualTryOnParams.imageBasedMask.maskImage', 'must be the size of virtualTryOnParams.sourceImage'),
    ('vto size', bad(taskType='VIRTUAL_TRY_ON', prompt=None, sourceImage=SRC, referenceImage=REF, maskType='PROMPT', maskPrompt='shirt', size='512x512'), 'size', "output takes the input image's size"),
    ('quality enum', bad(imageGenerationConfig={'quality': 'hd'}), 'imageGenerationConfig.quality', 'standard, premium'),
    ('height multiple of 16', bad(size='512x500'), 'size', 'multiple of 16 (got 500); the nearest is 512x496'),
    ('height too big', bad(width=512, height=4112), 'imageGenerationConfig.width/height', 'between 320 and 4096'),
    ('numberOfImages zero', bad(numberOfImages=0), 'imageGenerationConfig.numberOfImages', 'between 1 and 5'),
    ('seed negative', bad(seed=-1), 'imageGenerationConfig.seed', 'between 0 and 2147483646'),
    ('cfgScale high', bad(cfgScale=10.5), 'imageGenerationConfig.cfgScale', 'between 1.1 and 10'),
    ('transparent png', bad(conditionImage=picture(400, 400, (1, 2, 3, 0), mode='RGBA')), 'textToImageParams.conditionImage', 'alpha channel must be fully opaque'),
    ('16-bit png', bad(conditionImage=picture(400, 400, 300, mode='I;16')), 'textToImageParams.conditionImage', '8 bits per channel'),
    ('image too small', bad(conditionImage=picture(319, 400)), 'textToImageParams.conditionImage', '320 to 4096 pixels (got 319x400)'),
    ('image too wide', bad(conditionImage=picture(4097, 1100)), 'textToImageParams.conditionImage', '320 to 4096 pixels'),
    ('image aspect', bad(conditionImage=picture(1300, 320)), 'textToImageParams.conditionImage', 'aspect ratio must be between 1:4 and 4:1'),
    ('image pixels', bad(conditionImage=picture(2048, 2048)), 'textToImageParams.conditionImage', 'fewer than 4,194,304 pixels'),
    ('image truncated', bad(conditionImage=SRC[:200]), 'textToImageParams.conditionImage', 'not a decodable PNG'),
    ('image wrong type', bad(conditionImage=12), 'textToImageParams.conditionImage', 'got int'),
    ('image missing file', bad(conditionImage=__import__('pathlib').Path('/no/such/file.png')), 'textToImageParams.conditionImage', 'cannot read image file'),
    ('image data url', bad(conditionImage='data:image/png,rawbytes'), 'textToImageParams.conditionImage', 'data: URL must be base64'),
]
# fmt: on


@pytest.mark.parametrize(("kwargs", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_constraint_is_enforced_before_sending(aws, emulator, kwargs, path, fragment):
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", "a cat")
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, prompt, **kwargs, **aws)
    matching = [v for v in info.value.violations if v.path == path and fragment in v.message]
    assert matching, f"expected {path!r} ~ {fragment!r} in:\n{info.value}"
    assert "amazon.nova-canvas-v1:0" in str(info.value) and info.value.status_code == 400
    assert len(emulator.requests) == 0


# -- the emulator applies the same rules to hand-built bodies -------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"taskType": "INPAINTING", "inPaintingParams": {"image": B64, "maskPrompt": "x"}, "imageGenerationConfig": {"width": 512, "height": 512}},
         "#/imageGenerationConfig: extraneous key [width] is not permitted"),
        ({"taskType": "INPAINTING", "inPaintingParams": {"image": B64, "maskImage": base64.b64encode(mask(512, 384, BOX, grey=100)).decode()}}, "pure black"),
        ({"taskType": "INPAINTING", "inPaintingParams": {"image": B64, "maskImage": base64.b64encode(mask(400, 400, BOX)).decode()}}, "must be the size of"),
        ({"taskType": "BACKGROUND_REMOVAL", "backgroundRemovalParams": {"image": "bm90IGFuIGltYWdl"}}, "Unable to decode the image"),
        ({"taskType": "BACKGROUND_REMOVAL", "backgroundRemovalParams": {"image": B64}, "imageGenerationConfig": {}}, "extraneous key [imageGenerationConfig]"),
        ({"taskType": "VIRTUAL_TRY_ON", "virtualTryOnParams": {"sourceImage": B64, "referenceImage": REF64, "maskType": "GARMENT"}}, "#/virtualTryOnParams: required key [garmentBasedMask] not found"),
    ],
)  # fmt: skip
def test_emulator_rejects_what_bedrock_rejects(bedrock, body, fragment):
    from botocore.exceptions import ClientError

    from helpers import invoke

    with pytest.raises(ClientError) as info:
        invoke(bedrock, "amazon.nova-canvas-v1:0", body)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert fragment in info.value.response["Error"]["Message"]


# -- lifecycle -------------------------------------------------------------------------------------------


def test_legacy_model_warns_once_per_process(aws, monkeypatch):
    from gesso import plugins

    monkeypatch.setattr(api, "_lifecycle_warned", set())
    monkeypatch.setenv("GESSO_PLUGINS", "gesso-bedrock-nova")
    plugins.reset()
    with pytest.warns(ModelLifecycleWarning) as caught:
        gesso.image_generation(NOVA, "x", **aws)
    message = str(caught[0].message)
    assert "amazon.nova-canvas-v1:0 is a Legacy model on Bedrock" in message and "2026-09-30" in message
    assert "pip install gesso-bedrock-stability" in message
    assert caught[0].filename == __file__, "the warning points at the caller"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelLifecycleWarning)
        gesso.image_generation(NOVA, "y", **aws)


def test_installed_stability_models_are_the_suggested_alternatives(aws, monkeypatch):
    monkeypatch.setattr(api, "_lifecycle_warned", set())
    with pytest.warns(ModelLifecycleWarning) as caught:
        gesso.image_generation(NOVA, "x", **aws)
    assert str(caught[0].message).endswith(
        "Active alternatives installed: stability.sd3-5-large-v1:0, stability.stable-image-core-v1:1, "
        "stability.stable-image-ultra-v1:1, us.amazon.nova-2-omni-v1:0."
    )


class Elsewhere(gesso.Provider):
    """A second provider: its models are not Bedrock's alternatives."""

    name, title = "elsewhere", "Elsewhere"


def _retired_nova(aws, emulator, monkeypatch, *models: gesso.Model) -> ModelRetiredError:
    """The error of a Nova call that Bedrock answers as retired, with only Nova and ``models`` installed."""
    from gesso import plugins

    monkeypatch.setenv("GESSO_PLUGINS", "gesso-bedrock-nova")
    plugins.reset()

    class Installed:
        @gesso.hookimpl
        def gesso_register_providers(self):
            return [Elsewhere()]

        @gesso.hookimpl
        def gesso_register_models(self):
            return list(models)

    gesso.register_plugin(Installed(), name="installed")
    emulator.inject("eol")
    with pytest.raises(ModelRetiredError) as info:
        gesso.image_generation(NOVA, "x", **aws)
    return info.value


TEXT_TO_IMAGE = {"text_to_image"}


def test_end_of_life_answer_names_installed_active_alternatives(aws, emulator, monkeypatch):
    error = _retired_nova(
        aws, emulator, monkeypatch, gesso.Model(id="test.active-v1", family="t", capabilities=TEXT_TO_IMAGE)
    )
    assert error.status_code == 404
    assert "reached the end of its life" in str(error)
    assert str(error).endswith("Active alternatives installed: test.active-v1.")


def test_end_of_life_answer_never_recommends_example_models_or_other_providers(aws, emulator, monkeypatch):
    error = _retired_nova(
        aws,
        emulator,
        monkeypatch,
        gesso.Model(id="acme.painter-v1", family="test.toy", capabilities=TEXT_TO_IMAGE, example=True),
        gesso.Model(id="test.real-v1", family="test.real", capabilities=TEXT_TO_IMAGE),
        gesso.Model(id="test.far-v1", family="test.far", provider="elsewhere", capabilities=TEXT_TO_IMAGE),
    )
    assert str(error).endswith("Active alternatives installed: test.real-v1.")


def test_example_models_alone_are_no_alternative(aws, emulator, monkeypatch):
    toy = gesso.Model(id="acme.painter-v1", family="test.toy", capabilities=TEXT_TO_IMAGE, example=True)
    error = _retired_nova(aws, emulator, monkeypatch, toy)
    assert "acme.painter-v1" not in str(error)
    assert "No active alternative is installed; for example pip install gesso-bedrock-stability" in str(error)
