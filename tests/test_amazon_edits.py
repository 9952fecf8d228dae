"""image_edit and image_variation on Nova Canvas and Titan (gesso_bedrock.taskbody's mapping), beyond what the
README's table rows can say: which colour of the sent mask means "edit" per task, what the emulated edit
changes, and the errors for inputs a table row cannot spell (six images, a field given twice)."""

from __future__ import annotations

import base64
import io
import json

import pytest

import gesso
from gesso import errors
from helpers import picture, pil

SIZE = 512
NOVA = "bedrock/amazon.nova-canvas-v1:0"
TITAN2 = "bedrock/amazon.titan-image-generator-v2:0"
TITAN1 = "bedrock/amazon.titan-image-generator-v1"
INSIDE, OUTSIDE = (200, 200), (10, 10)  # openai_mask() is transparent (edit) in (100, 100)-(300, 300)


def openai_mask(width: int = SIZE, height: int = SIZE) -> bytes:
    """OpenAI's convention: RGBA, fully transparent (the area to edit) in (100, 100)-(300, 300)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (width, height), (10, 20, 30, 255))
    ImageDraw.Draw(image).rectangle((100, 100, 300, 300), fill=(0, 0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def sent(emulator) -> dict:
    return json.loads(emulator.requests[-1].body)


def colour(b64: str, at: tuple[int, int]):
    return pil(b64).convert("RGB").getpixel(at)


@pytest.mark.parametrize("model", [NOVA, TITAN2, TITAN1])
@pytest.mark.parametrize(
    "task, obj, edit_colour",
    [("INPAINTING", "inPaintingParams", (0, 0, 0)), ("OUTPAINTING", "outPaintingParams", (255, 255, 255))],
)
def test_the_mask_is_sent_in_the_tasks_convention(model, task, obj, edit_colour, aws, emulator):
    """Inpainting changes the inside of the mask (black), outpainting keeps it and changes the outside
    (white = edit), on Nova and on Titan (AWS's request references)."""
    gesso.image_edit(model, picture(SIZE, SIZE), "a red hat", mask=openai_mask(), taskType=task, **aws)
    mask = sent(emulator)[obj]["maskImage"]
    keep_colour = tuple(255 - c for c in edit_colour)
    assert (colour(mask, INSIDE), colour(mask, OUTSIDE)) == (edit_colour, keep_colour)


def test_virtual_try_on_mask_is_black_for_edit(aws, emulator):
    gesso.image_edit(
        NOVA,
        [picture(SIZE, SIZE), picture(SIZE, SIZE, (200, 60, 60))],
        mask=openai_mask(),
        taskType="VIRTUAL_TRY_ON",
        **aws,
    )
    params = sent(emulator)["virtualTryOnParams"]
    assert colour(params["imageBasedMask"]["maskImage"], INSIDE) == (0, 0, 0)
    assert params["maskType"] == "IMAGE"
    assert base64.b64decode(params["referenceImage"]) == picture(SIZE, SIZE, (200, 60, 60))


@pytest.mark.parametrize("model", [NOVA, TITAN2])
def test_the_emulated_inpainting_changes_only_the_masked_area(model, aws, emulator):
    source = picture(SIZE, SIZE)
    response = gesso.image_edit(model, source, "a red hat", mask=openai_mask(), **aws)
    out = response.data[0].b64_json
    assert colour(out, OUTSIDE) == (40, 120, 200)
    assert colour(out, INSIDE) != (40, 120, 200)


def test_bedrocks_own_mask_image_makes_an_inpainting(aws, emulator):
    from helpers import mask

    gesso.image_edit(NOVA, picture(SIZE, SIZE), "a red hat", maskImage=mask(SIZE, SIZE, (0, 0, 9, 9)), **aws)
    assert sent(emulator)["taskType"] == "INPAINTING"


@pytest.mark.parametrize("model", [NOVA, TITAN2, TITAN1])
def test_more_images_than_a_variation_takes(model, aws, emulator):
    with pytest.raises(errors.InvalidRequestError) as caught:
        gesso.image_variation(model, [picture(SIZE, SIZE)] * 6, **aws)
    assert "image: taskType IMAGE_VARIATION takes at most 5 images (got 6)" in str(caught.value)
    assert model.removeprefix("bedrock/") in str(caught.value)
    assert emulator.stats()["requests"] == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda aws: gesso.image_edit(
                NOVA,
                picture(SIZE, SIZE),
                "x",
                mask=openai_mask(),
                inPaintingParams={"image": picture(SIZE, SIZE)},
                **aws,
            ),
            "image: is given twice: by the image argument and by inPaintingParams.image",
        ),
        (
            lambda aws: gesso.image_edit(
                NOVA, picture(SIZE, SIZE), "x", mask=openai_mask(), maskImage=openai_mask(), **aws
            ),
            "mask: is given twice: by the mask argument and by maskImage",
        ),
        (
            lambda aws: gesso.image_variation(TITAN2, picture(SIZE, SIZE), images=[picture(SIZE, SIZE)], **aws),
            "image: is given twice: by the image argument and by images",
        ),
        (
            lambda aws: gesso.image_edit(
                NOVA, [picture(SIZE, SIZE)] * 2, mask=openai_mask(), taskType="VIRTUAL_TRY_ON", maskType="PROMPT", **aws
            ),
            "mask: needs maskType IMAGE",
        ),
        (
            lambda aws: gesso.image_edit(NOVA, [picture(SIZE, SIZE)] * 3, taskType="VIRTUAL_TRY_ON", **aws),
            "takes at most 2 images, in order: sourceImage, referenceImage (got 3)",
        ),
        (
            lambda aws: gesso.image_edit(
                TITAN2, picture(SIZE, SIZE), "x", mask=openai_mask(), taskType="VIRTUAL_TRY_ON", **aws
            ),
            "taskType: must be one of: INPAINTING, OUTPAINTING, IMAGE_VARIATION, BACKGROUND_REMOVAL for an image edit",
        ),
        (
            lambda aws: gesso.image_edit(NOVA, [picture(SIZE, SIZE), b"not a picture"], **aws),
            "image[1]: ",
        ),
        (
            lambda aws: gesso.image_edit(NOVA, picture(SIZE, SIZE), "x", mask=openai_mask(400, 400), **aws),
            "must be the size of inPaintingParams.image (512x512; got 400x400) [from mask]",
        ),
        (
            lambda aws: gesso.image_edit(
                NOVA, picture(SIZE, SIZE), "x", mask=picture(SIZE, SIZE, (128, 128, 128)), **aws
            ),
            "mask: must be OpenAI's mask",
        ),
    ],
    ids=[
        "image-twice",
        "mask-twice",
        "images-twice",
        "vto-mask-type",
        "vto-3-images",
        "titan-vto",
        "bad-image",
        "mask-size",
        "grey-mask",
    ],
)
def test_one_clear_error_and_nothing_sent(call, message, aws, emulator):
    with pytest.raises(errors.InvalidRequestError) as caught:
        call(aws)
    assert message in str(caught.value)
    assert emulator.stats()["requests"] == 0


def test_a_generation_is_unchanged(aws, emulator):
    """image_generation never takes the operation path: no images are placed, the task is the caller's."""
    gesso.image_generation(NOVA, "a fox", size="512x512", **aws)
    assert sent(emulator) == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a fox"},
        "imageGenerationConfig": {"width": 512, "height": 512},
    }


def test_a_file_object_mask(aws, emulator):
    gesso.image_edit(TITAN2, picture(SIZE, SIZE), "a red hat", mask=io.BytesIO(openai_mask()), **aws)
    assert colour(sent(emulator)["inPaintingParams"]["maskImage"], INSIDE) == (0, 0, 0)
