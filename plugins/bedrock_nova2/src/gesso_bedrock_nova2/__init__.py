"""gesso plugin for Amazon Nova 2 Omni on Bedrock: image generation and editing through the Converse API. The hooks
here only delegate to the modules that build requests, read answers, price calls and emulate the model. (gesso
imports this module only when it first needs its plugins, never at ``import gesso``.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gesso.hookspecs import hookimpl
from gesso_bedrock_nova2 import models, pricing
from gesso_bedrock_nova2 import request as build
from gesso_bedrock_nova2 import response as answer

if TYPE_CHECKING:
    from gesso.types import ImageRequest, ImageResponse, Model, ParsedResponse, PreparedRequest, RawResponse


@hookimpl
def gesso_register_models() -> list[Model]:
    return models.registrations()


@hookimpl
def gesso_transform_request(request: ImageRequest) -> PreparedRequest | None:
    return build.prepare(request)


@hookimpl
def gesso_parse_response(
    request: ImageRequest, prepared: PreparedRequest, response: RawResponse
) -> ParsedResponse | None:
    return answer.parse(request, response)


@hookimpl
def gesso_calculate_cost(request: ImageRequest, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    return pricing.cost(request.model, response)
