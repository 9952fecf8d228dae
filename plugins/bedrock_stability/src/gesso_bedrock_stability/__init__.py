"""gesso plugin for Stability AI on Bedrock: SDXL, the v2 generation models (SD3, SD3.5, Ultra, Core)
and the Image Services. The hooks here only delegate, by family, to the modules that do the work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gesso.hookspecs import hookimpl
from gesso_bedrock_stability import common, models, sdxl, services, v2

if TYPE_CHECKING:
    from gesso.types import ImageRequest, ImageResponse, Model, ParsedResponse, PreparedRequest, RawResponse

_BUILDERS = {models.SDXL: sdxl, models.V2: v2, models.SERVICES: services}


@hookimpl
def gesso_register_models() -> list[Model]:
    return models.registrations()


@hookimpl
def gesso_transform_request(request: ImageRequest) -> PreparedRequest | None:
    module = _BUILDERS.get(request.model.family)
    return None if module is None else module.prepare(request)


@hookimpl
def gesso_parse_response(
    request: ImageRequest, prepared: PreparedRequest, response: RawResponse
) -> ParsedResponse | None:
    family = request.model.family
    if family == models.SDXL:
        return sdxl.parse(request, prepared, response)
    if family in (models.V2, models.SERVICES):
        return common.parse_seeded(request, prepared, response)
    return None


@hookimpl
def gesso_calculate_cost(request: ImageRequest, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    module = _BUILDERS.get(request.model.family)
    return None if module is None else module.cost(request.model, prepared, response)
