"""What the Stability models share: flat bodies, size -> aspect ratio, one image per call (so ``n`` fans
out into calls with distinct seeds, at most ``max_fanout`` of them), the ``seeds``/``finish_reasons``/``images``
response, image rules."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from gesso import family, inputs, operations, sizes
from gesso.errors import ContentFilteredError, InvalidRequestError, ProviderError, Violation
from gesso.imaging import inspect_b64
from gesso.params import BodyBuilder, property_names, unknown_parameter
from gesso.types import GeneratedImage, ImageRequest, ParsedResponse, PreparedRequest, RawResponse, Size

RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
#: The about-1-megapixel size Stability renders for each ratio (the emulator uses it).
RATIO_SIZES = {
    "1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "21:9": (1536, 640), "9:21": (640, 1536),
    "3:2": (1216, 832), "2:3": (832, 1216), "5:4": (1088, 896), "4:5": (896, 1088),
}  # fmt: skip
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
#: The most calls one request's ``n`` may fan out to, unless the call raises it with ``max_fanout``.
MAX_FANOUT = 10
_SEEDS = random.SystemRandom()


#: How far a size's aspect ratio may stray from a ratio's span and still be that ratio (rounding of sides)
RATIO_TOLERANCE = 0.01


def ratio_of(size: Size) -> str | None:
    """The one of Stability's nine aspect ratios that ``size`` has, or ``None``. A ratio spans its name and the
    size Stability renders it at (16:9 is 1.778 by name and 1.75 as rendered, 1344x768), so OpenAI's
    1792x1024 is 16:9."""
    target = size.width / size.height
    for ratio in RATIOS:
        w, h = ratio.split(":")
        rendered = RATIO_SIZES[ratio]
        low, high = sorted((int(w) / int(h), rendered[0] / rendered[1]))
        if low * (1 - RATIO_TOLERANCE) <= target <= high * (1 + RATIO_TOLERANCE):
            return ratio
    return None


def aspect_ratio(request: ImageRequest, what: str) -> tuple[str | None, str | None, Violation | None]:
    """``(aspect_ratio, note, violation)`` for the caller's ``size`` (gesso's size rule, :mod:`gesso.sizes`): a
    size of one of the nine ratios is sent as it; another is refused naming the nearest sizes, unless
    ``snap_size`` takes the nearest."""
    assert request.size is not None
    ratio = ratio_of(request.size)
    if ratio is not None:
        return ratio, f"size {request.size} was sent as aspect_ratio {ratio}, the nearest {what} offers", None
    rendered = ", ".join(f"{r} ({w}x{h})" for r, (w, h) in RATIO_SIZES.items())
    size, note, problem = sizes.fit(
        request.size,
        refuses=lambda size: f"its aspect ratio, {size.width / size.height:.2f}:1, is none of the nine it takes",
        near=lambda size: [Size(*pair) for pair in RATIO_SIZES.values()],
        snap=request.snap_size, what=f"a size {what} makes",
        allowed=f"any size of these aspect ratios, each made at the size given: {rendered}",
    )  # fmt: skip
    if size is None:
        return None, None, problem
    ratio = ratio_of(size)
    return ratio, f"{note} (aspect_ratio {ratio})", None


def take_max_fanout(request: ImageRequest, what: str) -> dict[str, Any]:
    """Pop ``max_fanout`` (an int >= 1, default :data:`MAX_FANOUT`) from the provider kwargs and refuse an
    ``n`` past it, before any body is built: ``n=10**6`` builds and sends nothing. Returns the other kwargs."""
    params = dict(request.params)
    cap = params.pop("max_fanout", None)
    if cap is None:
        cap = MAX_FANOUT
    elif isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise InvalidRequestError(
            [Violation("max_fanout", f"must be a whole number of at least 1, the most calls n may make (got {cap!r})")],
            model=request.model_name,
        )
    n = request.n or 1
    if n > cap:
        message = (
            f"{n} images would be {n} separate paid calls ({what} returns one image per call), more than the "
            f"cap of {cap}; to allow it, pass max_fanout={n} (or ask for fewer images)"
        )
        raise InvalidRequestError([Violation("n", message)], model=request.model_name)
    return params


def place_flat(
    request: ImageRequest, schema: Mapping[str, Any], what: str, params: Mapping[str, Any], input_sized: bool = False
) -> tuple[BodyBuilder, list[Violation], list[str]]:
    """A flat body: every provider kwarg in ``params`` is a body field; the prompt goes to ``prompt``,
    ``style`` to ``style_preset`` and ``size`` to ``aspect_ratio`` when the model has them (:func:`aspect_ratio`).
    On an ``input_sized`` model (its output takes the input image's size) a ``size`` is left for
    :func:`input_size` to check. Returns (builder, problems, notes for the response's warnings)."""
    fields = property_names(schema)
    builder = BodyBuilder()
    problems: list[Violation] = []
    notes: list[str] = []
    if request.prompt is not None:
        if "prompt" in fields:
            builder.set(("prompt",), request.prompt, "prompt")
        else:
            problems.append(Violation("prompt", f"{what} takes no prompt; leave prompt out"))
    for key, value in params.items():
        if key in fields:
            builder.set((key,), value, key)
        else:
            problems.append(unknown_parameter(key, [*fields, "max_fanout"], what))
    if request.style is not None:
        if "style_preset" in fields:
            builder.set(("style_preset",), request.style, "style")
        else:
            problems.append(Violation("style", f"{what} has no style presets"))
    if request.quality is not None:
        problems.append(Violation("quality", f"{what} has no quality setting; leave quality out"))
    if request.size is not None:
        if "aspect_ratio" in fields:
            ratio, note, problem = aspect_ratio(request, what)
            if problem is not None:
                problems.append(problem)
            else:
                builder.set(("aspect_ratio",), ratio, "size")
                notes.append(str(note))
        elif not input_sized:
            problems.append(Violation("size", f"{what} takes no size: its output follows the input image"))
    return builder, problems, notes


def input_size(request: ImageRequest, images: family.Images, what: str) -> list[Violation]:
    """The ``size`` of an edit whose output takes its (first) input image's size: that size, or none."""
    first = next((image for image, kind in images.values() if kind == "image"), None)
    if first is None:
        return []
    return sizes.matches_input(request.size, Size(first.info.width, first.info.height), what)


def place_edit(
    request: ImageRequest,
    builder: BodyBuilder,
    params: Mapping[str, Any],
    schema: Mapping[str, Any],
    what: str,
    mask_with: Mapping[str, Any] | None = None,
) -> list[Violation]:
    """An edit's inputs (``gesso.image_edit``) in a flat body: its images, in order, in the schema's image
    fields (``image``; Style Transfer ``init_image``, then ``style_image``; SDXL ``init_image``), and its
    mask, converted to Stability's convention (white = edit), in the mask field, with ``mask_with`` beside it
    (SDXL's ``mask_source``). A field the caller also gave as a parameter is an error naming both sources,
    never overridden. The core lets a mask through only to a model declaring ``edit_mask``, whose schema
    has a mask field. Returns the problems; a generation places nothing."""
    if request.operation != "edit":
        return []
    fields = [path[0] for path, kind in inputs.image_fields(schema) if len(path) == 1 and kind == "image"]
    problems: list[Violation] = []
    images = request.images
    if len(images) > len(fields):
        takes = "one image" if len(fields) == 1 else f"{len(fields)} images ({', '.join(fields)}, in that order)"
        problems.append(Violation("image", f"{what} takes {takes} (got {len(images)})"))
    for index, (name, image) in enumerate(zip(fields, images)):
        problems += _place_once(builder, params, name, image, "image" if len(images) == 1 else f"image[{index}]")
    if request.mask is not None:
        masks = [path[0] for path, kind in inputs.image_fields(schema) if len(path) == 1 and kind != "image"]
        converted, found = operations.family_mask(request.mask, edit=operations.WHITE)
        problems += found
        if converted is not None:
            problems += _place_once(builder, params, masks[0], converted.b64, "mask")
            for name, value in (mask_with or {}).items():
                problems += _place_once(builder, params, name, value, "mask")
    return problems


def _place_once(builder: BodyBuilder, params: Mapping[str, Any], name: str, value: Any, source: str) -> list[Violation]:
    if name in params:
        message = f"is set by the edit's {source} (sent as {name}) and given as a parameter too; give it once"
        return [Violation(name, message)]
    builder.set((name,), value, source)
    return []


def edit_mask_size(request: ImageRequest, images: Mapping[str, tuple[inputs.ImageInput, str]]) -> list[Violation]:
    """An edit's mask must be the size of the image it masks (gesso never resizes one, although Stability
    would)."""
    if request.operation != "edit" or request.mask is None:
        return []
    image = next(((where, i) for where, (i, kind) in images.items() if kind == "image"), None)
    mask = next((i for i, kind in images.values() if kind != "image"), None)
    if image is None or mask is None:
        return []
    return inputs.same_size("mask", mask, *image)


def fan_out(body: dict[str, Any], n: int, *, seed_max: int) -> list[dict[str, Any]]:
    """One body per image. With a seed, the calls get seed, seed+1, ... (distinct, reproducible). With no
    seed (or 0, which means random), gesso picks n distinct random seeds in 1..seed_max, so the calls
    cannot come back identical; the response reports each image's seed. One image sends no invented seed."""
    if n <= 1:
        return [body]
    seed = body.get("seed")
    if not seed:
        return [{**body, "seed": chosen} for chosen in _SEEDS.sample(range(1, seed_max + 1), n)]
    return [{**body, "seed": (seed - 1 + i) % seed_max + 1} for i in range(n)]


def parse_seeded(request: ImageRequest, prepared: PreparedRequest, response: RawResponse) -> ParsedResponse:
    """``{"seeds": [...], "finish_reasons": [...], "images": [...]}`` (SD3, Ultra, Core, the services).

    A null finish reason is success. A filtered prompt or input image is a :class:`ContentFilteredError`;
    a filtered output is counted (gesso raises when every output of a call was withheld); "Inference
    error" is a :class:`ProviderError`."""
    model = request.model_name
    data = family.json_answer(request, response)
    images, seeds = data.get("images") or [], data.get("seeds") or []
    reasons = data.get("finish_reasons") or [None] * len(images)
    kept: list[GeneratedImage] = []
    filtered = 0
    warnings: list[str] = []
    for index, reason in enumerate(reasons):
        if reason is None and index < len(images):
            seed = seeds[index] if index < len(seeds) else None
            kept.append(GeneratedImage(b64=images[index], mime_type=_mime(images[index]), seed=seed))
        elif isinstance(reason, str) and reason.startswith("Filter reason") and "output" in reason:
            filtered += 1
            warnings.append(f"Stability content filter: {reason}")
        elif isinstance(reason, str) and reason.startswith("Filter reason"):
            raise ContentFilteredError(f"Stability content filter: {reason}", model=model)
        else:
            raise ProviderError(f"{request.model.name} failed: {reason or 'no image returned'}", model=model)
    if not kept and not filtered:
        raise ProviderError(f"{request.model.name} answered with no images", model=model)
    return ParsedResponse(images=kept, filtered=filtered, warnings=warnings, size=_size(kept[0].b64) if kept else None)


def _mime(b64: str) -> str:
    info = inspect_b64(b64)
    return MIME.get(info.format, "image/png") if info else "image/png"


def _size(b64: str) -> Size | None:
    info = inspect_b64(b64)
    return Size(info.width, info.height) if info else None


# -- input images ----------------------------------------------------------------------------------------

#: The formats every Stability input image may have, and each kind of model's size limits (read by the
#: request builders and the emulation alike).
FORMATS = {"sdxl": ("png", "jpeg")}
LIMITS: dict[str, inputs.ImageLimits] = {
    "standard": inputs.ImageLimits(min_side=64, max_pixels=9_437_184, max_aspect=2.5),
    "creative-upscale": inputs.ImageLimits(min_side=64, min_pixels=4_096, max_pixels=1_048_576),
    "fast-upscale": inputs.ImageLimits(min_side=32, max_side=1536, min_pixels=1_024, max_pixels=1_048_576),
    "sd3": inputs.ImageLimits(min_side=64),
    "sdxl": inputs.ImageLimits(min_side=1, min_pixels=262_144, max_pixels=1_048_576),
}


def image_rules(images: Mapping[str, tuple[inputs.ImageInput, str]], limits: str) -> list[Violation]:
    """Format, side, pixel and aspect limits for every input image; masks need only decode."""
    formats = FORMATS.get(limits, ("jpeg", "png", "webp"))
    found: list[Violation] = []
    for where, (image, kind) in images.items():
        if image.info.format not in formats:
            got = image.info.format.upper()
            found.append(Violation(where, f"must be {', '.join(f.upper() for f in formats)} (got {got})"))
            continue
        refused = LIMITS[limits].check(where, image) if kind == "image" else []
        # pixels are decoded only for an image whose header passed
        found += refused or inputs.check_pixels(image, where, opaque=False)
    return found
