"""The Stable Image Services (thirteen models, invoked through their ``us.`` inference profiles): each
with its own required and optional fields, image checks and price; one image per call (``n`` fans out,
up to ``max_fanout``)."""

from __future__ import annotations

from gesso import inputs
from gesso.errors import Violation
from gesso.params import raise_for
from gesso.types import ImageRequest, ImageResponse, Model, PreparedRequest
from gesso_bedrock_stability import common
from gesso_bedrock_stability.models import SERVICE_MODELS, service_schema

SEED_MAX = 4294967294


def service_of(model: Model) -> str:
    return SERVICE_MODELS[model.id][0]


def prepare(request: ImageRequest) -> PreparedRequest:
    service = service_of(request.model)
    body_schema = service_schema(service)
    what = f"{request.model.name} ({service})"
    params = common.take_max_fanout(request, what)
    builder, problems, notes = common.place_flat(request, body_schema, what, params)
    body = builder.body
    problems += builder.violations
    images, found = inputs.convert_and_validate(body, body_schema, sources=builder.sources)
    if request.prompt is None and "prompt" in body_schema.get("required", ()) and "prompt" not in body:
        found = [v for v in found if v.path != "prompt"]
        found.append(Violation("prompt", f"is required for {what}"))
    problems += found
    if not problems:
        limits = service if service in ("creative-upscale", "fast-upscale") else "standard"
        problems += common.image_rules(images, limits)
    raise_for(problems, model=request.model_name)
    details = {"requested": request.n or 1, "warnings": notes}
    n = request.n or 1
    bodies = common.fan_out(body, n, seed_max=SEED_MAX) if "seed" in body_schema["properties"] else [body] * n
    return PreparedRequest(bodies=bodies, details=details)


def cost(model: Model, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    return model.prices["image"] * len(response.data)
