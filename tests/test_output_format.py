"""output_format and output_compression: sent to models whose body has output_format (Stability's), otherwise
converted by gesso with Pillow once the images arrive; the response says which format it holds."""

from __future__ import annotations

import asyncio
import base64
import io
import sys

import pytest

import gesso
from gesso import output
from gesso.errors import InvalidRequestError
from gesso.types import ImageResponse
from helpers import picture, pil, png_info

NOVA = "bedrock/amazon.nova-canvas-v1:0"
SD35 = "bedrock/stability.sd3-5-large-v1:0"


def size_of(b64: str) -> int:
    return len(base64.b64decode(b64))


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_nova_images_are_converted_locally(aws, emulator, fmt):
    response = gesso.image_generation(NOVA, "otter", n=2, output_format=fmt, **aws)
    assert [png_info(item.b64_json).format for item in response.data] == [fmt, fmt]
    assert [pil(item.b64_json).size for item in response.data] == [(1024, 1024)] * 2
    assert response.output_format == fmt and response.to_dict()["output_format"] == fmt
    assert "output_format" not in emulator.requests[-1].json()  # Nova's body has no such field
    assert ImageResponse.from_dict(response.to_dict()) == response


def test_png_asked_of_a_png_model_is_left_as_sent(aws):
    plain = gesso.image_generation(NOVA, "otter", seed=7, **aws)
    asked = gesso.image_generation(NOVA, "otter", seed=7, output_format="png", **aws)
    assert asked.data[0].b64_json == plain.data[0].b64_json
    assert asked.output_format == "png" and plain.output_format is None


def test_output_compression_is_the_encoding_quality(aws):
    def encoded(quality: int) -> str:
        response = gesso.image_generation(
            NOVA, "otter", seed=3, output_format="webp", output_compression=quality, **aws
        )
        return response.data[0].b64_json

    low, high = encoded(5), encoded(95)
    assert png_info(low).format == png_info(high).format == "webp"
    assert size_of(low) < size_of(high)


def test_converted_url_images_carry_their_type(aws, tmp_path):
    inline = gesso.image_generation(NOVA, "otter", output_format="jpeg", response_format="url", **aws)
    assert inline.data[0].url.startswith("data:image/jpeg;base64,/9j/")
    stored = gesso.image_generation(
        NOVA, "otter", output_format="webp", response_format="url", image_store=tmp_path.as_uri(), **aws
    )
    written = next(tmp_path.iterdir())
    assert stored.data[0].url == written.as_uri() and written.suffix == ".webp"
    assert written.read_bytes()[8:12] == b"WEBP"


def test_the_async_path_converts_too(aws):
    response = asyncio.run(gesso.aimage_generation(NOVA, "otter", output_format="jpeg", output_compression=60, **aws))
    assert png_info(response.data[0].b64_json).format == "jpeg" and response.output_format == "jpeg"


def test_output_format_is_read_from_os_environ(aws, monkeypatch):
    monkeypatch.setenv("GESSO_TEST_FORMAT", "webp")
    response = gesso.image_generation(NOVA, "otter", output_format="os.environ/GESSO_TEST_FORMAT", **aws)
    assert response.output_format == "webp"


# -- Stability: the model's own output_format ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_stability_output_format_passes_through_to_the_body(aws, emulator, fmt):
    response = gesso.image_generation(SD35, "a lighthouse", output_format=fmt, **aws)
    assert emulator.requests[-1].json()["output_format"] == fmt
    assert png_info(response.data[0].b64_json).format == fmt and response.output_format == fmt


def test_stability_compression_re_encodes_the_model_s_jpeg(aws, emulator):
    plain = gesso.image_generation(SD35, "a lighthouse", seed=9, output_format="jpeg", **aws)
    squeezed = gesso.image_generation(SD35, "a lighthouse", seed=9, output_format="jpeg", output_compression=5, **aws)
    body = emulator.requests[-1].json()
    assert body["output_format"] == "jpeg" and "output_compression" not in body
    assert png_info(squeezed.data[0].b64_json).format == "jpeg" and squeezed.output_format == "jpeg"
    assert size_of(squeezed.data[0].b64_json) < size_of(plain.data[0].b64_json)


def test_stability_refuses_a_format_it_does_not_know_by_its_own_schema(aws, emulator):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(SD35, "a lighthouse", output_format="gif", **aws)
    assert str(info.value) == (  # the schema's order, not gesso's: the family said it
        "Invalid request for model stability.sd3-5-large-v1:0: output_format: must be one of: jpeg, png, webp "
        "(got 'gif')"
    )
    assert emulator.stats()["requests"] == 0


# -- bad values are refused before sending ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"output_format": "gif"}, r"output_format: must be one of: png, jpeg, webp \(got 'gif'\)"),
        ({"output_format": "jpg"}, r"output_format: must be one of: png, jpeg, webp \(got 'jpg'\)"),
        ({"output_format": 3}, r"output_format: must be one of: png, jpeg, webp \(got 3\)"),
        ({"output_format": "jpeg", "output_compression": 101}, r"output_compression: must be a non-negative integer, at most 100"),
        ({"output_format": "jpeg", "output_compression": -1}, r"output_compression: must be a non-negative integer"),
        ({"output_format": "jpeg", "output_compression": 50.5}, r"output_compression: must be a non-negative integer"),
        ({"output_format": "jpeg", "output_compression": "50"}, r"output_compression: must be a non-negative integer"),
        ({"output_format": "jpeg", "output_compression": True}, r"output_compression: must be a non-negative integer"),
        ({"output_compression": 50}, r"output_compression: applies to jpeg and webp output only.*not set"),
        ({"output_format": "png", "output_compression": 50}, r"output_compression: applies to jpeg and webp output only.*is png"),
    ],
)  # fmt: skip
def test_bad_output_options_are_refused_before_sending(aws, emulator, kwargs, expected):
    with pytest.raises(InvalidRequestError, match=expected) as info:
        gesso.image_generation(NOVA, "otter", **kwargs, **aws)
    assert "amazon.nova-canvas-v1:0" in str(info.value)
    assert emulator.stats()["requests"] == 0


def test_stability_png_with_compression_is_refused(aws, emulator):
    with pytest.raises(InvalidRequestError, match="output_compression: applies to jpeg and webp output only"):
        gesso.image_generation(SD35, "a lighthouse", output_format="png", output_compression=80, **aws)
    assert emulator.stats()["requests"] == 0


def test_without_pillow_a_conversion_is_refused_before_sending(aws, emulator, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now fails, as when Pillow is not installed
    with pytest.raises(InvalidRequestError, match="output_format: converting images to webp needs Pillow: pip install"):
        gesso.image_generation(NOVA, "otter", output_format="webp", **aws)
    assert emulator.stats()["requests"] == 0


# -- the conversion itself --------------------------------------------------------------------------------------


def test_transparency_is_flattened_onto_white_for_jpeg():
    from PIL import Image

    image = Image.new("RGBA", (64, 64), (200, 0, 0, 255))
    image.paste((0, 0, 255, 0), (0, 0, 32, 64))  # the left half fully transparent (its colour hidden)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    jpeg = output._pillow_encode(buffer.getvalue(), "jpeg", 95)
    with Image.open(io.BytesIO(jpeg)) as result:
        assert result.format == "JPEG" and result.mode == "RGB"
        assert all(c > 240 for c in result.getpixel((8, 32)))  # white, not the hidden blue
        red, green, blue = result.getpixel((56, 32))
        assert red > 180 and green < 30 and blue < 30


def test_webp_keeps_transparency_and_greyscale_becomes_rgb():
    from PIL import Image

    webp = output._pillow_encode(picture(32, 32, (10, 20, 30, 100), mode="RGBA"), "webp", None)
    with Image.open(io.BytesIO(webp)) as result:
        assert result.format == "WEBP" and result.mode == "RGBA"
    grey = output._pillow_encode(picture(32, 32, 128, mode="L"), "webp", 80)
    with Image.open(io.BytesIO(grey)) as result:
        assert result.format == "WEBP" and result.mode == "RGB"
