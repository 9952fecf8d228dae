"""SD3 Large, SD3.5 Large, Stable Image Ultra and Core: flat bodies, ``size`` mapped to the nearest of
nine aspect ratios, one image per call (``n`` fans out with distinct seeds, up to ``max_fanout``),
image-to-image on SD3/SD3.5 (``mode`` image-to-image, or an ``image`` with no mode, as AWS's example sends
it; the body goes as given, nothing added) and on Ultra (``image`` and optional ``strength``, no mode).
``gesso.image_edit`` on those is that image-to-image: the edit's image is ``image`` (no mask, no mode added;
SD3/SD3.5 still need ``strength``)."""

from __future__ import annotations

from gesso import family
from gesso.errors import InvalidRequestError, Violation
from gesso.types import ImageRequest, ImageResponse, Model, PreparedRequest
from gesso_bedrock_stability import common
from gesso_bedrock_stability.models import V2_MODELS, schema

#: What a missing required field takes (the schema says only "is required").
REQUIRED = {
    "strength": "is required for image-to-image (an image, or an image edit): a number from 0 to 1, how far the "
    "output may depart from the image (0 keeps it); Bedrock has no default for it here",
}


def prepare(request: ImageRequest) -> PreparedRequest:
    body_schema = schema(V2_MODELS[request.model.id][1])
    params = common.take_max_fanout(request, request.model.name)
    builder, problems, notes = common.place_flat(request, body_schema, request.model.name, params)
    problems += common.place_edit(request, builder, params, body_schema, request.model.name)
    body = builder.body
    try:
        family.check(
            request, body, body_schema, what=request.model.name, problems=problems + builder.violations,
            sources=builder.sources, prompt_at="prompt", rules=lambda body, images: common.image_rules(images, "sd3"),
        )  # fmt: skip
    except InvalidRequestError as exc:
        missing = [v for v in exc.violations if v.message == "is required" and v.path in REQUIRED]
        if not missing:
            raise
        explained = [Violation(v.path, REQUIRED[v.path]) if v in missing else v for v in exc.violations]
        raise InvalidRequestError(explained, model=request.model_name) from exc
    seed_max = body_schema["properties"]["seed"]["maximum"]
    n = request.n or 1
    bodies = common.fan_out(body, n, seed_max=seed_max)
    # seeded only by a seed the caller chose: 0 or none means random (AWS's Stability pages)
    return PreparedRequest(bodies=bodies, requested=n, warnings=notes, seeded=bool(body.get("seed")))


def cost(model: Model, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    return model.prices["image"] * len(response.data)
