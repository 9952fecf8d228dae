"""One size rule for every family: a size the model cannot make exactly is refused, naming the nearest sizes
it makes, unless the caller set ``snap_size=True`` (then the nearest is used, and a warning and the response's
``size`` say so); never a silent change.

A family says why its model cannot make a size (:func:`fit`'s ``refuses``) and offers candidates near a size
(``near``; :func:`grid` builds them for models that take any size on a grid); :func:`fit_body` applies the
rule to a width and height placed in a body; :func:`nearest` orders them
as a person would pick: the closest aspect ratio first, then the closest area. An edit whose output takes
its input's size checks ``size`` with :func:`matches_input`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from gesso.errors import Violation
from gesso.params import BodyBuilder, dotted
from gesso.types import Size

#: Sides wider than this are no size any model makes; the schema's limits name them (not this rule).
MAX_SIDE_BITS = 24


def nearest(size: Size, candidates: Iterable[Size], count: int = 1) -> list[Size]:
    """The ``count`` candidates closest to ``size``: by aspect ratio (ratios within about 1% of each other
    count as equal: a grid's rounding of one side), then by area, both compared as logarithms."""

    def distance(other: Size) -> tuple[float, float]:
        ratio = (other.width / other.height) / (size.width / size.height)
        return (round(abs(math.log(ratio)), 2), abs(math.log(other.pixels / size.pixels)))

    return sorted(set(candidates), key=lambda s: (*distance(s), s.width))[:count]


def fit(
    size: Size,
    *,
    refuses: Callable[[Size], str | None],
    near: Callable[[Size], Iterable[Size]],
    snap: bool,
    what: str,
    allowed: str = "",
    where: str = "size",
    shown: int = 1,
) -> tuple[Size | None, str | None, Violation | None]:
    """``(size to send, warning, violation)`` for ``size``. ``refuses(size)`` is ``None`` when the model makes
    that size, else why not (``""``: no more to say). A size the model makes is sent as it is; with ``snap``,
    the nearest of ``near(size)`` is, with a warning; otherwise a violation at ``where`` says why, names the
    ``shown`` nearest sizes and what is ``allowed`` (the model's sizes, listed or in words). ``what`` names the
    model's sizes in messages (``"a Titan size"``). A side too large to be any size at all is left to the
    schema: ``(size, None, None)``."""
    if size.width.bit_length() > MAX_SIDE_BITS or size.height.bit_length() > MAX_SIDE_BITS:
        return size, None, None
    reason = refuses(size)
    if reason is None:
        return size, None, None
    why = f": {reason}" if reason else ""
    found = nearest(size, near(size), shown)
    tail = f". Allowed: {allowed}" if allowed else ""
    if not found:
        return None, None, Violation(where, f"{size} is not {what}{why}{tail}")
    if snap:
        return found[0], f"{size} is not {what}; snapped to the nearest, {found[0]}", None
    others = f"; then {', '.join(map(str, found[1:]))}" if len(found) > 1 else ""
    message = f"{size} is not {what}{why}; the nearest is {found[0]} (set snap_size to true to use it){others}{tail}"
    return None, None, Violation(where, message)


def fit_body(
    builder: BodyBuilder,
    parent: tuple[str, ...],
    problems: list[Violation],
    *,
    snap: bool,
    refuses: Callable[[Size], str | None],
    near: Callable[[Size], Iterable[Size]],
    what: str,
    allowed: str = "",
    shown: int = 1,
) -> list[str]:
    """:func:`fit` on the ``width`` and ``height`` placed under ``parent`` in ``builder``'s body, from ``size`` or
    given as they are: a size the model makes stays; with ``snap`` the nearest replaces it (returned: the
    warning); otherwise a violation goes to ``problems`` and the two fields leave the body, so that the schema
    does not say the same again. Sides missing, mistyped or below 1 are left to the schema."""
    node = builder.get(parent) if parent else builder.body
    if not isinstance(node, dict):
        return []
    width, height = node.get("width"), node.get("height")
    if type(width) is not int or type(height) is not int or width < 1 or height < 1:
        return []
    prefix = f"{dotted(parent)}." if parent else ""
    where = "size" if builder.sources.get(f"{prefix}width") == "size" else f"{prefix}width/height"
    size, note, problem = fit(
        Size(width, height), refuses=refuses, near=near, snap=snap, what=what, allowed=allowed, where=where,
        shown=shown,
    )  # fmt: skip
    if problem is not None:
        problems.append(problem)
        del node["width"], node["height"]
    elif size is not None:
        node["width"], node["height"] = size.width, size.height
    return [note] if note else []


def grid(
    size: Size,
    *,
    step: int,
    min_side: int,
    max_side: int,
    max_aspect: float,
    pixels_below: int,
) -> list[Size]:
    """Sizes near ``size`` that a model taking any width and height on a grid makes: sides multiples of ``step``
    from ``min_side`` to ``max_side``, an aspect ratio at most ``max_aspect``, fewer than ``pixels_below``
    pixels. ``size`` is first brought within the aspect and pixel limits, keeping its shape where it can."""
    ratio = min(max(size.width / size.height, 1 / max_aspect), max_aspect)
    area = min(size.pixels, pixels_below - 1)
    width, height = math.sqrt(area * ratio), math.sqrt(area / ratio)

    def sides(value: float) -> set[int]:
        low = max(min_side, min(max_side, math.floor(value / step) * step))
        high = max(min_side, min(max_side, math.ceil(value / step) * step))
        return {low, high, max(min_side, low - step)}

    found = [Size(w, h) for w in sides(width) for h in sides(height)]
    return [
        s for s in found if s.pixels < pixels_below and max(s.width, s.height) / min(s.width, s.height) <= max_aspect
    ]


def matches_input(size: Size | None, input_size: Size | None, what: str) -> list[Violation]:
    """An edit whose output takes its input image's size accepts ``size`` equal to it (or none, or "auto");
    another size is refused, naming the input's size: gesso never resizes an image silently."""
    if size is None or input_size is None or size == input_size:
        return []
    return [
        Violation(
            "size",
            f"{what}: the output takes the input image's size, {input_size}; give size {input_size} or auto, or "
            f"leave size out (got {size})",
        )
    ]
