"""gesso.image_edit on Stability beyond the README rows (tests/test_operations.py runs those): two
sources for one field, the mask's convention and size, and what each refusal says."""

from __future__ import annotations

import base64
import io
import json

import pytest
from test_operations import SIZE, openai_mask

import gesso
from gesso import errors
from helpers import picture

INPAINT = "bedrock/us.stability.stable-image-inpaint-v1:0"
STYLE_TRANSFER = "bedrock/us.stability.stable-style-transfer-v1:0"
SD35 = "bedrock/stability.sd3-5-large-v1:0"
SDXL1 = "bedrock/stability.stable-diffusion-xl-v1"
IMAGE = picture(SIZE, SIZE)
STYLE = picture(SIZE, SIZE, (200, 60, 60))


def refused(emulator, call, *args, **kwargs) -> str:
    with pytest.raises(errors.InvalidRequestError) as caught:
        call(*args, **kwargs)
    assert emulator.stats()["requests"] == 0, "nothing is sent for a call bound to fail"
    return str(caught.value)


def sent(emulator) -> dict:
    return json.loads(emulator.requests[-1].body)


def test_the_mask_is_sent_white_where_openai_marks_the_edit(aws, emulator):
    from PIL import Image

    gesso.image_edit(INPAINT, IMAGE, "a red hat", mask=openai_mask(), **aws)
    mask = Image.open(io.BytesIO(base64.b64decode(sent(emulator)["mask"]))).convert("L")
    assert mask.getpixel((200, 200)) == 255 and mask.getpixel((10, 10)) == 0  # white = edit, black = keep
    assert sorted(mask.getcolors()) == [(201 * 201, 255), (SIZE * SIZE - 201 * 201, 0)]


def test_a_mask_of_another_size_is_refused(aws, emulator):
    message = refused(emulator, gesso.image_edit, INPAINT, IMAGE, "a red hat", mask=openai_mask(256, 256), **aws)
    assert "mask: must be the size of image (512x512; got 256x256)" in message


def test_a_grey_mask_names_stabilitys_convention(aws, emulator):
    grey = picture(SIZE, SIZE, (128, 128, 128))
    message = refused(emulator, gesso.image_edit, INPAINT, IMAGE, "a red hat", mask=grey, **aws)
    assert "mask:" in message and "white = edit, black = keep" in message


def test_style_transfer_takes_the_style_image_as_the_second_image_or_as_its_parameter(aws, emulator):
    gesso.image_edit(STYLE_TRANSFER, IMAGE, style_image=STYLE, **aws)
    body = sent(emulator)
    assert set(body) == {"init_image", "style_image"}
    assert body["init_image"] == base64.b64encode(IMAGE).decode()


def test_an_image_given_twice_is_one_error_naming_both_sources(aws, emulator):
    message = refused(emulator, gesso.image_edit, STYLE_TRANSFER, [IMAGE, STYLE], init_image=IMAGE, **aws)
    assert "init_image: is set by the edit's image[0] (sent as init_image) and given as a parameter too" in message
    assert "us.stability.stable-style-transfer-v1:0" in message


def test_three_images_name_the_limit(aws, emulator):
    message = refused(emulator, gesso.image_edit, STYLE_TRANSFER, [IMAGE, STYLE, IMAGE], **aws)
    assert "image: Style Transfer (style-transfer) takes 2 images (init_image, style_image, in that order) (got 3)" in (
        message
    )


def test_one_image_without_a_style_image_is_refused(aws, emulator):
    assert "style_image: is required" in refused(emulator, gesso.image_edit, STYLE_TRANSFER, IMAGE, **aws)


def test_sd35_edit_without_strength_says_what_strength_takes(aws, emulator):
    message = refused(emulator, gesso.image_edit, SD35, IMAGE, "as a painting", **aws)
    assert "strength: is required for image-to-image" in message and "0 to 1" in message
    assert "stability.sd3-5-large-v1:0" in message


def test_sd35_edit_sends_mode_only_when_the_caller_does(aws, emulator):
    gesso.image_edit(SD35, IMAGE, "as a painting", strength=0.6, mode="image-to-image", **aws)
    assert sent(emulator)["mode"] == "image-to-image"
    with pytest.raises(errors.InvalidRequestError, match="image: cannot be used with mode text-to-image"):
        gesso.image_edit(SD35, IMAGE, "as a painting", strength=0.6, mode="text-to-image", **aws)


def test_a_stability_variation_lists_the_models_that_can(aws, emulator):
    message = refused(emulator, gesso.image_variation, "bedrock/stability.stable-image-ultra-v1:1", IMAGE, **aws)
    assert "cannot do an image variation" in message
    assert "stability." not in message.split("installed models that can", 1)[1]


def test_sdxl_v1_edit_is_image_to_image_without_a_mask(aws, emulator):
    gesso.image_edit(SDXL1, IMAGE, "in snow", **aws)
    body = sent(emulator)
    assert body["init_image"] == base64.b64encode(IMAGE).decode()
    assert "mask_source" not in body and "mask_image" not in body


def test_sdxl_v1_mask_source_given_with_a_mask_is_one_error(aws, emulator):
    message = refused(
        emulator, gesso.image_edit, SDXL1, IMAGE, "in snow", mask=openai_mask(), mask_source="MASK_IMAGE_BLACK", **aws
    )
    assert "mask_source: is set by the edit's mask" in message
