"""Image inputs: accept what callers have, send what the model wants, and check it before sending.

A caller may give an image as ``bytes``, a ``pathlib.Path``, a base64 string, or a ``data:`` URL; the
body always carries base64. Family schemas mark image fields with ``"x-image": "image"`` (or ``"mask"``),
so the schema stays the one place that says where images go. Checks that need pixels (transparency, mask
colours) use Pillow, imported only when an image is checked: families that take images depend on it.
"""

from __future__ import annotations

import base64
import binascii
import io
import pathlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from gesso.errors import GessoError, Violation
from gesso.imaging import ImageFormatError, ImageInfo, inspect
from gesso.params import deref, dotted

#: JPEG masks cannot be exactly black and white after compression (providers ask for 100% quality).
#: Channel values this close to 0 or 255 count as black or white in a JPEG mask (our choice).
JPEG_MASK_TOLERANCE = 8


@attrs.frozen
class ImageInput:
    """One image as it will be sent: base64 text, the decoded bytes, and what its header says."""

    b64: str = attrs.field(repr=lambda s: f"<{len(s)} base64 chars>")
    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    info: ImageInfo


#: ``http://``, ``https://``, ``file://``, ``s3://``...: no image is ever fetched from a URL a caller gives (a
#: server running gesso would otherwise fetch whatever its callers name: server-side request forgery)
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}://")


def _url(scheme: str) -> str:
    return (
        f"is a URL ({scheme}//...); gesso never fetches images from URLs: give the image itself (bytes, a "
        "pathlib.Path, base64 text or a data: URL)"
    )


def load(value: Any, where: str) -> tuple[ImageInput | None, list[Violation]]:
    """Turn a caller's image value into an :class:`ImageInput`, or say why it cannot be one. A URL is refused,
    never fetched."""
    if isinstance(value, (str, bytes, bytearray)):
        found = _URL_RE.match(value if isinstance(value, str) else bytes(value[:20]).decode("latin-1"))
        if found:
            return None, [Violation(where, _url(found.group()[:-2]))]
    if isinstance(value, pathlib.PurePath):
        try:
            data = pathlib.Path(value).read_bytes()
        except OSError as exc:
            return None, [Violation(where, f"cannot read image file {str(value)!r}: {exc.strerror or exc}")]
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        text = value
        if text.startswith("data:"):
            header, sep, text = text.partition(",")
            if not sep or ";base64" not in header:
                return None, [Violation(where, "a data: URL must be base64-encoded (data:image/png;base64,...)")]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None, [
                Violation(
                    where,
                    "must be an image: bytes, a pathlib.Path, base64 text or a data: URL (got text that is not base64)",
                )
            ]
    else:
        return None, [
            Violation(
                where,
                f"must be an image: bytes, a pathlib.Path, base64 text or a data: URL (got {type(value).__name__})",
            )
        ]
    if not data:
        return None, [Violation(where, "is an empty image")]
    try:
        info = inspect(data)
    except ImageFormatError as exc:
        return None, [Violation(where, f"is not a readable image ({exc})")]
    return ImageInput(b64=base64.b64encode(data).decode("ascii"), data=data, info=info), []


_fields: dict[int, tuple[Mapping[str, Any], list[tuple[tuple[Any, ...], str]]]] = {}


def image_fields(schema: Mapping[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Every ``(path, kind)`` the schema marks with ``x-image``; ``"*"`` in a path stands for list items.
    Worked out once per schema: this runs on every call."""
    cached = _fields.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    found = _walk_image_fields(schema)
    _fields[id(schema)] = (schema, found)
    return found


def _walk_image_fields(schema: Mapping[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    root = schema
    found: list[tuple[tuple[Any, ...], str]] = []

    def walk(node: Any, path: tuple[Any, ...], depth: int) -> None:
        node = deref(root, node)
        if depth > 12 or not isinstance(node, Mapping):
            return
        if "x-image" in node:
            found.append((path, node["x-image"]))
            return
        for name, sub in node.get("properties", {}).items():
            walk(sub, (*path, name), depth + 1)
        if "items" in node:
            walk(node["items"], (*path, "*"), depth + 1)

    walk(schema, (), 0)
    return found


def locate(body: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
    """Every ``(concrete path, parent, key)`` in ``body`` that ``path`` (with ``"*"``) points at."""

    def walk(node: Any, rest: tuple[Any, ...], done: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
        head, tail = rest[0], rest[1:]
        keys: list[Any]
        if head == "*":
            keys = list(range(len(node))) if isinstance(node, list) else []
        else:
            keys = [head] if isinstance(node, dict) and head in node else []
        for key in keys:
            if tail:
                yield from walk(node[key], tail, (*done, key))
            else:
                yield (*done, key), node, key

    if path:
        yield from walk(body, path, ())


def convert_images(body: Any, schema: Mapping[str, Any]) -> tuple[dict[str, tuple[ImageInput, str]], list[Violation]]:
    """Replace every image value in ``body`` (in place) with base64; return the loaded images by dotted
    path, with their kind, and the violations for values that are not images."""
    images: dict[str, tuple[ImageInput, str]] = {}
    problems: list[Violation] = []
    for path, kind in image_fields(schema):
        if path and path[0] != "*" and (not isinstance(body, dict) or path[0] not in body):
            continue  # the common case, no image there: skip the walk
        for concrete, parent, key in locate(body, path):
            where = dotted(concrete)
            loaded, found = load(parent[key], where)
            problems += found
            if loaded is not None:
                parent[key] = loaded.b64
                images[where] = (loaded, kind)
    return images, problems


def convert_and_validate(
    body: Any, schema: Mapping[str, Any], *, sources: Mapping[str, str] | None = None
) -> tuple[dict[str, tuple[ImageInput, str]], list[Violation]]:
    """:func:`convert_images`, then the schema check of the converted body. A value that is not an image
    is reported once, as such, not again as a schema type error."""
    from gesso.params import schema_violations

    images, problems = convert_images(body, schema)
    bad = {v.path for v in problems}
    for violation in schema_violations(schema, body, sources=sources):
        if not any(violation.path == p or violation.path.startswith((f"{p}.", f"{p}[")) for p in bad):
            problems.append(violation)
    return images, problems


@attrs.frozen(kw_only=True)
class ImageLimits:
    """A family's limits on an input image's size, read from its header: the one object both the family's
    request builder and its emulation check images with. ``max_pixels`` is inclusive, ``pixels_below``
    exclusive; ``first_only`` reports only the first rule broken."""

    min_side: int | None = None
    max_side: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    pixels_below: int | None = None
    max_aspect: float | None = None
    max_bytes: int | None = None
    first_only: bool = False

    def check(self, where: str, image: ImageInput) -> list[Violation]:
        w, h = image.info.width, image.info.height
        px = w * h
        found: list[Violation] = []
        low, high = self.min_side, self.max_side
        if (low and min(w, h) < low) or (high and max(w, h) > high):
            if not low:
                found.append(Violation(where, f"must be at most {high} pixels on the long side (got {w}x{h})"))
            else:
                limit = f"{low} to {high}" if high else f"at least {low}"
                found.append(Violation(where, f"each side must be {limit} pixels (got {w}x{h})"))
        low, high = self.min_pixels, self.max_pixels
        if (low and px < low) or (high and px > high):
            limit = f"{low:,} to {high:,}" if low and high else f"at most {high:,}" if high else f"at least {low:,}"
            found.append(Violation(where, f"must have {limit} pixels (got {w}x{h} = {px:,})"))
        if self.max_aspect and max(w, h) / min(w, h) > self.max_aspect:
            a = self.max_aspect
            found.append(Violation(where, f"aspect ratio must be between 1:{a:g} and {a:g}:1 (got {w}x{h})"))
        if self.pixels_below and px >= self.pixels_below:
            found.append(Violation(where, f"must have fewer than {self.pixels_below:,} pixels (got {w}x{h} = {px:,})"))
        if self.max_bytes and len(image.data) > self.max_bytes:
            size = len(image.data) / 1024 / 1024
            found.append(Violation(where, f"must be at most {self.max_bytes / 1024 / 1024:g} MB (got {size:.1f} MB)"))
        return found[:1] if self.first_only else found


def same_size(where: str, image: ImageInput, other_where: str, other: ImageInput) -> list[Violation]:
    """A mask must have the size of the image it masks."""
    a, b = image.info, other.info
    if (a.width, a.height) == (b.width, b.height):
        return []
    return [Violation(where, f"must be the size of {other_where} ({b.width}x{b.height}; got {a.width}x{a.height})")]


# --------------------------------------------------------------------------------------------------
# Pixel checks (Pillow)


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # a family that takes images depends on Pillow; this is a broken install
        raise GessoError("checking input images needs Pillow: pip install pillow") from exc
    return Image


#: The most pixels gesso decodes to check an image (no image model gesso knows takes more); the
#: size comes from the header, so a small file that declares a huge image is refused before decoding.
MAX_DECODED_PIXELS = 4096 * 4096


def open_pixels(image: ImageInput, where: str) -> tuple[Any, list[Violation]]:
    """Decode an image fully (Pillow). Returns (PIL image or None, violations)."""
    width, height = image.info.width, image.info.height
    if width * height > MAX_DECODED_PIXELS:
        return None, [Violation(where, f"is too large to check: {width}x{height} pixels (at most 4096x4096)")]
    pil = _pil()
    try:
        picture = pil.open(io.BytesIO(image.data))
        picture.load()
    except Exception as exc:  # Pillow raises many types for corrupt data
        reason = re.sub(r" <[^<>]* at 0x[0-9a-f]+>", "", str(exc))  # (Pillow names the in-memory file it read)
        return None, [Violation(where, f"is not a decodable {image.info.format.upper()} image ({reason})")]
    return picture, []


def check_pixels(image: ImageInput, where: str, *, mask: bool = False, opaque: bool = True) -> list[Violation]:
    """8 bits per channel; with ``opaque``, no transparent or translucent pixels; a mask only pure black
    and white."""
    picture, problems = open_pixels(image, where)
    if picture is None:
        return problems
    mode = picture.mode
    if mode not in ("RGB", "RGBA", "L", "LA", "P", "1"):
        return [Violation(where, f"must have 8 bits per channel, RGB or greyscale (got PIL mode {mode})")]
    if mode == "P":
        picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
    elif mode == "1":
        picture = picture.convert("L")
    if picture.mode in ("RGBA", "LA"):
        low, _ = picture.getchannel("A").getextrema()
        if opaque and low < 255:
            problems.append(
                Violation(where, "has transparent or translucent pixels; its alpha channel must be fully opaque")
            )
        picture = picture.convert("RGB" if picture.mode == "RGBA" else "L")
    if mask:
        problems += _mask_colours(picture, where, jpeg=image.info.format == "jpeg")
    return problems


def _mask_colours(picture: Any, where: str, *, jpeg: bool) -> list[Violation]:
    from PIL import ImageChops

    tolerance = JPEG_MASK_TOLERANCE if jpeg else 0
    bands = picture.split()
    for band in bands:
        histogram = band.histogram()
        if any(histogram[tolerance + 1 : 255 - tolerance]):
            return [Violation(where, "a mask may hold only pure black (0,0,0) and pure white (255,255,255) pixels")]
    for other in bands[1:]:
        highest = ImageChops.difference(bands[0], other).getextrema()[1]  # a band's extrema: (lowest, highest)
        if isinstance(highest, (int, float)) and highest > 2 * tolerance:
            return [Violation(where, "a mask may hold only pure black (0,0,0) and pure white (255,255,255) pixels")]
    return []
