"""The compiled fast path must agree with jsonschema on every body: valid ones, and each mutation."""

from __future__ import annotations

import copy
import random

import jsonschema
import pytest

from gesso._fastschema import compile_schema
from gesso_bedrock_nova.models import schema as nova_schema

IMG = "iVBORw0KGgo="
VALID_NOVA = [
    {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat"}},
    {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat", "negativeText": "dog", "style": "PHOTOREALISM",
     "conditionImage": IMG, "controlMode": "CANNY_EDGE", "controlStrength": 0.5},
     "imageGenerationConfig": {"width": 1024, "height": 768, "quality": "premium", "cfgScale": 6.5, "numberOfImages": 2, "seed": 7}},
    {"taskType": "COLOR_GUIDED_GENERATION", "colorGuidedGenerationParams": {"text": "a", "colors": ["#FF0000", "#00ff00"], "referenceImage": IMG}},
    {"taskType": "IMAGE_VARIATION", "imageVariationParams": {"images": [IMG, IMG], "similarityStrength": 0.5, "text": "t"}},
    {"taskType": "INPAINTING", "inPaintingParams": {"image": IMG, "maskPrompt": "the dog", "text": "a cat"}},
    {"taskType": "OUTPAINTING", "outPaintingParams": {"image": IMG, "maskImage": IMG, "text": "t", "outPaintingMode": "PRECISE"},
     "imageGenerationConfig": {"numberOfImages": 1}},
    {"taskType": "BACKGROUND_REMOVAL", "backgroundRemovalParams": {"image": IMG}},
    {"taskType": "VIRTUAL_TRY_ON", "virtualTryOnParams": {"sourceImage": IMG, "referenceImage": IMG, "maskType": "GARMENT",
     "garmentBasedMask": {"garmentClass": "UPPER_BODY", "garmentStyling": {"tuckingStyle": "TUCKED"}},
     "maskExclusions": {"preserveFace": "ON"}, "mergeStyle": "SEAMLESS", "returnMask": True}},
    {"taskType": "VIRTUAL_TRY_ON", "virtualTryOnParams": {"sourceImage": IMG, "referenceImage": IMG, "maskType": "PROMPT",
     "promptBasedMask": {"maskPrompt": "shirt"}}},
]  # fmt: skip
# (no NaN or Infinity: JSON cannot carry them, and gesso reports them before jsonschema runs)
ODD_VALUES = [None, True, False, 0, -1, 1, 1.0, 1.5, 16.0, 320, 320.0, 4096, 4112, 2147483647, 10**20, 1e300, "",
              "x", "x" * 1025, "#FF0000", "#GG0000", "TEXT_IMAGE", "PHOTOREALISM", [], [IMG], ["#FF0000"] * 11, {}, {"a": 1}]  # fmt: skip


def paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from paths(value, (*prefix, index))


def mutations(body):
    for path in list(paths(body)):
        for value in ODD_VALUES:
            copied = copy.deepcopy(body)
            parent = copied
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = value
            yield copied
        copied = copy.deepcopy(body)
        parent = copied
        for part in path[:-1]:
            parent = parent[part]
        if isinstance(parent, dict):
            del parent[path[-1]]
            yield copied
            parent = copied
    for extra in ("stream", "imageGenerationConfig", "backgroundRemovalParams"):
        yield {**copy.deepcopy(body), extra: {}}


def agree(schema, instances):
    fast = compile_schema(schema)
    assert fast is not None, "the schema should be within the compiled subset"
    slow = jsonschema.Draft202012Validator(schema)
    checked = valid = 0
    for instance in instances:
        expected = slow.is_valid(instance)
        assert fast(instance) == expected, instance
        checked += 1
        valid += expected
    return checked, valid


def test_nova_schema_agrees_on_valid_bodies_and_every_mutation():
    schema = nova_schema()
    checked, valid = agree(schema, [m for body in VALID_NOVA for m in [body, *mutations(body)]])
    assert checked > 1500 and 100 < valid < checked, (checked, valid)


def test_nova_schema_agrees_on_random_combinations():
    rng = random.Random(20261126)
    schema = nova_schema()
    instances = []
    for _ in range(3000):
        body = copy.deepcopy(rng.choice(VALID_NOVA))
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(list(paths(body)))
            parent = body
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
        instances.append(body)
    agree(schema, instances)


@pytest.mark.parametrize(
    "schema",
    [
        {"multipleOf": 0.1}, {"multipleOf": 16}, {"type": ["integer", "null"]}, {"exclusiveMinimum": 0, "exclusiveMaximum": 1},
        {"items": {"type": "string", "pattern": "^a"}, "minItems": 1}, {"additionalProperties": {"type": "integer"}, "properties": {"a": {}}},
        {"anyOf": [{"type": "string"}, {"minimum": 3}]}, {"not": {"required": ["a"]}}, {"if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": {"required": ["c"]}},
        {"propertyNames": {"enum": ["a", "b"]}}, {"dependentRequired": {"a": ["b"]}}, True, False,
    ],
)  # fmt: skip
def test_keywords_agree_with_jsonschema(schema):
    agree(
        schema,
        [
            *ODD_VALUES,
            {"a": 1},
            {"a": 1, "b": 2},
            {"b": "x"},
            {"c": None},
            ["a", "ab"],
            ["b"],
            0.3,
            0.30000000000000004,
            3,
        ],
    )


@pytest.mark.parametrize(
    "schema",
    [{"patternProperties": {"^x": {}}}, {"$ref": "http://example.com/s.json"}, {"format": "email"}, {"enum": [1, 2]}],
)
def test_unsupported_schemas_fall_back_to_jsonschema(schema):
    assert compile_schema(schema) is None


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_are_a_clear_error(aws, emulator, value):
    import gesso
    from gesso.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="imageGenerationConfig.cfgScale: must be a finite number"):
        gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", cfgScale=value, **aws)
    assert len(emulator.requests) == 0
