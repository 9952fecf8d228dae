"""What the OpenAI Images operations beyond generation need from the core: the edit's and variation's
inputs as the caller gave them, and masks turned from OpenAI's convention into a family's.

OpenAI's mask is an RGBA PNG whose fully transparent pixels mark the area to edit. Many models want a pure
black-and-white mask instead, each family with its own colour for "edit here" (black for some inpainting
tasks, white for others). :func:`family_mask` converts the first into the second and
takes a mask that is already black and white as it is; anything else is refused, and a mask is never
resized (the families check its size against the image's).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import attrs

from gesso.errors import Violation
from gesso.inputs import MAX_DECODED_PIXELS, load

BLACK, WHITE = "black", "white"


def inputs(image: Any, mask: Any, problems: list[Violation]) -> tuple[tuple[Any, ...], Any]:
    """An edit's or variation's images as a tuple (one image or a list of them; file objects read), and its
    mask (a file object read); what is missing or unreadable adds to ``problems``."""
    images = tuple(image) if isinstance(image, (list, tuple)) else (image,)
    if not images or any(item is None for item in images):
        problems.append(Violation("image", "is required: the image to edit, or a list of images"))
        return (), _read(mask, "mask", problems)
    return tuple(_read(item, _where(index, len(images)), problems) for index, item in enumerate(images)), _read(
        mask, "mask", problems
    )


def _where(index: int, count: int) -> str:
    return "image" if count == 1 else f"image[{index}]"


def _read(value: Any, where: str, problems: list[Violation]) -> Any:
    if value is None or not hasattr(value, "read"):
        return value
    try:
        data = value.read()
    except (OSError, ValueError) as exc:
        problems.append(Violation(where, f"cannot read the file object: {exc}"))
        return None
    if isinstance(data, str):
        return data
    return bytes(data)


@attrs.frozen
class FamilyMask:
    """A mask in a family's convention: base64 PNG (or the caller's own bytes, when they were black and
    white already), whether gesso converted it, and how many pixels are to be edited and kept."""

    b64: str
    converted: bool
    edit_pixels: int
    keep_pixels: int
    width: int
    height: int


def family_mask(mask: Any, *, edit: str, where: str = "mask") -> tuple[FamilyMask | None, list[Violation]]:
    """``mask`` in a family's convention, where ``edit`` (``"black"`` or ``"white"``) marks the area to edit.

    An image with an alpha channel and at least one fully transparent pixel is OpenAI's convention and is
    converted (transparent: ``edit``; anything else: the other colour), as an 8-bit RGB PNG of the same
    size. A pure black-and-white image is used as given. Anything else is a violation naming both
    conventions."""
    loaded, problems = load(mask, where)
    if loaded is None:
        return None, problems
    width, height = loaded.info.width, loaded.info.height
    if width * height > MAX_DECODED_PIXELS:  # from its header, before decoding: a small file can declare a huge image
        return None, [Violation(where, f"is too large to check: {width}x{height} pixels (at most 4096x4096)")]
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - families that take masks install Pillow
        return None, [Violation(where, "converting masks needs Pillow (pip install pillow)")]
    try:
        picture = Image.open(io.BytesIO(loaded.data))
        picture.load()
    except Exception as exc:  # Pillow raises many kinds for damaged files
        return None, [Violation(where, f"is not a readable image ({exc})")]
    width, height = picture.size
    total = width * height
    if "A" in picture.getbands() or "transparency" in picture.info:
        alpha = picture.convert("RGBA").getchannel("A")
        transparent = alpha.histogram()[0]
        if transparent:
            marked = alpha.point(lambda a: 255 if a == 0 else 0)  # white where OpenAI's mask is transparent
            if edit == BLACK:
                marked = marked.point(lambda v: 255 - v)
            out = io.BytesIO()
            marked.convert("RGB").save(out, format="PNG")
            b64 = base64.b64encode(out.getvalue()).decode("ascii")
            return FamilyMask(b64, True, transparent, total - transparent, width, height), []
    colours = picture.convert("RGB").getcolors(2)
    if colours is not None and all(colour in ((0, 0, 0), (255, 255, 255)) for _, colour in colours):
        white = sum(count for count, colour in colours if colour == (255, 255, 255))
        edited = white if edit == WHITE else total - white
        return FamilyMask(loaded.b64, False, edited, total - edited, width, height), []
    keep = WHITE if edit == BLACK else BLACK
    return None, [
        Violation(
            where,
            "must be OpenAI's mask (a PNG with an alpha channel whose fully transparent pixels mark the area to "
            f"edit) or pure black and white in this model's convention ({edit} = edit, {keep} = keep)",
        )
    ]
