"""Titan's output sizes: only these (width, height) pairs are accepted, each in a price class."""

from __future__ import annotations

from gesso import sizes
from gesso.types import Size

#: (width, height) -> price class ("512" or "1024"), as in AWS's table.
SIZES: dict[tuple[int, int], str] = {
    (1024, 1024): "1024", (768, 768): "512", (512, 512): "512",
    (768, 1152): "1024", (384, 576): "512", (1152, 768): "1024", (576, 384): "512",
    (768, 1280): "1024", (384, 640): "512", (1280, 768): "1024", (640, 384): "512",
    (896, 1152): "1024", (448, 576): "512", (1152, 896): "1024", (576, 448): "512",
    (768, 1408): "1024", (384, 704): "512", (1408, 768): "1024", (704, 384): "512",
    (640, 1408): "1024", (320, 704): "512", (1408, 640): "1024", (704, 320): "512",
    (1152, 640): "1024", (1173, 640): "1024",
}  # fmt: skip

TABLE = tuple(Size(w, h) for w, h in SIZES)

#: Inputs of edits need not be table sizes; they are priced by area. The largest 512-class size has
#: 589,824 pixels and the smallest 1024-class size 737,280, so this line separates the two.
CLASS_AREA_LIMIT = 600_000


def allowed(width: int, height: int) -> bool:
    return (width, height) in SIZES


def nearest(width: int, height: int) -> Size:
    """The allowed size closest to (width, height): nearest in aspect ratio first, then in area."""
    return sizes.nearest(Size(width, height), TABLE)[0]


def price_class(size: Size) -> str:
    found = SIZES.get((size.width, size.height))
    if found is not None:
        return found
    return "512" if size.pixels < CLASS_AREA_LIMIT else "1024"


def listing() -> str:
    return ", ".join(f"{w}x{h}" for w, h in SIZES)
