"""Deterministic synthetic images for the emulator: real PNGs of the asked size, the same bytes for
the same inputs (prompt, seed, index...), different bytes when any of them changes."""

from __future__ import annotations

import base64
import functools
import hashlib

from gesso.imaging import encode_png

_PATTERNS = 8


@functools.lru_cache(maxsize=256)
def synth_png(width: int, height: int, key: str, alpha: bool = False) -> bytes:
    """A ``width`` x ``height`` PNG whose colours derive from ``key``: a diagonal two-colour gradient.

    With ``alpha`` the image is RGBA and its left and right quarters are fully transparent (what a
    background removal returns)."""
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
    return encode_png(width, height, rows, channels=channels, level=1)


@functools.lru_cache(maxsize=256)
def synth_png_b64(width: int, height: int, key: str, alpha: bool = False) -> str:
    return base64.b64encode(synth_png(width, height, key, alpha)).decode("ascii")
