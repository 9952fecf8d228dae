"""Just enough image handling for gesso, in the standard library: write PNGs, and read PNG/JPEG/WebP
headers (format and size). Pixel checks (transparency, mask colours) use Pillow: see :mod:`gesso.inputs`."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import attrs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> channels


class ImageFormatError(ValueError):
    """The bytes are not an image gesso can read."""


@attrs.frozen
class ImageInfo:
    format: str  # "png", "jpeg" or "webp"
    width: int
    height: int
    channels: int | None = None  # PNG only: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    bit_depth: int | None = None


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(width: int, height: int, rows: Sequence[bytes], *, channels: int = 3, level: int = 6) -> bytes:
    """Encode 8-bit rows (``width * channels`` bytes each, no filter byte) as a PNG."""
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, level)) + _chunk(b"IEND", b"")


def inspect(data: bytes) -> ImageInfo:
    """Format and size of PNG, JPEG or WebP bytes, read from the header alone. A header that declares
    no pixels (a zero width or height) is no readable image."""
    info = _inspect(data)
    if not (info.width and info.height):
        raise ImageFormatError(f"its header declares {info.width}x{info.height} pixels")
    return info


def _inspect(data: bytes) -> ImageInfo:
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise ImageFormatError("truncated PNG header")
        width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
        return ImageInfo("png", width, height, _CHANNELS.get(colour, 3 if colour == 3 else None), depth)
    if data.startswith(b"\xff\xd8"):
        return _inspect_jpeg(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _inspect_webp(data)
    if data[:4] == b"GIF8":  # named, so that its caller knows what to convert
        raise ImageFormatError("a GIF image: give it as PNG, JPEG or WebP")
    raise ImageFormatError("not a PNG, JPEG or WebP image")


def _inspect_jpeg(data: bytes) -> ImageInfo:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return ImageInfo("jpeg", width, height, data[i + 9] if i + 9 < len(data) else None, data[i + 4])
        i += 2 + length
    raise ImageFormatError("JPEG without a frame header")


def _inspect_webp(data: bytes) -> ImageInfo:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return ImageInfo("webp", width, height)
    if kind == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return ImageInfo("webp", width & 0x3FFF, height & 0x3FFF)
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ImageInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    raise ImageFormatError("unsupported WebP variant")


def inspect_b64(b64: str) -> ImageInfo | None:
    """Format and size of a base64 image, read from its first few kilobytes (enough for a JPEG's frame
    header past its metadata); ``None`` when it is no image gesso can read."""
    import base64
    import binascii

    for size in (64, 8192):  # a PNG or WebP header is in the first 48 bytes; a JPEG's may lie past its metadata
        head = b64[:size]
        try:
            return inspect(base64.b64decode(head[: len(head) - len(head) % 4]))
        except (ImageFormatError, binascii.Error, ValueError):
            if len(b64) <= size:
                break
    return None
