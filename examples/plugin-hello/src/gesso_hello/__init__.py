"""Hello Stripes: an imaginary Bedrock model, one image per call, priced by size.

The whole plugin: a registration (id, request-body JSON Schema, prices, capabilities, an emulation for the
offline emulator) and the four stage hooks gesso routes to it: build the body, parse the answer, price it."""

import json

from gesso.errors import ProviderError, Violation
from gesso.hookspecs import hookimpl
from gesso.params import BodyBuilder, raise_for, schema_violations
from gesso.types import GeneratedImage, Model, ParsedResponse, PreparedRequest

FAMILY = "hello.stripes"
MAX_IMAGES = 3  # one image per call: n becomes n calls, at most this many
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 200},
        "stripes": {"type": "integer", "minimum": 1, "maximum": 32},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2147483647},
        "width": {"enum": [256, 512]},
        "height": {"enum": [256, 512]},
    },
}


def emulate(call):
    """The model's answer on gesso's Bedrock emulator (gesso generate --emulator, the contract tests)."""
    call.validate()
    body = call.body
    width, height = body.get("width", 256), body.get("height", 256)
    return {"image": call.image(width, height, body["text"], body.get("stripes", 8), body.get("seed"))}


@hookimpl
def gesso_register_models():
    return [
        Model(
            id="hello.stripes-v1",
            family=FAMILY,
            name="Hello Stripes v1",
            routing_prefixes=("us.",),
            param_schema=SCHEMA,
            prices={"small": 0.001, "large": 0.002},  # USD per image: up to 256x256, larger
            capabilities={"text_to_image"},
            emulator=emulate,
            example=True,  # imaginary: never suggested in place of a retired model (a real one leaves this out)
        )
    ]


@hookimpl
def gesso_transform_request(request):
    body = BodyBuilder()
    body.set(("text",), request.prompt, "prompt")
    for key, value in request.params.items():  # provider parameters: stripes, seed, width, height
        body.set((key,), value, key)
    if request.size is not None:
        body.set(("width",), request.size.width, "size")
        body.set(("height",), request.size.height, "size")
    problems = [*body.violations, *schema_violations(SCHEMA, body.body, sources=body.sources)]
    if request.quality not in (None, "auto", "standard"):
        problems.append(Violation("quality", f"must be standard or auto: one quality only (got {request.quality!r})"))
    n = request.n or 1
    if n > MAX_IMAGES:
        problems.append(Violation("n", f"must be at most {MAX_IMAGES} (got {n})"))
    raise_for(problems, model=request.model_name)
    return PreparedRequest(bodies=[body.body] * n)


@hookimpl
def gesso_parse_response(request, prepared, response):
    image = json.loads(response.body).get("image")
    if not image:
        raise ProviderError("the answer holds no image", model=request.model_name)
    return ParsedResponse(images=[GeneratedImage(b64=image)])


@hookimpl
def gesso_calculate_cost(request, prepared, response):
    body = prepared.bodies[0]
    large = body.get("width", 256) > 256 or body.get("height", 256) > 256
    return request.model.prices["large" if large else "small"] * len(response.data)
