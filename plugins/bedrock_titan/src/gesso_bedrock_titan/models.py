"""The Titan Image Generator registrations: v1 and v2, ids, prices, capabilities, lifecycle, schemas."""

from __future__ import annotations

import copy
import functools
from typing import Any

from gesso.params import load_schema
from gesso.types import Lifecycle, Model, PriceTable

FAMILY = "amazon.titan-image-generator"
V1 = "amazon.titan-image-generator-v1"
V2 = "amazon.titan-image-generator-v2:0"

#: Tasks and TEXT_IMAGE fields only v2 offers.
V2_ONLY_TASKS = ("COLOR_GUIDED_GENERATION", "BACKGROUND_REMOVAL")
V2_ONLY_FIELDS = {"textToImageParams": ("conditionImage", "controlMode", "controlStrength")}

#: USD per image returned, by quality and price class of the size (bedrock_wire.md section 8).
PRICES = PriceTable(
    {"quality": ("standard", "premium"), "class": ("512", "1024")},
    {"standard_512": 0.008, "premium_512": 0.010, "standard_1024": 0.010, "premium_1024": 0.012},
)


@functools.cache
def schema_v2() -> dict[str, Any]:
    return load_schema(__package__, "schemas/titan_v2.json")


@functools.cache
def schema_v1() -> dict[str, Any]:
    """The v2 schema without what only v2 offers."""
    schema = copy.deepcopy(schema_v2())
    schema["title"] = f"Amazon Titan Image Generator v1 ({V1}) InvokeModel request body"
    tasks = schema["properties"]["taskType"]["enum"]
    schema["properties"]["taskType"]["enum"] = [t for t in tasks if t not in V2_ONLY_TASKS]
    for obj in ("colorGuidedGenerationParams", "backgroundRemovalParams"):
        del schema["properties"][obj]
        del schema["$defs"][obj]
    schema["allOf"] = [
        rule for rule in schema["allOf"] if rule["if"]["properties"]["taskType"]["const"] not in V2_ONLY_TASKS
    ]
    for obj, fields in V2_ONLY_FIELDS.items():
        node = schema["$defs"][obj]
        for field in fields:
            del node["properties"][field]
        node.pop("dependentRequired", None)
    return schema


def _emulate(call: Any) -> Any:
    from gesso_bedrock_titan import emulation

    return emulation.emulate(call)


#: v1 and v2 both inpaint, outpaint and vary images (AWS's Titan parameters page), so both take
#: gesso.image_edit (with or without a mask) and gesso.image_variation
CAPABILITIES_V1 = {"text_to_image", "inpainting", "outpainting", "image_variation", "edit", "edit_mask", "variation"}


def registrations() -> list[Model]:
    titan = functools.partial(
        Model, family=FAMILY, routing_prefixes=("us.", "eu.", "apac."), prices=PRICES, emulator=_emulate
    )
    return [
        titan(
            id=V1,
            name="Amazon Titan Image Generator v1",
            param_schema=schema_v1(),
            capabilities=CAPABILITIES_V1,
            lifecycle=Lifecycle(status="legacy", source="AWS documentation describes v1 with v2; no date is published"),
        ),
        titan(
            id=V2,
            name="Amazon Titan Image Generator v2",
            param_schema=schema_v2(),
            capabilities={*CAPABILITIES_V1, "color_guided_generation", "background_removal", "image_conditioning"},
            lifecycle=Lifecycle(status="legacy", end_of_life="2026-06-30", source="the v2 model card"),
        ),
    ]
