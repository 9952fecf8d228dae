"""gesso plugin for Amazon Titan Image Generator v1 and v2 on Bedrock. The hooks here only delegate to
the modules that build requests, price calls and emulate the models (responses share Nova's shape and
parser, :func:`gesso_bedrock.taskbody.parse_response`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gesso.hookspecs import hookimpl
from gesso_bedrock import taskbody
from gesso_bedrock_titan import models, pricing
from gesso_bedrock_titan import request as build

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
    return taskbody.parse_response(request, prepared, response)


@hookimpl
def gesso_calculate_cost(request: ImageRequest, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    return pricing.cost(request.model, prepared, response)
