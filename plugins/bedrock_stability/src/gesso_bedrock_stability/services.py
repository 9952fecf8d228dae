"""The Stable Image Services (thirteen models, invoked through their ``us.`` inference profiles): each
with its own required and optional fields, image checks and price; one image per call (``n`` fans out,
up to ``max_fanout``). ``gesso.image_edit`` reaches every service: the model picks it, the edit's image goes
to ``image`` (Style Transfer: ``init_image`` and ``style_image``), its mask (Inpaint, Erase Object) to
``mask`` as white = edit, its prompt to ``prompt`` where the service has one."""

from __future__ import annotations

from typing import Any

from gesso import family
from gesso.errors import Violation
from gesso.types import ImageRequest, ImageResponse, Model, PreparedRequest
from gesso_bedrock_stability import common
from gesso_bedrock_stability.models import SERVICE_MODELS, service_schema

SEED_MAX = 4294967294


#: The services whose output is not the input image's size (upscales enlarge it, outpaint extends it); every
#: other service returns an image the size of its input
RESIZING = frozenset(("creative-upscale", "conservative-upscale", "fast-upscale", "outpaint"))


def service_of(model: Model) -> str:
    return SERVICE_MODELS[model.id][0]


def prepare(request: ImageRequest) -> PreparedRequest:
    service = service_of(request.model)
    body_schema = service_schema(service)
    what = f"{request.model.name} ({service})"
    params = common.take_max_fanout(request, what)
    input_sized = service not in RESIZING and "aspect_ratio" not in body_schema["properties"]
    builder, problems, notes = common.place_flat(request, body_schema, what, params, input_sized=input_sized)
    problems += common.place_edit(request, builder, params, body_schema, what)
    body = builder.body
    limits = service if service in ("creative-upscale", "fast-upscale") else "standard"

    def rules(body: dict[str, Any], images: family.Images) -> list[Violation]:
        same = common.input_size(request, images, what) if input_sized else []
        return same + common.image_rules(images, limits) + common.edit_mask_size(request, images)

    family.check(
        request, body, body_schema, what=what, problems=problems + builder.violations, sources=builder.sources,
        prompt_at="prompt", rules=rules,
    )  # fmt: skip
    n = request.n or 1
    bodies = common.fan_out(body, n, seed_max=SEED_MAX) if "seed" in body_schema["properties"] else [body] * n
    # seeded only by a seed the caller chose: 0 or none means random (AWS's Stability pages)
    return PreparedRequest(bodies=bodies, requested=n, warnings=notes, seeded=bool(body.get("seed")))


def cost(model: Model, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    return model.prices["image"] * len(response.data)
