"""Plausible image edits for model emulators (Pillow, imported when first used): deterministic in their
key, and faithful in the way tests can check — an inpainting changes only the masked area, a background
removal returns transparent pixels, a variation keeps the size asked for. What they paint is labelled with
the prompt (see :mod:`gesso_bedrock.emulator.images`), and every PNG says ``Software: gesso emulator``."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from gesso.inputs import ImageInput
from gesso_bedrock.emulator.images import SOFTWARE, synth_png, synth_png_b64


def pil(image: ImageInput) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(image.data)).convert("RGB")


def png_b64(picture: Any) -> str:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SOFTWARE)
    out = io.BytesIO()
    picture.save(out, format="PNG", pnginfo=info)
    return base64.b64encode(out.getvalue()).decode("ascii")


def synthetic(width: int, height: int, key: Sequence[Any], alpha: bool = False, prompt: str | None = None) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(synth_png(width, height, "|".join(map(str, key)), alpha, prompt)))


def region_mask(size: tuple[int, int]) -> Any:
    """The area a mask prompt 'finds': the central quarter, black (edit) on white (keep)."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", size, 255)
    w, h = size
    # at least one pixel, however small the image
    ImageDraw.Draw(mask).rectangle((w // 4, h // 4, max(w // 4, 3 * w // 4 - 1), max(h // 4, 3 * h // 4 - 1)), fill=0)
    return mask


def generate(width: int, height: int, key: Sequence[Any], prompt: str | None = None) -> str:
    # straight from the cache: no Pillow round trip (the emulator answers many of these)
    return synth_png_b64(width, height, "|".join(map(str, key)), False, prompt)


def color_guided(colors: Sequence[str], width: int, height: int, key: Sequence[Any], prompt: str | None = None) -> str:
    """A gradient through the first and last of the given ``#RRGGBB`` colours."""
    from PIL import Image, ImageOps

    rgb = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in colors]
    gradient = Image.linear_gradient("L").resize((width, height)).rotate(90)
    picture = ImageOps.colorize(gradient, rgb[0], rgb[-1])
    return png_b64(Image.blend(picture, synthetic(width, height, key, prompt=prompt).convert("RGB"), 0.2))


def variation(source: ImageInput, width: int, height: int, key: Sequence[Any], prompt: str | None = None) -> str:
    from PIL import Image

    base = pil(source).resize((width, height))
    return png_b64(Image.blend(base, synthetic(width, height, key, prompt=prompt).convert("RGB"), 0.35))


def repaint(
    source: ImageInput, mask: ImageInput | None, key: Sequence[Any], *, edit_black: bool, prompt: str | None = None
) -> str:
    """Repaint the black area of ``mask`` (inpainting) or its white area (outpainting); without a mask,
    the area a mask prompt would find. A mask of another size is resized to the image's (as Stability's
    services do; Nova and Titan refuse one before this)."""
    from PIL import Image, ImageOps

    picture = pil(source).convert("RGB")
    paint = synthetic(picture.size[0], picture.size[1], key, prompt=prompt).convert("RGB")
    area = pil(mask).convert("L").resize(picture.size) if mask is not None else region_mask(picture.size)
    if edit_black:
        area = ImageOps.invert(area)  # composite() takes the first image where the mask is white
    return png_b64(Image.composite(paint, picture, area))


def remove_background(source: ImageInput) -> str:
    """The input as RGBA with its left and right quarters fully transparent."""
    from PIL import Image

    picture = pil(source).convert("RGBA")
    width, height = picture.size
    alpha = Image.new("L", picture.size, 255)
    alpha.paste(0, (0, 0, width // 4, height))
    alpha.paste(0, (width - width // 4, 0, width, height))
    picture.putalpha(alpha)
    return png_b64(picture)


def paste_from(source: ImageInput, donor: ImageInput, area: Any) -> str:
    """``source`` with the white part of ``area`` (an L-mode mask) taken from ``donor``."""
    from PIL import Image

    picture = pil(source)
    return png_b64(Image.composite(pil(donor).resize(picture.size), picture, area))
