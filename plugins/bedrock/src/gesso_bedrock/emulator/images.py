"""Deterministic synthetic images for the emulator: real PNGs of the asked size, the same bytes for
the same inputs (prompt, seed, index...), different bytes when any of them changes. Each says what it is:
a label in its top-left corner ("gesso emulator" and the prompt's first words, in Pillow's default font)
and a ``Software`` text chunk, so no one takes it for a model's output."""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
import zlib
from typing import Any

from gesso.imaging import encode_png

_PATTERNS = 8
#: what the label's first line and the PNG's ``Software`` text chunk say
SOFTWARE = "gesso emulator"
_WORDS, _CHARS = 6, 40  # the most of the prompt the label shows


@functools.lru_cache(maxsize=256)
def synth_png(width: int, height: int, key: str, alpha: bool = False, prompt: str | None = None) -> bytes:
    """A ``width`` x ``height`` PNG whose colours derive from ``key``: a diagonal two-colour gradient,
    labelled with :data:`SOFTWARE` and the first words of ``prompt`` (see :func:`caption`).

    With ``alpha`` the image is RGBA and its left and right quarters are fully transparent (what a
    background removal returns), but for the label."""
    digest = hashlib.sha256(key.encode()).digest()
    first, second = digest[0:3], digest[3:6]
    gradient = bytearray()
    span = max(width - 1, 1)
    for x in range(width):
        t = x / span
        gradient += bytes(round(a + (b - a) * t) for a, b in zip(first, second))
    if alpha:
        quarter = width // 4
        with_alpha = bytearray()
        for x in range(width):
            with_alpha += gradient[x * 3 : x * 3 + 3] + (b"\xff" if quarter <= x < width - quarter else b"\x00")
        gradient = with_alpha
    channels = 4 if alpha else 3
    step = max(width // _PATTERNS, 1) * channels
    patterns = [bytes(gradient[i * step :] + gradient[: i * step]) for i in range(_PATTERNS)]
    band = max(height // (_PATTERNS * 2), 1)
    rows = [patterns[(y // band) % _PATTERNS] for y in range(height)]
    margin, label = _label(width, height, caption(prompt), channels)
    start = margin * channels
    for y, pixels in enumerate(label, start=margin):
        rows[y] = rows[y][:start] + pixels + rows[y][start + len(pixels) :]
    png = encode_png(width, height, rows, channels=channels, level=1)
    return png[:33] + _SOFTWARE_CHUNK + png[33:]  # after the signature and the IHDR chunk, before the pixels


def _text_chunk(keyword: str, text: str) -> bytes:
    data = keyword.encode("latin-1") + b"\x00" + text.encode("latin-1")
    return struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))


_SOFTWARE_CHUNK = _text_chunk("Software", SOFTWARE)


def caption(prompt: str | None) -> str:
    """What the label says under :data:`SOFTWARE`: the prompt's first words (at most 6, 40 characters, in
    Latin-1, which the default font draws), ``...`` when there is more; empty without a prompt."""
    words = prompt.split() if isinstance(prompt, str) else []
    text = " ".join(words[:_WORDS])
    shown = text[:_CHARS].rstrip()
    if shown != " ".join(words):
        shown += "..."
    return shown.encode("latin-1", "replace").decode("latin-1")


def _label(width: int, height: int, caption: str, channels: int) -> tuple[int, list[bytes]]:
    """(its margin from the top-left corner, the label's rows of pixels): white text on black, scaled to the
    image and clipped to it; no rows for an image too small to hold one pixel of it."""
    short = min(width, height)
    margin = max(1, short // 64)
    room = (width - 2 * margin, height - 2 * margin)
    if min(room) < 1:
        return margin, []
    return margin, _label_rows(caption, max(10, min(28, short // 32)), room, channels)


@functools.lru_cache(maxsize=256)
def _label_rows(caption: str, size: int, room: tuple[int, int], channels: int) -> list[bytes]:
    """The label drawn once for its text, size and room (an emulator answers many images of one prompt)."""
    from PIL import Image, ImageDraw

    lines = [SOFTWARE, caption] if caption else [SOFTWARE]
    font, block = _font(size), _block(lines, size)
    if block[0] > room[0] and size > 8:  # too wide: the largest size that fits (at least 8 px), then clip
        size = max(8, size * room[0] // block[0])
        font, block = _font(size), _block(lines, size)
    pad, step = _spacing(size)
    picture = Image.new("L", block, 0)
    draw = ImageDraw.Draw(picture)
    for index, line in enumerate(lines):
        draw.text((pad, pad + index * step), line, fill=255, font=font)
    picture = picture.crop((0, 0, min(block[0], room[0]), min(block[1], room[1])))
    data = picture.convert("RGBA" if channels == 4 else "RGB").tobytes()
    stride = picture.width * channels
    return [data[i : i + stride] for i in range(0, len(data), stride)]


@functools.lru_cache(maxsize=32)
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: one bitmap size
        return ImageFont.load_default()


def _spacing(size: int) -> tuple[int, int]:
    """(the padding around the text, the distance from one line's top to the next's)."""
    return max(2, size // 3), size + max(2, size // 4)


def _block(lines: list[str], size: int) -> tuple[int, int]:
    """The label's width and height at ``size``: the widest line, every line, and the padding."""
    font = _font(size)
    pad, step = _spacing(size)
    widest = max(int(font.getlength(line)) + 1 for line in lines)
    return widest + 2 * pad, step * (len(lines) - 1) + size + 2 * pad


@functools.lru_cache(maxsize=256)
def synth_png_b64(width: int, height: int, key: str, alpha: bool = False, prompt: str | None = None) -> str:
    return base64.b64encode(synth_png(width, height, key, alpha, prompt)).decode("ascii")
