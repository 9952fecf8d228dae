"""SDXL (stability.stable-diffusion-xl-v0, -v1): ``text_prompts`` with weights, the allowed sizes,
image-to-image and masking, ``artifacts`` responses; never a filtered (blurred) image as success.
``gesso.image_edit`` (v1): the image is ``init_image``; a mask adds ``mask_source`` MASK_IMAGE_WHITE and the
mask, converted to white = edit, as ``mask_image``."""

from __future__ import annotations

from typing import Any

from gesso import family, inputs, sizes
from gesso.errors import ProviderError, Violation
from gesso.params import BodyBuilder, property_names, unknown_parameter
from gesso.types import (
    GeneratedImage,
    ImageRequest,
    ImageResponse,
    Model,
    ParsedResponse,
    PreparedRequest,
    PriceTable,
    RawResponse,
    Size,
)
from gesso_bedrock_stability import common
from gesso_bedrock_stability.models import schema

#: Allowed (width, height) for SDXL 1.0 and 0.9 on Bedrock; v0 also priced 512x512 (our choice: allow it).
SIZES = (
    (1024, 1024),
    (1152, 896),
    (1216, 832),
    (1344, 768),
    (1536, 640),
    (640, 1536),
    (768, 1344),
    (832, 1216),
    (896, 1152),
)
V0_EXTRA_SIZES = ((512, 512),)
SEED_MAX = 4294967295
DEFAULT_STEPS = 30


def allowed_sizes(model_id: str) -> tuple[tuple[int, int], ...]:
    return SIZES + (V0_EXTRA_SIZES if model_id != "stability.stable-diffusion-xl-v1" else ())


def prepare(request: ImageRequest) -> PreparedRequest:
    body_schema = schema("sdxl.json")
    what = request.model.name
    params = common.take_max_fanout(request, what)
    negative = params.pop("negative_prompt", None)
    fields = property_names(body_schema)
    builder = BodyBuilder()
    problems: list[Violation] = []
    if "text_prompts" in params and (request.prompt is not None or negative is not None):
        problems.append(Violation("text_prompts", "give either prompt (and negative_prompt) or text_prompts, not both"))
    elif "text_prompts" not in params:
        if request.prompt is None:
            problems.append(Violation("prompt", f"is required for {what}"))
        else:
            prompts = [{"text": request.prompt, "weight": 1}]
            if negative is not None:
                prompts.append({"text": negative, "weight": -1})
            builder.set(("text_prompts",), prompts, "prompt")
    for key, value in params.items():
        if key in fields:
            builder.set((key,), value, key)
        else:
            problems.append(unknown_parameter(key, {*fields, "negative_prompt", "max_fanout"}, what))
    if request.style is not None:
        builder.set(("style_preset",), request.style, "style")
    if request.quality is not None:
        problems.append(Violation("quality", f"{what} has no quality setting; leave quality out"))
    if request.size is not None:
        builder.set(("width",), request.size.width, "size")
        builder.set(("height",), request.size.height, "size")
    notes = _fit_size(request, builder, problems)
    # an edit (v1 only): init_image, and with a mask the masking form, white = edit
    problems += common.place_edit(request, builder, params, body_schema, what, {"mask_source": "MASK_IMAGE_WHITE"})
    body = builder.body

    def rules(body: dict[str, Any], images: family.Images) -> list[Violation]:
        return _size_rules(request, body, builder) + common.image_rules(images, "sdxl") + _mask_size(images)

    images = family.check(
        request, body, body_schema, what=what, problems=problems + builder.violations, sources=builder.sources,
        rules=rules,
    )  # fmt: skip
    init = images.get("init_image")
    if "width" in body:
        size = Size(body["width"], body["height"])
    elif init is not None:
        size = Size(init[0].info.width, init[0].info.height)
    else:
        size = Size(1024, 1024)
    n = request.n or 1
    bodies = common.fan_out(body, n, seed_max=SEED_MAX)  # (0 or no seed: random, so not seeded)
    return PreparedRequest(bodies=bodies, size=size, requested=n, warnings=notes, seeded=bool(body.get("seed")))


def _fit_size(request: ImageRequest, builder: BodyBuilder, problems: list[Violation]) -> list[str]:
    """gesso's size rule on the width and height placed (from ``size`` or given): SDXL makes only its table's
    sizes (a pair missing a side is left to the schema and _size_rules)."""
    table = allowed_sizes(request.model.id)
    return sizes.fit_body(
        builder, (), problems, snap=request.snap_size,
        refuses=lambda size: None if (size.width, size.height) in table else "",
        near=lambda size: [Size(w, h) for w, h in table],
        what="an SDXL size on Bedrock", allowed=", ".join(f"{w}x{h}" for w, h in table),
    )  # fmt: skip


def _size_rules(request: ImageRequest, body: dict[str, Any], builder: BodyBuilder) -> list[Violation]:
    if "width" not in body and "height" not in body:
        return []
    width, height = body.get("width"), body.get("height")
    sizes = allowed_sizes(request.model.id)
    if (width, height) in sizes:
        return []
    where = "size" if builder.sources.get("width") == "size" else "width/height"
    listing = ", ".join(f"{w}x{h}" for w, h in sizes)
    return [Violation(where, f"{width}x{height} is not an SDXL size on Bedrock; allowed: {listing}")]


def _mask_size(images: family.Images) -> list[Violation]:
    mask, init = images.get("mask_image"), images.get("init_image")
    return inputs.same_size("mask_image", mask[0], "init_image", init[0]) if mask and init else []


def parse(request: ImageRequest, prepared: PreparedRequest, response: RawResponse) -> ParsedResponse:
    """``{"result": "success", "artifacts": [{"seed", "base64", "finishReason"}]}``."""
    model = request.model_name
    artifacts = family.json_answer(request, response).get("artifacts")
    if not isinstance(artifacts, list) or not artifacts:
        raise ProviderError(f"{request.model.name} answered without artifacts", model=model)
    kept, filtered, warnings = [], 0, []
    for artifact in artifacts:
        reason = artifact.get("finishReason")
        if reason == "SUCCESS":
            kept.append(GeneratedImage(b64=artifact["base64"], seed=artifact.get("seed")))
        elif reason == "CONTENT_FILTERED":  # Bedrock returns a blurred image: never hand it back as a success
            filtered += 1
            warnings.append("Stability content filter: an output was withheld (CONTENT_FILTERED)")
        else:
            raise ProviderError(f"{request.model.name} failed to render an image (finishReason {reason})", model=model)
    return ParsedResponse(images=kept, filtered=filtered, warnings=warnings, size=prepared.size if kept else None)


def cost(model: Model, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    """By size class (512x512 or smaller, or larger) and steps (up to 50, or more), per image returned."""
    size = prepared.size or Size(1024, 1024)
    size_class = "512" if size.pixels <= 512 * 512 else "1024"
    steps_class = "50" if prepared.bodies[0].get("steps", DEFAULT_STEPS) <= 50 else "max"
    assert isinstance(model.prices, PriceTable)  # every SDXL model registers its price table
    if size_class not in model.prices.dimensions["size"]:  # SDXL 1.0 has one size class
        size_class = "1024"
    return model.prices.price(size=size_class, steps=steps_class) * len(response.data)
