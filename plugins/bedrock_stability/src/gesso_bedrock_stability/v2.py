"""SD3 Large, SD3.5 Large, Stable Image Ultra and Core: flat bodies, ``size`` mapped to the nearest of
nine aspect ratios, one image per call (``n`` fans out with distinct seeds, up to ``max_fanout``),
image-to-image on SD3/SD3.5 (``mode`` image-to-image, or an ``image`` with no mode, as AWS's example sends
it; the body goes as given, nothing added) and on Ultra (``image`` and optional ``strength``, no mode)."""

from __future__ import annotations

from gesso import inputs
from gesso.params import raise_for
from gesso.types import ImageRequest, ImageResponse, Model, PreparedRequest
from gesso_bedrock_stability import common
from gesso_bedrock_stability.models import V2_MODELS, schema


def prepare(request: ImageRequest) -> PreparedRequest:
    body_schema = schema(V2_MODELS[request.model.id][1])
    params = common.take_max_fanout(request, request.model.name)
    builder, problems, notes = common.place_flat(request, body_schema, request.model.name, params)
    body = builder.body
    problems += builder.violations
    images, found = inputs.convert_and_validate(body, body_schema, sources=builder.sources)
    if request.prompt is None and "prompt" not in body:  # name what the caller left out
        found = [
            v if v.path != "prompt" else v.__class__("prompt", f"is required for {request.model.name}") for v in found
        ]
    problems += found
    if not problems:
        problems += common.image_rules(images, "sd3")
    raise_for(problems, model=request.model_name)
    seed_max = body_schema["properties"]["seed"]["maximum"]
    details = {"requested": request.n or 1, "warnings": notes}
    return PreparedRequest(bodies=common.fan_out(body, request.n or 1, seed_max=seed_max), details=details)


def cost(model: Model, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    return model.prices["image"] * len(response.data)
