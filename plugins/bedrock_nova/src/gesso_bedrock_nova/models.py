"""The Nova Canvas registration: ids, prices, capabilities, lifecycle, schema and emulator."""

from __future__ import annotations

import functools
from typing import Any

from gesso.params import load_schema
from gesso.types import Lifecycle, Model, PriceTable

FAMILY = "amazon.nova-canvas"
MODEL_ID = "amazon.nova-canvas-v1:0"

#: USD per image returned, by quality and resolution tier (AWS on-demand list prices, US Regions, from
#: https://aws.amazon.com/bedrock/pricing/). "1024" covers outputs up to 1024x1024 pixels, "2048" larger.
PRICES = PriceTable(
    {"quality": ("standard", "premium"), "tier": ("1024", "2048")},
    {"standard_1024": 0.04, "premium_1024": 0.06, "standard_2048": 0.06, "premium_2048": 0.08},
)


@functools.cache
def schema() -> dict[str, Any]:
    return load_schema(__package__, "schemas/nova_canvas.json")


def _emulate(call: Any) -> Any:
    from gesso_bedrock_nova import emulation

    return emulation.emulate(call)


def registrations() -> list[Model]:
    return [
        Model(
            id=MODEL_ID,
            family=FAMILY,
            name="Amazon Nova Canvas",
            routing_prefixes=("us.", "eu.", "apac."),
            param_schema=schema(),
            prices=PRICES,
            capabilities={
                "text_to_image",
                "color_guided_generation",
                "image_variation",
                "inpainting",
                "outpainting",
                "background_removal",
                "virtual_try_on",
                # gesso.image_edit (with or without a mask) and gesso.image_variation: request.py maps them
                "edit",
                "edit_mask",
                "variation",
            },
            lifecycle=Lifecycle(status="legacy", end_of_life="2026-09-30", source="AWS model lifecycle page"),
            emulator=_emulate,
        )
    ]
